"""semcorr_jax: semantic correspondence in JAX/Flax.

Quick use::

  import semcorr_jax
  matcher = semcorr_jax.load('runs/sfnet_quick')
  out = matcher.match(source, target)          # (H, W, 3) arrays in [0, 1] or uint8
  points_t = matcher.transfer_keypoints(source, target, points_s)

Coordinate conventions: docs/architecture.md.
"""

__version__ = '0.1.0'


def load(workdir, step=None, best=False):
  """Loads a trained model from `workdir`; see `semcorr_jax.api.load`."""
  # Imported on use: every submodule import runs this file first, and the
  # lower layers (data, geometry) must not pull in the models and Orbax.
  from semcorr_jax import api  # pylint: disable=g-import-not-at-top
  return api.load(workdir, step=step, best=best)
