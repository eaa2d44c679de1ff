"""TFDS builder `tss`: the TSS dense-flow benchmark (Taniai et al., CVPR'16).

TSS ("Joint recovery of dense correspondence and cosegmentation in two
images", http://taniai.space/projects/cvpr16_dccs/) has 400 image pairs in
three groups, FG3DCar, JODS and PASCAL. The archive `TSS_CVPR2016.zip`
unpacks to `TSS_CVPR2016/<group>/<pair>/` (e.g. `FG3DCar/001_005`,
`JODS/car_01_02`, `PASCAL/bike_01_03`) holding

  image1.png, image2.png   the two images (any sizes)
  flow1.flo                ground truth from image1 to image2, on image1's
                           grid: image2 pixel = image1 pixel + flow1
  flow2.flo                the same from image2 to image1 (Middlebury .flo;
                           1e10 = unknown, i.e. outside the foreground)
  mask1.png, mask2.png     foreground masks ('L' 0/255, or palette 0/1)
  flip_gt.txt              1 when the two objects face opposite ways (the
                           ground truth then pairs mirrored parts), else 0
  pair.txt, corr.txt       source file names, sparse points (not read)

(TSS_CVPR2016_EvaluationKit's readme and sample data.) The test list is
weakalign's `test_pairs_tss.csv` (also used by DCCNet): a header line, then
one row per flow, read by POSITION as the references do (`iloc`):
`source, target, flow_direction, flip_img_A, pair_category`. The paths are
relative to the dataset folder; we accept them with or without a leading
`TSS_CVPR2016/` (we locate them from their group folder). A row asks to
align `source` (image A) to `target` (image B); its ground truth is
`flow<flow_direction>.flo` of the pair, which lies on B's grid (the target
is `image<flow_direction>.png`; checked) and points into A. `flip_img_A`:
weakalign/DCCNet flip image A left-right before matching it
(`np.flip(image, 1)`); see `semcorr_jax.evaluation.tss.prepare_example`.

Records (split `test`, one per CSV row, in file order):

  pair_id        Text   '<group>/<pair>_<d>to<o>' as the kit's rows, e.g.
                        'FG3DCar/001_005_2to1' for flow2 (target image2)
  source_image   Image  image A, original PNG bytes
  target_image   Image  image B
  source_file    Text   '<group>/<pair>/image<o>.png'
  target_file    Text   '<group>/<pair>/image<d>.png'
  group          ClassLabel FG3DCar, JODS, PASCAL (from the path)
  flow           (H_t, W_t, 2) float32 ground truth on the TARGET's grid:
                 source pixel = target pixel + flow (x first; a
                 displacement, so the 0/1-based pixel origin cancels);
                 0 where unknown
  flow_valid     (H_t, W_t) bool  known vectors (= target foreground)
  source_mask    Image (H_s, W_s, 1) PNG in {0, 1}
  target_mask    Image (H_t, W_t, 1) PNG in {0, 1}
  flip           bool  the CSV's flip_img_A (image A is mirrored before
                 matching in the reference protocol; the ground truth is
                 NOT mirrored, it is stored as the kit has it)

Nothing is resized. The CSV's `pair_category` is not read: the group comes
from the path (the number's meaning is [unverified]).
"""

from __future__ import annotations

import csv
import io
import posixpath
import re

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data.benchmarks import common
from semcorr_jax.data import flow_io

GROUPS = ('FG3DCar', 'JODS', 'PASCAL')
HOMEPAGE = 'http://taniai.space/projects/cvpr16_dccs/'
ZIP_NAME = 'TSS_CVPR2016.zip'
DATA_URL = ('http://www.hci.iis.u-tokyo.ac.jp/datasets/data/JointCorrCoseg/'
            f'{ZIP_NAME}')
CSV_NAME = 'test_pairs_tss.csv'
CSV_URL = ('http://www.di.ens.fr/willow/research/cnngeometric/'
           f'other_resources/{CSV_NAME}')
# Where the group folders may sit under the manual dir.
ROOT_CANDIDATES = ('', 'TSS_CVPR2016', 'tss', 'tss/TSS_CVPR2016')
_NAME = 'TSS'
_IMAGE_RE = re.compile(r'^image([12])\.png$')

_CITATION = """\
@InProceedings{Taniai2016,
  author = {Tatsunori Taniai and Sudipta N. Sinha and Yoichi Sato},
  title = {{Joint Recovery of Dense Correspondence and Cosegmentation in Two Images}},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages = {4246--4255},
  year = {2016}}
"""


def fetch_hint() -> str:
  return (f'download {DATA_URL} (dataset page {HOMEPAGE}), extract it in the '
          f'manual dir (TSS_CVPR2016/FG3DCar, JODS, PASCAL) and put '
          f'{CSV_URL} beside it')


def find_tss(manual_dir: epath.PathLike) -> tuple[epath.Path, epath.Path]:
  """(root holding the group folders, the CSV) under `manual_dir`.

  Accepted: `manual_dir/{TSS_CVPR2016/,tss/,tss/TSS_CVPR2016/,}` holding
  FG3DCar/JODS/PASCAL; the CSV in `manual_dir`, the root or `manual_dir/tss`.

  Raises:
    SemcorrError: naming what is missing and where to get it.
  """
  manual_dir = epath.Path(manual_dir)
  if not manual_dir.is_dir():
    raise errors.SemcorrError(
        f'{_NAME}: manual dir {manual_dir} does not exist; {fetch_hint()}.')
  roots = [manual_dir / c if c else manual_dir for c in ROOT_CANDIDATES]
  root = next((r for r in roots if any((r / g).is_dir() for g in GROUPS)),
              None)
  if root is None:
    extra = ''
    if (manual_dir / ZIP_NAME).exists():
      extra = f' ({ZIP_NAME} is there but not extracted: unzip it in place)'
    raise errors.SemcorrError(
        f'{_NAME}: no {"/".join(GROUPS)} folder under '
        f'{", ".join(str(r) for r in roots)}{extra}; {fetch_hint()}.')
  csvs = [manual_dir / CSV_NAME, root / CSV_NAME, manual_dir / 'tss' / CSV_NAME]
  csv_path = next((p for p in csvs if p.exists()), None)
  if csv_path is None:
    raise errors.SemcorrError(
        f'{_NAME}: {CSV_NAME} is missing (looked in '
        f'{", ".join(str(p) for p in csvs)}); download {CSV_URL} into '
        f'{manual_dir}.')
  return root, csv_path


def read_rows(csv_path: epath.Path) -> list[tuple[str, str, int, bool]]:
  """(source, target, flow_direction, flip) per data row of the CSV.

  The first line is the header (as pandas reads it); columns are taken by
  position.

  Raises:
    SemcorrError: fewer than 5 columns, or a non-integer direction/flip.
  """
  lines = list(csv.reader(io.StringIO(csv_path.read_text())))
  header, body = (lines[0] if lines else []), lines[1:]
  rows = []
  for number, line in enumerate(body, start=2):
    if not any(cell.strip() for cell in line):
      continue
    if len(line) < 5:
      raise errors.SemcorrError(
          f'{_NAME}: {csv_path} line {number} has {len(line)} columns; '
          'expected 5 (source, target, flow_direction, flip_img_A, '
          f'pair_category; header {",".join(header)!r}); is it {CSV_URL}?')
    source, target, direction, flip = (c.strip() for c in line[:4])
    try:
      direction, flip = int(float(direction)), int(float(flip))
    except ValueError:
      raise errors.SemcorrError(
          f'{_NAME}: {csv_path} line {number}: flow_direction {line[2]!r} '
          f'and flip_img_A {line[3]!r} must be integers') from None
    if direction not in (1, 2):
      raise errors.SemcorrError(
          f'{_NAME}: {csv_path} line {number}: flow_direction {direction} '
          'is not 1 or 2')
    rows.append((source, target, direction, bool(flip)))
  if not rows:
    raise errors.SemcorrError(f'{_NAME}: {csv_path} lists no pairs')
  return rows


def relative_path(entry: str, csv_path: epath.Path) -> str:
  """'<group>/<pair>/<file>' from a CSV path (any prefix before the group)."""
  parts = entry.replace('\\', '/').split('/')
  parts = [p for p in parts if p not in ('', '.')]
  starts = [i for i, part in enumerate(parts) if part in GROUPS]
  if not starts or len(parts) - starts[0] != 3:
    raise errors.SemcorrError(
        f'{_NAME}: {csv_path}: {entry!r} is not a path like '
        '[TSS_CVPR2016/]<FG3DCar|JODS|PASCAL>/<pair>/image<1|2>.png')
  return '/'.join(parts[starts[0]:])


def read_mask(path: epath.Path) -> np.ndarray:
  """(H, W) uint8 {0, 1}: nonzero pixels (palette indices for 'P' PNGs)."""
  with Image.open(io.BytesIO(common.require(path, _NAME, fetch_hint())
                             .read_bytes())) as image:
    mask = np.asarray(image)
  if mask.ndim == 3:
    mask = mask[..., :3].max(axis=-1)
  return (mask > 0).astype(np.uint8)


def _image_hw(data: bytes) -> tuple[int, int]:
  with Image.open(io.BytesIO(data)) as image:
    return image.size[1], image.size[0]


def _png(mask: np.ndarray) -> bytes:
  """PNG bytes of an (H, W) uint8 mask (stored as the (H, W, 1) feature)."""
  buffer = io.BytesIO()
  Image.fromarray(mask).save(buffer, format='PNG')
  return buffer.getvalue()


def make_example(root: epath.Path, csv_path: epath.Path, source: str,
                 target: str, direction: int, flip: bool
                 ) -> tuple[str, dict]:
  """(pair_id, record) of one CSV row (module docstring).

  Raises:
    SemcorrError: a missing file, a row that is not image1/image2 of one
      folder, a target that is not image<flow_direction>, or sizes that do
      not match.
  """
  src_rel = relative_path(source, csv_path)
  tgt_rel = relative_path(target, csv_path)
  folder, tgt_name = posixpath.split(tgt_rel)
  src_folder, src_name = posixpath.split(src_rel)
  if folder != src_folder:
    raise errors.SemcorrError(
        f'{_NAME}: {csv_path}: {source!r} and {target!r} are not one pair')
  hint = fetch_hint()
  for name in (src_name, tgt_name):
    if not _IMAGE_RE.match(name) or src_name == tgt_name:
      raise errors.SemcorrError(
          f'{_NAME}: {csv_path}: {source!r} -> {target!r}; a row pairs '
          'image1.png with image2.png of one pair folder')
  if int(_IMAGE_RE.match(tgt_name).group(1)) != direction:
    raise errors.SemcorrError(
        f'{_NAME}: {csv_path}: target {target!r} with flow_direction '
        f'{direction}; the ground truth flow{direction}.flo lies on '
        f'image{direction}.png, so the target must be that image')
  src_bytes = common.require(root / src_rel, _NAME, hint).read_bytes()
  tgt_bytes = common.require(root / tgt_rel, _NAME, hint).read_bytes()
  flow_path = common.require(root / folder / f'flow{direction}.flo', _NAME,
                             hint)
  flow = flow_io.read_flo(flow_path)
  tgt_hw, src_hw = _image_hw(tgt_bytes), _image_hw(src_bytes)
  if flow.shape[:2] != tgt_hw:
    raise errors.SemcorrError(
        f'{_NAME}: {flow_path} is {flow.shape[1]}x{flow.shape[0]} but the '
        f'target {tgt_rel} is {tgt_hw[1]}x{tgt_hw[0]}; files do not match')
  masks = []
  for name, hw in ((src_name, src_hw), (tgt_name, tgt_hw)):
    mask_name = 'mask' + name[len('image'):]
    mask = read_mask(root / folder / mask_name)
    if mask.shape != hw:
      raise errors.SemcorrError(
          f'{_NAME}: {folder}/{mask_name} is {mask.shape[1]}x'
          f'{mask.shape[0]} but its image is {hw[1]}x{hw[0]}')
    masks.append(mask)
  valid = flow_io.valid_flow(flow)
  other = 3 - direction
  pair_id = f'{folder}_{direction}to{other}'
  return pair_id, {
      'pair_id': pair_id,
      'source_image': src_bytes,
      'target_image': tgt_bytes,
      'source_file': src_rel,
      'target_file': tgt_rel,
      'group': tgt_rel.split('/')[0],
      'flow': np.where(valid[..., None], flow, 0.0).astype(np.float32),
      'flow_valid': valid,
      'source_mask': _png(masks[0]),
      'target_mask': _png(masks[1]),
      'flip': flip,
  }


class Tss(tfds.core.GeneratorBasedBuilder):
  """TSS image pairs with ground-truth flows and foreground masks."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Download {DATA_URL} (see {HOMEPAGE}) and extract it in the manual dir
  (giving TSS_CVPR2016/FG3DCar, JODS, PASCAL), and download {CSV_URL}
  into the manual dir.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    zlib = tfds.features.Encoding.ZLIB
    return tfds.core.DatasetInfo(
        builder=self,
        description=('TSS (Taniai et al. CVPR 2016): one record per row of '
                     f'weakalign\'s {CSV_NAME}; ground-truth flow on the '
                     'target grid pointing into the source, foreground '
                     'masks, original images.'),
        features=tfds.features.FeaturesDict({
            'pair_id': tfds.features.Text(),
            'source_image': tfds.features.Image(),
            'target_image': tfds.features.Image(),
            'source_file': tfds.features.Text(),
            'target_file': tfds.features.Text(),
            'group': tfds.features.ClassLabel(names=list(GROUPS)),
            'flow': tfds.features.Tensor(shape=(None, None, 2),
                                         dtype=np.float32, encoding=zlib),
            'flow_valid': tfds.features.Tensor(shape=(None, None),
                                               dtype=np.bool_, encoding=zlib),
            'source_mask': tfds.features.Image(shape=(None, None, 1),
                                               encoding_format='png'),
            'target_mask': tfds.features.Image(shape=(None, None, 1),
                                               encoding_format='png'),
            'flip': np.bool_,
        }),
        homepage=HOMEPAGE,
        citation=_CITATION,
        disable_shuffling=True,  # Records keep the CSV's order.
    )

  def _split_generators(self, dl_manager):
    manual_dir = common.manual_dir_of(dl_manager, _NAME, fetch_hint())
    root, csv_path = find_tss(manual_dir)
    rows = read_rows(csv_path)
    return {'test': self._generate_examples(root, csv_path, rows)}

  def _generate_examples(self, root, csv_path, rows):
    seen = {}
    for index, (source, target, direction, flip) in enumerate(rows):
      pair_id, record = make_example(root, csv_path, source, target,
                                     direction, flip)
      seen[pair_id] = seen.get(pair_id, 0) + 1
      if seen[pair_id] > 1:  # A repeated row: keep pair ids unique.
        record['pair_id'] = f'{pair_id}#{seen[pair_id]}'
      yield f'{index:05d}', record
