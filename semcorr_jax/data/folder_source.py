"""A folder of the user's own images as a scene source (`data.source='folder'`).

  semcorr-train --config=configs/sfnet.py:quick --workdir=runs/mine \
    --config.data.source=folder --config.data.folder=~/my_images

The images feed the same synthetic-pair pipeline as the other scene sources
(`synthetic_pairs`: each pair is one image warped twice), so no annotation
is needed. Layout:

* images: every file under `data.folder` and its subfolders whose extension
  is one of `IMAGE_EXTENSIONS` (any case), read as `semcorr-match` reads
  images (`image_files.read_image`: upright by EXIF, 16-bit scaled, alpha
  flattened); names starting with '.' (hidden files and folders) are skipped
  and links to folders are not followed;
* masks (optional): `<stem>_mask.png` beside its image `<stem>.<ext>`, of
  the image's size; nonzero = foreground (for colour masks any nonzero R, G
  or B, for palette PNGs a nonzero palette index). Masks must be PNG: JPEG
  noise would turn background into foreground. An image without a mask is
  foreground everywhere.

Every image is resized (squashed, bilinear with Pillow's antialiasing) to
`data.scene_size` when loaded and held in memory as PNG, as the embedded
scenes are generated at that size; the pipeline then resizes scenes to
`data.image_size` as for every source. The mask is resized the same way and
thresholded at one half.

Determinism: scenes are ordered by their path relative to the folder (as
'/'-separated text), so the same files and seed give the same pairs
whatever order the file system lists them in; example `i` is a function of
(seed, split, i) as for every source (`pipeline`).

Splits: 'train' holds the images of `data.folder`. 'heldout' holds those of
`data.heldout_folder` (same layout) when it is set, else the training
images themselves under the held-out split's own warps (its seed stream is
disjoint from training's): the `synthetic` evaluator then measures how well
the model matches new warps of images it trained on, not new images. Give a
separate folder to measure that.

Loaded folders are cached (by path, scene size and every file's size and
modification time), so the trainer's and the evaluator's sources share one
read. Every problem (no folder, no images, an unreadable image or mask, a
mask of the wrong size, a mask without its image) is one SemcorrError line
naming the setting and the file.
"""

from __future__ import annotations

import collections
import functools
import io
import os
from typing import Any

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

from semcorr_jax import image_files
from semcorr_jax.errors import SemcorrError
from semcorr_jax.data import sources
from semcorr_jax.data import streams

IMAGE_EXTENSIONS = ('.bmp', '.gif', '.jpeg', '.jpg', '.png', '.tif', '.tiff',
                    '.webp')
MASK_SUFFIX = '_mask'
SPLITS = ('train', 'heldout')
# Pillow modes whose extra last channel is alpha, not colour.
_GREY_ALPHA_MODES = ('LA', 'La', 'PA')


def folder_of(data_config, split: str) -> tuple[str, str]:
  """`(setting, folder)` of a split: ('data.folder', path) or the held-out
  folder's; `~` expanded.

  Raises:
    SemcorrError: an unknown split, or no `data.folder`.
  """
  if split not in SPLITS:
    raise SemcorrError(f'data.source=folder has splits {", ".join(SPLITS)}, '
                       f'not {split!r}')
  folder = data_config.get('folder')
  if not folder:
    raise SemcorrError(
        "data.source='folder' needs data.folder, the folder of training "
        'images, e.g. --config.data.folder=~/my_images')
  setting = 'data.folder'
  heldout = data_config.get('heldout_folder')
  if split == 'heldout' and heldout:
    setting, folder = 'data.heldout_folder', heldout
  return setting, os.path.expanduser(str(folder))


def list_folder(folder: str, setting: str = 'data.folder'
                ) -> list[tuple[str, str | None]]:
  """The scenes of a folder: `(image path, mask path or None)`, sorted.

  Sorted by the image's '/'-separated path relative to `folder`; the
  listing order of the file system plays no part.

  Raises:
    SemcorrError: no such folder, no images, a mask that is not PNG, has no
      image or would belong to two images.
  """
  if not os.path.isdir(folder):
    what = 'is a file, not a folder' if os.path.exists(folder) else (
        'does not exist')
    raise SemcorrError(f'{setting}={image_files.shown(folder)} {what}')
  images, masks = {}, {}
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    for name in files:
      stem, ext = os.path.splitext(name)
      if name.startswith('.') or ext.lower() not in IMAGE_EXTENSIONS:
        continue
      path = os.path.join(root, name)
      rel = os.path.relpath(path, folder).replace(os.sep, '/')
      if stem.endswith(MASK_SUFFIX):
        if ext.lower() != '.png':
          raise SemcorrError(
              f'{setting} mask {image_files.shown(path)} is not a PNG; save '
              'masks as PNG (lossless: JPEG noise turns background into '
              'foreground)')
        masks[rel[:len(rel) - len(name)] + stem[:-len(MASK_SUFFIX)]] = path
      else:
        images[rel] = path
  if not images:
    raise SemcorrError(
        f'{setting}={image_files.shown(folder)} holds no images '
        f'({", ".join(IMAGE_EXTENSIONS)}, in it or its subfolders)')
  by_stem = collections.defaultdict(list)
  for rel in sorted(images):
    by_stem[os.path.splitext(rel)[0]].append(images[rel])
  for key, mask in sorted(masks.items()):
    owners = by_stem.get(key, [])
    if not owners:
      raise SemcorrError(
          f'{setting} mask {image_files.shown(mask)} has no image beside it '
          f'named {os.path.basename(key)}.<ext> (a mask is named <image '
          f'stem>{MASK_SUFFIX}.png)')
    if len(owners) > 1:
      raise SemcorrError(
          f'{setting} mask {image_files.shown(mask)} would belong to '
          f'{" and ".join(image_files.shown(o) for o in owners)}; rename one '
          'of them')
  return [(images[rel], masks.get(os.path.splitext(rel)[0]))
          for rel in sorted(images)]


def read_mask(path: str, image_hw: tuple[int, int], image_path: str,
              setting: str = 'data.folder') -> np.ndarray:
  """A mask file as (H, W) bool, nonzero = foreground (module docstring).

  Turned upright by its EXIF orientation, as the images are.

  Raises:
    SemcorrError: unreadable, or not of the image's size `image_hw`.
  """
  label = f'{setting} mask {image_files.shown(path)}'
  try:
    with Image.open(path) as im:
      im.load()
      ImageOps.exif_transpose(im, in_place=True)
      values = np.asarray(im)
      if values.ndim == 3:
        channels = 1 if im.mode in _GREY_ALPHA_MODES else 3
        values = values[..., :channels]
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError
          ) as e:
    why = ('not an image' if isinstance(e, UnidentifiedImageError)
           else ' '.join(str(e).split()))
    raise SemcorrError(f'{label} is corrupt or unreadable: {why}') from e
  foreground = values != 0
  if foreground.ndim == 3:
    foreground = np.any(foreground, axis=-1)
  if foreground.shape != tuple(image_hw):
    (mh, mw), (h, w) = foreground.shape, image_hw
    raise SemcorrError(
        f'{label} is {mw}x{mh} pixels but its image '
        f'{image_files.shown(image_path)} is {w}x{h}; a mask has its '
        "image's size")
  return foreground


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


def load_scene(image_path: str, mask_path: str | None,
               scene_hw: tuple[int, int], setting: str = 'data.folder'
               ) -> tuple[np.ndarray, np.ndarray]:
  """One scene at `scene_hw`: image (H, W, 3) uint8, mask (H, W) uint8 {0, 1}.

  Without a mask the whole image is foreground.
  """
  image = image_files.read_image(image_path, f'{setting} image')
  if mask_path is None:
    mask = np.ones(image.shape[:2], bool)
  else:
    mask = read_mask(mask_path, image.shape[:2], image_path, setting)
  size = (int(scene_hw[1]), int(scene_hw[0]))  # Pillow: (width, height)
  image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
  mask = Image.fromarray(mask.astype(np.uint8) * 255).resize(size,
                                                             Image.BILINEAR)
  return image, (np.asarray(mask) >= 128).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _encoded(scenes: tuple[tuple[str, str | None], ...],
             scene_hw: tuple[int, int], setting: str, stamp: Any
             ) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
  """PNG bytes of every scene's image and mask (cached on `stamp`)."""
  del stamp  # Part of the cache key only.
  images, masks = [], []
  for image_path, mask_path in scenes:
    image, mask = load_scene(image_path, mask_path, scene_hw, setting)
    images.append(_png(image))
    masks.append(_png(mask))
  return tuple(images), tuple(masks)


def _stamp(scenes) -> tuple[tuple[int, int], ...]:
  """(size, mtime_ns) of every file: a changed file is read again."""
  out = []
  for pair in scenes:
    for path in pair:
      if path is not None:
        st = os.stat(path)
        out.append((st.st_size, st.st_mtime_ns))
  return tuple(out)


def clear_cache() -> None:
  """Forgets every loaded folder (tests; a folder changed within one mtime)."""
  _encoded.cache_clear()


def scene_source(data_config, split: str) -> sources.InMemorySource:
  """The scenes of `split` ('train' or 'heldout'; module docstring).

  Returns:
    An `InMemorySource` named `'folder/<split>'`; `scene(i)` gives the
    `data.scene_size` uint8 image and {0, 1} mask of the i-th image in path
    order. Its `image_paths` and `mask_paths` (None: no mask) say which
    files those are.

  Raises:
    SemcorrError: for any problem with the folder or its files.
  """
  setting, folder = folder_of(data_config, split)
  scenes = tuple(list_folder(folder, setting))
  scene_hw = streams.image_size(data_config.scene_size)
  images, masks = _encoded(scenes, scene_hw, setting, _stamp(scenes))
  source = sources.InMemorySource(f'folder/{split}', images, masks)
  source.image_paths = [image for image, _ in scenes]
  source.mask_paths = [mask for _, mask in scenes]
  return source


def scene_count(data_config, split: str) -> int:
  """The number of images of `split`.

  Loads (and so checks) every image of the split, and for 'train' those of
  `data.heldout_folder` too, so that a bad held-out image fails before
  training rather than at the first evaluation; the cache makes the later
  `scene_source` calls free.
  """
  if split == 'train' and data_config.get('heldout_folder'):
    scene_source(data_config, 'heldout')
  return scene_source(data_config, split).num_scenes
