"""The `folder` scene source: the user's own images (and masks) as scenes.

A tiny folder of PNG/JPEG images, two with masks (one grey, one colour),
feeds the synthetic-pair pipeline: listing and mask rules, determinism
(same seed and files -> the same first batch, whatever the listing order),
the held-out split, a short training run, and one error line per bad input.
"""

import json
import os

import numpy as np
from PIL import Image
import pytest

from helpers import paths
from semcorr_jax import config_files
from semcorr_jax import train
from semcorr_jax.data import folder_source
from semcorr_jax.data import pipeline
from semcorr_jax.errors import SemcorrError


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _random_image(h, w, seed):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


# b: 24 x 32 with a grey 0/255 mask, foreground rows 4..19, columns 8..23.
B_MASK = np.zeros((24, 32), np.uint8)
B_MASK[4:20, 8:24] = 255


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('my_images')
  _save(str(root / 'b.png'), _random_image(24, 32, 1))
  _save(str(root / 'b_mask.png'), B_MASK)
  _save(str(root / 'a.jpg'), _random_image(20, 20, 2))
  # c: a colour mask whose foreground (the left half, 15 of 30 columns) is
  # only in the green channel.
  colour = np.zeros((25, 30, 3), np.uint8)
  colour[:, :15, 1] = 7
  _save(str(root / 'sub' / 'c.png'), _random_image(25, 30, 3))
  _save(str(root / 'sub' / 'c_mask.png'), colour)
  # Ignored: other files, hidden files and hidden folders.
  (root / 'notes.txt').write_text('not an image')
  _save(str(root / '.hidden.png'), _random_image(8, 8, 4))
  _save(str(root / '.cache' / 'x.png'), _random_image(8, 8, 5))
  return str(root)


def _config(folder, **overrides):
  values = {'data.source': 'folder', 'data.folder': folder,
            'data.scene_size': (24, 32), 'data.image_size': (32, 32)}
  values.update(overrides)
  return config_files.load(f'{paths.CONFIGS / "sfnet"}.py:test', values)


def _first_batch(config, split='train', seed=0):
  ds = pipeline.make_pair_dataset(config.data, split, batch_size=4,
                                  seed=seed)
  return next(ds.as_numpy_iterator())


def test_listing_masks_and_scenes(folder):
  scenes = folder_source.list_folder(folder)
  rel = [(os.path.relpath(i, folder), m and os.path.relpath(m, folder))
         for i, m in scenes]
  assert rel == [('a.jpg', None), ('b.png', 'b_mask.png'),
                 (os.path.join('sub', 'c.png'), os.path.join('sub',
                                                             'c_mask.png'))]
  source = pipeline.get_source(_config(folder).data, 'train')
  assert (source.name, source.num_scenes) == ('folder/train', 3)
  # b is loaded at its own size (scene_size 24 x 32): pixels and mask as
  # written (PNG is lossless), the mask binarised 255 -> 1.
  image, mask = (t.numpy() for t in source.scene(1))
  np.testing.assert_array_equal(image, _random_image(24, 32, 1))
  np.testing.assert_array_equal(mask, (B_MASK > 0).astype(np.uint8))
  # a has no mask: foreground everywhere.
  assert source.scene(0)[1].numpy().min() == 1
  # c's colour mask: the left half is foreground (green 7 != 0), resized
  # from 30 to 32 columns: 16 of every row's 32 pixels.
  c_mask = source.scene(2)[1].numpy()
  assert c_mask.shape == (24, 32)
  np.testing.assert_array_equal(c_mask.sum(axis=1), np.full(24, 16))
  assert c_mask[:, :16].all()


def test_palette_masks_count_indices_not_colours(tmp_path):
  # Index 0 drawn white, index 1 black (as VOC-style label PNGs may be):
  # foreground is where the index is nonzero, whatever its colour.
  indices = np.zeros((6, 8), np.uint8)
  indices[2:4, 1:5] = 1
  mask = Image.frombytes('P', (8, 6), indices.tobytes())
  mask.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
  mask.save(tmp_path / 'm.png')
  found = folder_source.read_mask(str(tmp_path / 'm.png'), (6, 8), 'x.png')
  np.testing.assert_array_equal(found, indices == 1)


def test_same_seed_same_first_batch_whatever_the_listing_order(
    folder, monkeypatch):
  config = _config(folder)
  first = _first_batch(config)
  # A file system that lists everything in reverse; nothing cached.
  walk = os.walk

  def reversed_walk(top, *args, **kwargs):
    for root, dirs, files in walk(top, *args, **kwargs):
      dirs.reverse()
      yield root, dirs, files[::-1]

  monkeypatch.setattr(os, 'walk', reversed_walk)
  folder_source.clear_cache()
  again = _first_batch(config)
  assert first.keys() == again.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], again[key], err_msg=key)
  assert not np.array_equal(first['target_image'],
                            _first_batch(config, seed=1)['target_image'])


def test_heldout_split_same_images_or_its_own_folder(folder, tmp_path):
  config = _config(folder)
  # Without heldout_folder: the 3 training images under other warps.
  assert pipeline.num_examples(config.data, 'heldout') == 3
  assert pipeline.get_source(config.data, 'heldout').image_paths == (
      pipeline.get_source(config.data, 'train').image_paths)
  assert not np.array_equal(_first_batch(config)['target_image'],
                            _first_batch(config, 'heldout')['target_image'])
  # With one: its images.
  _save(str(tmp_path / 'val' / 'v.png'), _random_image(10, 12, 6))
  config = _config(folder, **{'data.heldout_folder': str(tmp_path / 'val')})
  assert pipeline.num_examples(config.data, 'heldout') == 1
  assert pipeline.num_examples(config.data, 'train') == 3


def test_sfnet_trains_on_a_folder(folder, tmp_path):
  # num_epochs over the folder's 3 images: int(6 * 3) // batch 8 = 2 steps.
  config = _config(folder, num_train_steps=-1, num_epochs=6,
                   checkpoint_every=2, log_every=1)
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['step'] == 2
  lines = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  losses = [l['loss'] for l in lines if l['split'] == 'train']
  assert len(losses) == 2 and np.all(np.isfinite(losses))
  synthetic = results['evals']['synthetic']
  assert synthetic['trained']['num_pairs'] == 4  # held-out folder pairs
  assert 0.0 <= synthetic['trained']['pck@0.1'] <= 1.0
  saved = json.load(open(tmp_path / 'config.json'))
  assert (saved['data']['source'], saved['data']['folder']) == (
      'folder', folder)


def _error(config, split='train'):
  folder_source.clear_cache()
  with pytest.raises(SemcorrError) as raised:
    pipeline.num_examples(config.data, split)
  message = str(raised.value)
  assert '\n' not in message
  return message


def test_one_line_errors(folder, tmp_path):
  assert 'needs data.folder' in _error(_config(None))
  assert 'does not exist' in _error(_config(str(tmp_path / 'nowhere')))
  (tmp_path / 'file.png').write_bytes(b'x')
  assert 'is a file, not a folder' in _error(_config(str(tmp_path /
                                                         'file.png')))
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'readme.txt').write_text('hi')
  assert 'holds no images' in _error(_config(str(tmp_path / 'empty')))
  assert "splits train, heldout, not 'test'" in _error(_config(folder),
                                                        'test')

  def bad_folder(name, files):
    root = tmp_path / name
    for rel, content in files.items():
      path = root / rel
      path.parent.mkdir(parents=True, exist_ok=True)
      if isinstance(content, bytes):
        path.write_bytes(content)
      else:
        Image.fromarray(content).save(path)
    return str(root)

  image = _random_image(12, 16, 7)
  wrong = bad_folder('wrong_size', {'x.png': image,
                                    'x_mask.png': np.ones((12, 15), np.uint8)})
  message = _error(_config(wrong))
  assert 'x_mask.png' in message and 'is 15x12 pixels but its image' in (
      message) and 'is 16x12' in message
  corrupt = bad_folder('corrupt', {'y.jpg': b'not a jpeg', 'z.png': image})
  message = _error(_config(corrupt))
  assert 'data.folder image' in message and 'y.jpg' in message
  assert 'corrupt' in message
  jpeg_mask = bad_folder('jpeg_mask', {'x.png': image,
                                       'x_mask.jpg': image})
  assert 'x_mask.jpg' in _error(_config(jpeg_mask))
  orphan = bad_folder('orphan', {'x.png': image,
                                 'y_mask.png': np.ones((12, 16), np.uint8)})
  message = _error(_config(orphan))
  assert 'y_mask.png' in message and 'has no image beside it' in message
  bad_mask = bad_folder('bad_mask', {'x.png': image, 'x_mask.png': b'??'})
  message = _error(_config(bad_mask))
  assert 'mask' in message and 'x_mask.png' in message
  # A bad held-out image fails when the training split is counted, i.e.
  # before training, naming the setting.
  config = _config(folder, **{'data.heldout_folder': corrupt})
  message = _error(config)
  assert 'data.heldout_folder image' in message and 'y.jpg' in message
