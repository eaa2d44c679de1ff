"""Tests of the VOC 2012 segmentation builder and scene source (tiny fixture).

The fixture is written at test time in the official layout
(`VOCdevkit/VOC2012/...` with palette label PNGs), as a folder and as
`VOCtrainval_11-May-2012.tar`.
"""

import io
import pathlib
import shutil
import tarfile
import tempfile
import types

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data import pipeline
from semcorr_jax.data import voc
from semcorr_jax.data import voc_builder

# (id, height, width, [(class, y0, y1, x0, x1), ...]); 2007_000584 is a
# PF-PASCAL test image (in the shipped exclusion list).
TRAIN = [
    ('2007_000032', 20, 28, [(15, 4, 12, 6, 14)]),
    ('2007_000039', 24, 24, [(1, 2, 8, 2, 8), (15, 12, 20, 10, 20)]),
    ('2007_000584', 18, 30, [(20, 5, 10, 5, 25)]),
    ('2008_000008', 22, 26, [(15, 3, 9, 3, 9), (15, 12, 18, 12, 22)]),
]
VAL = [
    ('2007_000033', 26, 20, [(7, 6, 16, 4, 14)]),
    ('2007_000042', 20, 20, []),  # All background.
    ('2011_000003', 24, 30, [(12, 4, 20, 6, 24)]),
]
NO_OBJECT_PNG = '2007_000042'  # Its SegmentationObject PNG is left out.
ALL = {entry[0]: entry for entry in TRAIN + VAL}


def voc_palette() -> list[int]:
  """The VOC colour map: bits of the index spread over R, G and B."""
  palette = []
  for index in range(256):
    rgb = [0, 0, 0]
    for bit in range(8):
      for channel in range(3):
        rgb[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    palette.extend(rgb)
  return palette


def label_maps(entry) -> tuple[np.ndarray, np.ndarray]:
  """Class and instance index maps, each object ringed by a 1-px void band."""
  _, height, width, objects = entry
  classes = np.zeros((height, width), np.uint8)
  instances = np.zeros((height, width), np.uint8)
  for number, (label, y0, y1, x0, x1) in enumerate(objects, start=1):
    for array, value in ((classes, label), (instances, number)):
      array[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = voc_builder.VOID_LABEL
      array[y0:y1, x0:x1] = value
  return classes, instances


def expected_mask(entry, void_as: str) -> np.ndarray:
  classes, _ = label_maps(entry)
  mask = (classes > 0) & (classes <= 20)
  if void_as == 'foreground':
    mask |= classes == 255
  return mask.astype(np.uint8)


def palette_png(indices: np.ndarray) -> bytes:
  height, width = indices.shape
  image = Image.frombytes('P', (width, height), indices.tobytes())
  image.putpalette(voc_palette())
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  return buffer.getvalue()


def jpeg(entry) -> bytes:
  image_id, height, width, _ = entry
  rng = np.random.default_rng(int(image_id.replace('_', '')))
  pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG')
  return buffer.getvalue()


def write_voc(manual_dir: pathlib.Path, as_tar: bool = False) -> pathlib.Path:
  """Writes the fixture into `manual_dir` (a folder tree, or the tar)."""
  root = manual_dir / 'VOCdevkit' / 'VOC2012'
  for sub in ('JPEGImages', 'SegmentationClass', 'SegmentationObject',
              'ImageSets/Segmentation'):
    (root / sub).mkdir(parents=True, exist_ok=True)
  for entry in TRAIN + VAL:
    image_id = entry[0]
    classes, instances = label_maps(entry)
    (root / 'JPEGImages' / f'{image_id}.jpg').write_bytes(jpeg(entry))
    (root / 'SegmentationClass' / f'{image_id}.png').write_bytes(
        palette_png(classes))
    if image_id != NO_OBJECT_PNG:
      (root / 'SegmentationObject' / f'{image_id}.png').write_bytes(
          palette_png(instances))
  # A JPEG outside the segmentation lists, as in the real archive.
  (root / 'JPEGImages' / '2007_000027.jpg').write_bytes(
      jpeg(('2007_000027', 8, 8, [])))
  for name, entries in (('train', TRAIN), ('val', VAL)):
    (root / 'ImageSets' / 'Segmentation' / f'{name}.txt').write_text(
        ''.join(f'{e[0]}\n' for e in entries))
  if as_tar:
    with tarfile.open(manual_dir / voc_builder.TAR_NAME, 'w') as tar:
      tar.add(manual_dir / 'VOCdevkit', arcname='VOCdevkit')
    shutil.rmtree(manual_dir / 'VOCdevkit')
  return manual_dir


class Voc2012SegmentationTest(tfds.testing.DatasetBuilderTestCase):
  """The standard TFDS builder checks, on the folder fixture."""

  DATASET_CLASS = voc_builder.Voc2012Segmentation
  SPLITS = {'train': len(TRAIN), 'val': len(VAL), 'trainval': len(ALL)}
  OVERLAPPING_SPLITS = ['trainval']
  SKIP_CHECKSUMS = True

  @classmethod
  def setUpClass(cls):
    cls._fixture_dir = tempfile.mkdtemp()
    cls.EXAMPLE_DIR = str(write_voc(pathlib.Path(cls._fixture_dir)))
    super().setUpClass()

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    shutil.rmtree(cls._fixture_dir)


def build(tmp_path, as_tar: bool, void_as: str = 'foreground'):
  manual_dir = write_voc(tmp_path / 'manual', as_tar=as_tar)
  builder = voc_builder.Voc2012Segmentation(
      config=f'void_{void_as}', data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def read_split(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


@pytest.mark.parametrize('as_tar', [False, True], ids=['folder', 'tar'])
def test_builder_splits_masks_and_labels(tmp_path, as_tar):
  builder = build(tmp_path, as_tar)
  assert builder.info.splits['train'].num_examples == len(TRAIN)
  assert builder.info.splits['val'].num_examples == len(VAL)
  assert builder.info.splits['trainval'].num_examples == len(ALL)
  examples = read_split(builder, 'trainval')
  # Records follow the official lists: train then val.
  assert [e['file_name'].decode() for e in examples] == [
      f'{entry[0]}.jpg' for entry in TRAIN + VAL]
  for example in examples:
    entry = ALL[example['file_name'].decode()[:-4]]
    image_id, height, width, objects = entry
    assert example['image'].shape == (height, width, 3)
    np.testing.assert_array_equal(
        example['mask'][..., 0], expected_mask(entry, 'foreground'))
    assert example['labels'].tolist() == sorted(
        {label - 1 for label, *_ in objects})
    expected_objects = -1 if image_id == NO_OBJECT_PNG else len(objects)
    assert example['num_objects'] == expected_objects


def test_void_background_config(tmp_path):
  builder = build(tmp_path, as_tar=False, void_as='background')
  for example in read_split(builder, 'val'):
    entry = ALL[example['file_name'].decode()[:-4]]
    np.testing.assert_array_equal(
        example['mask'][..., 0], expected_mask(entry, 'background'))


def test_label_png_read_as_palette_indices():
  entry = TRAIN[1]
  classes, _ = label_maps(entry)
  data = palette_png(classes)
  np.testing.assert_array_equal(
      voc_builder.read_label_png(data, 'x.png'), classes)
  # Why PIL: TensorFlow expands the palette to colours, not indices.
  decoded = tf.io.decode_png(data).numpy()
  assert decoded.shape[-1] == 3
  np.testing.assert_array_equal(decoded[5, 5], [128, 0, 0])  # Label 1.
  with pytest.raises(errors.SemcorrError, match='palette'):
    voc_builder.read_label_png(tf.io.encode_png(decoded).numpy(), 'x.png')


def test_binary_mask_values():
  labels = np.array([[0, 1, 20, 255, 0, 7]], np.uint8)
  np.testing.assert_array_equal(
      voc_builder.binary_mask(labels, 'foreground'), [[0, 1, 1, 1, 0, 1]])
  np.testing.assert_array_equal(
      voc_builder.binary_mask(labels, 'background'), [[0, 1, 1, 0, 0, 1]])


def data_config(tmp_path, **overrides):
  fields = dict(data_dir=str(tmp_path / 'tfds'),
                manual_dir=str(tmp_path / 'manual'), exclude_list=None,
                heldout_scenes=2, void_as='foreground')
  fields.update(overrides)
  return types.SimpleNamespace(**fields)


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """A data config whose VOC dataset is built from the tar fixture."""
  tmp_path = tmp_path_factory.mktemp('voc_source')
  write_voc(tmp_path / 'manual', as_tar=True)
  return tmp_path


def scenes_in_graph_mode(source):
  dataset = tf.data.Dataset.range(source.num_scenes).map(source.scene)
  return list(dataset.as_numpy_iterator())


def test_scene_source_splits_exclusions_and_content(prepared):
  config = data_config(prepared)
  # Sorted ids minus 2007_000584 (PF-PASCAL test): 6 left, the last 2 held out.
  expected = {
      'train': ['2007_000032', '2007_000033', '2007_000039', '2007_000042'],
      'heldout': ['2008_000008', '2011_000003'],
  }
  for split, ids in expected.items():
    source = voc.scene_source(config, split)
    assert source.name == f'voc2012/{split}'
    assert source.num_scenes == voc.scene_count(config, split) == len(ids)
    assert source.image_ids == ids
    for image_id, (image, mask) in zip(ids, scenes_in_graph_mode(source)):
      entry = ALL[image_id]
      np.testing.assert_array_equal(
          image, tf.io.decode_jpeg(jpeg(entry)).numpy())
      assert mask.dtype == np.uint8
      np.testing.assert_array_equal(mask, expected_mask(entry, 'foreground'))


def test_scene_source_custom_and_empty_exclusions(prepared, tmp_path):
  exclude = tmp_path / 'exclude.txt'
  exclude.write_text('# comment\n2007_000032\nJPEGImages/2011_000003.jpg\n\n')
  assert voc.read_exclude_list(exclude) == {'2007_000032', '2011_000003'}
  config = data_config(prepared, exclude_list=str(exclude), heldout_scenes=1)
  assert voc.scene_source(config, 'train').num_scenes == len(ALL) - 3
  config = data_config(prepared, exclude_list='', heldout_scenes=1)
  assert voc.scene_source(config, 'train').num_scenes == len(ALL) - 1


def test_manual_dir_may_be_the_tar_itself(tmp_path, load_config):
  write_voc(tmp_path / 'manual', as_tar=True)
  tar_path = tmp_path / 'manual' / voc_builder.TAR_NAME
  # The data block of a config file (locked), through the pipeline.
  config = load_config('sfnet', 'test', **{
      'data.source': 'voc2012', 'data.data_dir': str(tmp_path / 'tfds'),
      'data.manual_dir': str(tar_path), 'data.heldout_scenes': 1}).data
  assert voc.scene_source(config, 'train').num_scenes == len(ALL) - 2
  assert pipeline.num_examples(config, 'train') == len(ALL) - 2
  assert pipeline.num_examples(config, 'heldout') == 1
  spec = pipeline.batch_spec(config, 2)
  batch = next(iter(pipeline.make_pair_dataset(config, 'heldout',
                                               batch_size=1, seed=0)))
  assert {k: v.shape[1:] for k, v in batch.items()} == {
      k: shape[1:] for k, (shape, _) in spec.items()}
  renamed = tmp_path / 'voc.tar'
  tar_path.rename(renamed)
  config = data_config(tmp_path, data_dir=str(tmp_path / 'tfds2'),
                       manual_dir=str(renamed))
  with pytest.raises(errors.SemcorrError, match='rename it'):
    voc.scene_source(config, 'train')


def test_shipped_exclusion_list():
  ids = voc.read_exclude_list(voc.DEFAULT_EXCLUDE_LIST)
  assert len(ids) == 506
  assert all(len(i) == 11 and i[4] == '_' for i in ids)
  assert '2007_000584' in ids


def test_missing_manual_dir_is_a_clear_error(tmp_path):
  config = data_config(tmp_path)
  with pytest.raises(errors.SemcorrError,
                     match='does not exist.*VOCtrainval_11-May-2012.tar'):
    voc.scene_source(config, 'train')
  (tmp_path / 'manual').mkdir()
  with pytest.raises(errors.SemcorrError, match='neither .* nor an extracted'):
    voc.scene_source(config, 'train')
  # The builder on its own says the same, through TFDS.
  builder = voc_builder.Voc2012Segmentation(data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(errors.SemcorrError,
                     match='absent is missing or empty.*host.robots.ox.ac.uk'):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(tmp_path / 'absent')))


def test_missing_label_png_is_named(tmp_path):
  manual_dir = write_voc(tmp_path / 'manual')
  (manual_dir / 'VOCdevkit/VOC2012/SegmentationClass/2007_000033.png').unlink()
  with pytest.raises(errors.SemcorrError,
                     match='SegmentationClass/2007_000033.png is missing'):
    voc.scene_source(data_config(tmp_path), 'train')


def test_bad_split_and_heldout_size(prepared):
  with pytest.raises(errors.SemcorrError, match='unknown split'):
    voc.scene_source(data_config(prepared), 'test')
  with pytest.raises(errors.SemcorrError, match='heldout_scenes=6'):
    voc.scene_source(data_config(prepared, heldout_scenes=6), 'train')
