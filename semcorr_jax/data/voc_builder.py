"""TFDS builder: PASCAL VOC 2012 segmentation images, binary foreground masks.

TFDS's own `voc/2012` has no segmentation masks, so this builder reads the
official `VOCtrainval_11-May-2012.tar` (or its extracted `VOCdevkit/VOC2012/`
tree) from the manual dir:

* splits `train` (1,464 images), `val` (1,449) and `trainval` (2,913) from
  `ImageSets/Segmentation/{train,val}.txt`, in the order of those lists;
* `image`: the original JPEG bytes, unchanged;
* `mask`: uint8 `(H, W, 1)` PNG in {0, 1}, 1 where `SegmentationClass/<id>.png`
  holds an object label 1..20; the void label 255 follows `void_as` (below);
* `file_name` (`'2007_000032.jpg'`), `labels` (sorted classes present) and
  `num_objects` (instances in `SegmentationObject/<id>.png`, -1 if absent).

Void pixels (label 255): VOC draws a ~5 px void band along every object
outline and paints whole objects it calls difficult or ambiguous void. The
true silhouette edge lies inside the band, and void-painted objects are still
objects, so the default config `void_foreground` counts void as foreground (a
mask slightly dilated around each object). `void_background` keeps only the
labelled interiors (a slightly eroded mask).

Label PNGs are palette ('P') images: they are read as palette indices with
PIL. `tf.io.decode_png` would expand the palette to RGB colours instead.

Training prepares it on first use (`semcorr_jax.data.voc.scene_source`), or
beforehand with `python -m semcorr_jax.data.voc --data_dir=D --manual_dir=M`.
(`tfds build` needs apache_beam in TFDS 4.9.10, so it is not the way here.)
No PF-PASCAL exclusion happens here: the splits mirror the official lists, and
`semcorr_jax.data.voc` applies exclusions when it loads.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from semcorr_jax import errors

VOC_CLASSES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
    'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
VOID_LABEL = 255
TAR_NAME = 'VOCtrainval_11-May-2012.tar'
TAR_URL = f'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/{TAR_NAME}'
# Where the split lists sit inside the VOC2012 folder; it also marks the root.
_SET_DIR = 'ImageSets/Segmentation'

_CITATION = """\
@misc{pascal-voc-2012,
  author = "Everingham, M. and Van~Gool, L. and Williams, C. K. I. and Winn, J. and Zisserman, A.",
  title = "The {PASCAL} {V}isual {O}bject {C}lasses {C}hallenge 2012 {(VOC2012)} {R}esults",
  howpublished = "http://www.pascal-network.org/challenges/VOC/voc2012/workshop/index.html"}
"""


def _fetch_hint() -> str:
  return (f'download {TAR_URL} (1.9 GB) and put {TAR_NAME} (or its extracted '
          'VOCdevkit/ folder) in the manual dir')


@dataclasses.dataclass(eq=False)
class Voc2012SegmentationConfig(tfds.core.BuilderConfig):
  """Config: `void_as` is 'foreground' or 'background' (module docstring)."""

  void_as: str = 'foreground'


class VocFiles:
  """Reads files under `VOC2012/`, from a folder or straight from the tar."""

  def __init__(self, where: epath.Path, root: epath.Path | None = None,
               tar_prefix: str | None = None):
    self.where = where  # The folder or the tar, for messages.
    self._root = root
    self._tar_prefix = tar_prefix
    self._file = None
    self._tar = None
    self._members = None

  def copy(self) -> VocFiles:
    """A reader of the same files with its own (lazily opened) handle."""
    return VocFiles(self.where, self._root, self._tar_prefix)

  def _open_tar(self):
    if self._tar is None:
      self._file = self.where.open('rb')
      self._tar = tarfile.open(fileobj=self._file)
      self._members = {
          _strip_dot(m.name): m for m in self._tar.getmembers() if m.isfile()}
    return self._tar

  def read(self, relpath: str) -> bytes | None:
    """Returns the file's bytes, or None if it does not exist."""
    if self._root is not None:
      path = self._root / relpath
      return path.read_bytes() if path.exists() else None
    tar = self._open_tar()
    member = self._members.get(self._tar_prefix + relpath)
    return tar.extractfile(member).read() if member is not None else None

  def require(self, relpath: str) -> bytes:
    data = self.read(relpath)
    if data is None:
      raise errors.SemcorrError(
          f'VOC 2012: {relpath} is missing from {self.where} (incomplete '
          f'download?); {_fetch_hint()}.')
    return data

  def close(self):
    if self._tar is not None:
      self._tar.close()
      self._file.close()
      self._tar = self._file = None


def _strip_dot(name: str) -> str:
  return name[2:] if name.startswith('./') else name


def manual_folder(path: epath.PathLike) -> epath.Path:
  """The manual dir for `path`: a folder, or the folder of the official tar."""
  path = epath.Path(path)
  if path.is_file():
    if path.name != TAR_NAME:
      raise errors.SemcorrError(
          f'VOC 2012: {path} is a file but not {TAR_NAME}; rename it to that, '
          'or give the folder that holds the tar or VOCdevkit/.')
    return path.parent
  return path


def find_voc(manual_dir: epath.PathLike) -> VocFiles:
  """Finds the VOC 2012 files in `manual_dir`: an extracted tree, else the tar.

  Accepted layouts: `manual_dir/VOCdevkit/VOC2012/`, `manual_dir/VOC2012/`,
  `manual_dir` itself being `VOC2012/`, or the tar
  `manual_dir/VOCtrainval_11-May-2012.tar` (read in place, not extracted).
  `manual_dir` may also be the path of that tar itself.

  Raises:
    SemcorrError: naming what is missing and how to get it.
  """
  manual_dir = manual_folder(manual_dir)
  if not manual_dir.is_dir():
    raise errors.SemcorrError(
        f'VOC 2012 manual dir {manual_dir} does not exist; {_fetch_hint()}.')
  for root in (manual_dir / 'VOCdevkit' / 'VOC2012', manual_dir / 'VOC2012',
               manual_dir):
    if (root / _SET_DIR / 'train.txt').exists():
      return VocFiles(root, root=root)
  tar_path = manual_dir / TAR_NAME
  if tar_path.exists():
    with tar_path.open('rb') as f, tarfile.open(fileobj=f) as tar:
      names = [_strip_dot(m.name) for m in tar.getmembers()]
    suffix = f'{_SET_DIR}/train.txt'
    prefixes = [n[:-len(suffix)] for n in names if n.endswith(suffix)]
    if not prefixes:
      raise errors.SemcorrError(
          f'VOC 2012: {tar_path} holds no {_SET_DIR}/train.txt; it is not the '
          f'segmentation trainval tar; {_fetch_hint()}.')
    return VocFiles(tar_path, tar_prefix=prefixes[0])
  raise errors.SemcorrError(
      f'VOC 2012: neither {TAR_NAME} nor an extracted VOCdevkit/VOC2012/ '
      f'(with {_SET_DIR}/train.txt) is in {manual_dir}; {_fetch_hint()}.')


def read_label_png(data: bytes, what: str) -> np.ndarray:
  """Palette indices `(H, W)` uint8 of a VOC label PNG (mode 'P' or 'L')."""
  with Image.open(io.BytesIO(data)) as image:
    if image.mode not in ('P', 'L'):
      raise errors.SemcorrError(
          f'VOC 2012: {what} is a {image.mode!r} PNG; expected the official '
          "palette ('P') label image (indices 0..20 and 255).")
    return np.asarray(image, dtype=np.uint8)


def binary_mask(labels: np.ndarray, void_as: str) -> np.ndarray:
  """Foreground `(H, W)` uint8 {0, 1} from class indices (module docstring)."""
  mask = (labels >= 1) & (labels <= len(VOC_CLASSES))
  if void_as == 'foreground':
    mask |= labels == VOID_LABEL
  elif void_as != 'background':
    raise errors.SemcorrError(
        f"void_as={void_as!r}; use 'foreground' or 'background'.")
  return mask.astype(np.uint8)


def _encode_png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


class Voc2012Segmentation(tfds.core.GeneratorBasedBuilder):
  """PASCAL VOC 2012 segmentation images with binary foreground masks."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      Voc2012SegmentationConfig(
          name='void_foreground', void_as='foreground',
          description='Void (255) pixels count as foreground.'),
      Voc2012SegmentationConfig(
          name='void_background', void_as='background',
          description='Void (255) pixels count as background.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'void_foreground'
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Download {TAR_URL} (1.9 GB) and place the tar
  itself, or its extracted VOCdevkit/ folder, in the manual dir
  (`manual_dir`, default <data_dir>/downloads/manual/). The tar is read in
  place; it need not be extracted.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            'PASCAL VOC 2012 segmentation trainval images with binary '
            'foreground masks (1 = any of the 20 object classes; void '
            f'label 255 -> {self.builder_config.void_as}).'),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(encoding_format='jpeg'),
            'mask': tfds.features.Image(
                shape=(None, None, 1), encoding_format='png'),
            'file_name': tfds.features.Text(),
            'labels': tfds.features.Sequence(
                tfds.features.ClassLabel(names=VOC_CLASSES)),
            'num_objects': np.int32,
        }),
        homepage='http://host.robots.ox.ac.uk/pascal/VOC/voc2012/',
        citation=_CITATION,
        # Records keep the order of the official lists (sorted ids).
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError:  # TFDS: the manual dir is missing or empty.
      # pylint: disable-next=protected-access
      path = (getattr(dl_manager, '_manual_dir', None)
              or dl_manager.download_dir / 'manual')
      raise errors.SemcorrError(
          f'VOC 2012: the manual dir {path} is missing or empty; '
          f'{_fetch_hint()}.') from None
    files = find_voc(manual_dir)
    return {
        'train': self._generate_examples(files.copy(), ('train',)),
        'val': self._generate_examples(files.copy(), ('val',)),
        'trainval': self._generate_examples(files.copy(), ('train', 'val')),
    }

  def _generate_examples(self, files: VocFiles, set_names: tuple[str, ...]):
    """Yields `(image id, example)` for the ids of the given split lists."""
    void_as = self.builder_config.void_as
    try:
      for set_name in set_names:
        listing = files.require(f'{_SET_DIR}/{set_name}.txt').decode()
        for image_id in listing.split():
          yield image_id, self._example(files, image_id, void_as)
    finally:
      files.close()

  def _example(self, files: VocFiles, image_id: str, void_as: str) -> dict:
    jpeg = files.require(f'JPEGImages/{image_id}.jpg')
    class_path = f'SegmentationClass/{image_id}.png'
    labels = read_label_png(files.require(class_path), class_path)
    with Image.open(io.BytesIO(jpeg)) as image:
      width, height = image.size
    if labels.shape != (height, width):
      raise errors.SemcorrError(
          f'VOC 2012: {class_path} is {labels.shape[1]}x{labels.shape[0]} but '
          f'its image is {width}x{height}; the files do not belong together.')
    values = set(np.unique(labels).tolist())
    unexpected = values - set(range(len(VOC_CLASSES) + 1)) - {VOID_LABEL}
    if unexpected:
      raise errors.SemcorrError(
          f'VOC 2012: {class_path} holds labels {sorted(unexpected)}; '
          'expected 0..20 and 255 (is it the official palette PNG?).')
    present = sorted(values - {0, VOID_LABEL})
    object_path = f'SegmentationObject/{image_id}.png'
    objects = files.read(object_path)
    if objects is None:
      num_objects = -1
    else:
      instances = set(np.unique(read_label_png(objects, object_path)).tolist())
      num_objects = len(instances - {0, VOID_LABEL})
    return {
        'image': jpeg,
        'mask': _encode_png(binary_mask(labels, void_as)),
        'file_name': f'{image_id}.jpg',
        'labels': [label - 1 for label in present],
        'num_objects': num_objects,
    }
