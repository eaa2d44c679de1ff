"""Scene sources: finite, indexable sets of images with binary foreground masks.

A scene source feeds the synthetic-pair pipeline (`semcorr_jax.data.pipeline`):
for every pair it picks one scene (an image and the mask of its foreground),
warps it twice and derives the ground truth from the two warps. Sources know
nothing about warps, pairs or batches.

Scene sources of the pipeline (`pipeline.SOURCES`):

* `'embedded'`: textured shapes with exact masks on photos bundled with
  scikit-image, generated on the fly (`semcorr_jax.data.embedded`).
* `'voc2012'`: PASCAL VOC 2012 segmentation images with binary foreground masks
  (`semcorr_jax.data.voc`, built from the VOC files on first use).
* `'folder'`: the user's own images, with optional `<stem>_mask.png` masks
  beside them (`semcorr_jax.data.folder_source`).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import tensorflow as tf

from semcorr_jax import errors


class SceneSource(Protocol):
  """A finite, indexable set of images with binary foreground masks.

  Attributes:
    name: a short name for logs, e.g. `'embedded/train'`.
    num_scenes: how many scenes `scene` accepts; indices run over
      `[0, num_scenes)`.
  """

  name: str
  num_scenes: int

  def scene(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns scene `index`; must trace in graph mode (inside `tf.data.map`).

    Args:
      index: int64 scalar tensor in `[0, num_scenes)`.

    Returns:
      `(image, mask)`: image uint8 `(H, W, 3)` and mask uint8 `(H, W)` with
      values in {0, 1}. H and W may differ between scenes.
    """
    ...


class InMemorySource:
  """A `SceneSource` over encoded PNG/JPEG images held in memory.

  The encoded bytes live in two string constants of the graph, so `scene` is a
  gather plus a decode: cheap, and the same in every process. Masks are
  decoded as single-channel images and binarised with `> 0`, so both 0/1 and
  0/255 encodings work.
  """

  def __init__(self, name: str, encoded_images: Sequence[bytes],
               encoded_masks: Sequence[bytes]):
    """Stores the encoded scenes.

    Args:
      name: name of the source.
      encoded_images: PNG or JPEG bytes of RGB (or grey) images.
      encoded_masks: PNG bytes of single-channel masks, one per image, of the
        same size as its image; nonzero = foreground.

    Raises:
      SemcorrError: if the lists are empty or of different lengths.
    """
    if len(encoded_images) != len(encoded_masks):
      raise errors.SemcorrError(
          f'Scene source {name!r}: {len(encoded_images)} images but '
          f'{len(encoded_masks)} masks; they must pair up one to one.')
    if not encoded_images:
      raise errors.SemcorrError(f'Scene source {name!r} holds no scenes.')
    self.name = name
    self.num_scenes = len(encoded_images)
    self._images = tf.constant(list(encoded_images), dtype=tf.string)
    self._masks = tf.constant(list(encoded_masks), dtype=tf.string)

  def scene(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """See `SceneSource.scene`; `(H, W, 3)` uint8 image, `(H, W)` uint8 mask."""
    index = tf.cast(index, tf.int64)
    image = tf.io.decode_image(
        tf.gather(self._images, index), channels=3, expand_animations=False)
    mask = tf.io.decode_image(
        tf.gather(self._masks, index), channels=1, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    mask = tf.cast(mask[..., 0] > 0, tf.uint8)
    return image, mask


def encode_png(array) -> bytes:
  """PNG bytes of a uint8 `(H, W)` or `(H, W, C)` numpy array (eager TF)."""
  tensor = tf.convert_to_tensor(array, dtype=tf.uint8)
  if tensor.shape.rank == 2:
    tensor = tensor[..., None]
  return tf.io.encode_png(tensor).numpy()
