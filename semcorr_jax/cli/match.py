r"""`semcorr-match`: dense matches between two image files.

  semcorr-match --workdir=runs/sfnet_quick --source=a.jpg --target=b.jpg \
    [--keypoints=points.csv] [--step=N] --output=out/match.png

Writes `out/match.png` (source with keypoints, target with the transferred
keypoints, source warped into the target frame, flow colour map, the method's
extra maps), `out/match_mapping.npy` (mapping_st: (H_s, W_s, 2) float32, for
every source pixel the matching (x, y) in target pixels, x first) and, with
`--keypoints`, `out/match_keypoints.csv` (x_source,y_source,x_target,y_target).
For methods with confidence maps (CAMNet) the picture shows them on a fixed
[0, 1] scale (and, with base mappings, a second row of the base flow), and
`out/match_confidence.npy` holds confidence_st: (H_s, W_s) float32 in [0, 1],
the confidence of each source pixel's match.

Images are read with Pillow as RGB, at any size; `skimage:<name>` is a photo
bundled with scikit-image (e.g. `skimage:chelsea`), `skimage:<name>_warped`
the same photo under a fixed affine warp. The keypoints CSV has one `x,y` row
per point (pixels of the source, x first) and an optional header.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
import numpy as np

from semcorr_jax.cli import common
from semcorr_jax.errors import SemcorrError

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the flags once (several tools may share a process in tests)."""
  defs = (
      ('string', 'workdir', None, 'a semcorr-train workdir'),
      ('string', 'source', None, 'source image file or skimage:<name>'),
      ('string', 'target', None, 'target image file or skimage:<name>'),
      ('string', 'keypoints', None, 'optional CSV of source keypoints x,y'),
      ('string', 'output', None, 'output PNG; .npy/.csv are written beside'),
      ('integer', 'step', None, 'checkpoint step (default: the latest)'),
  )
  for kind, name, default, help_text in defs:
    if name not in FLAGS:
      getattr(flags, f'DEFINE_{kind}')(name, default, help_text)


_define_flags()


def output_paths(output: str) -> dict[str, str]:
  """`out/m.png` -> {'png': out/m.png, 'npy': out/m_mapping.npy, 'csv': ...,
  'confidence': out/m_confidence.npy}."""
  stem = os.path.splitext(output)[0]
  return {'png': output, 'npy': f'{stem}_mapping.npy',
          'csv': f'{stem}_keypoints.csv',
          'confidence': f'{stem}_confidence.npy'}


def default_points(height: int, width: int, n: int = 4) -> np.ndarray:
  """An n x n grid of points over the central 70 % of an image (for drawing)."""
  xs = np.linspace(0.15 * (width - 1), 0.85 * (width - 1), n)
  ys = np.linspace(0.15 * (height - 1), 0.85 * (height - 1), n)
  gx, gy = np.meshgrid(xs, ys, indexing='xy')
  return np.stack([gx.ravel(), gy.ravel()], axis=-1)


def match_files(workdir: str, source: str, target: str, output: str,
                keypoints: str | None = None, step: int | None = None
                ) -> dict[str, str]:
  """Library form of the tool: reads, matches, writes; returns the paths.

  Inputs are all checked before the model loads, and nothing is written
  until the match succeeded.

  Raises:
    SemcorrError: bad input file, output path or workdir.
  """
  if not output or not output.lower().endswith('.png'):
    raise SemcorrError(f'--output must name a .png file, got {output!r}')
  src = common.read_image(source, 'source')
  tgt = common.read_image(target, 'target')
  points_s = common.read_keypoints_csv(keypoints) if keypoints else None
  out_dir = os.path.dirname(os.path.abspath(output))
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise SemcorrError(f'cannot write {output!r}: {out_dir!r} is a file')
  if not os.path.isdir(workdir or ''):
    raise SemcorrError(f'workdir {workdir!r}: no such folder')
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise SemcorrError(f'{os.path.join(workdir, "config.json")} not found: is '
                       f'{workdir!r} a semcorr-train workdir?')

  # Imported here: JAX, Orbax and the models load only for valid inputs.
  from semcorr_jax import api  # pylint: disable=g-import-not-at-top
  from semcorr_jax.evaluation import keypoints as kp  # pylint: disable=g-import-not-at-top
  from semcorr_jax.evaluation import visualize  # pylint: disable=g-import-not-at-top
  with common.native_stderr_held():  # a failed restore is one line
    matcher = api.load(workdir, step)
  common.hide_gpus_from_tensorflow(import_if_needed=False)
  result = matcher.match(src, tgt)
  drawn_s = points_s if points_s is not None else default_points(
      *src.shape[:2])
  drawn_t = kp.transfer_keypoints(result['mapping_st'], drawn_s)
  extras = {k: v for k, v in result.items()
            if not k.startswith(('mapping_', 'flow_')) and v.ndim in (2, 3)
            and (v.ndim == 2 or v.shape[-1] == 1)}

  paths = output_paths(output)
  os.makedirs(out_dir, exist_ok=True)
  visualize.draw_match(  # atomic write
      paths['png'], src, tgt, result['mapping_st'], result['mapping_ts'],
      points_s=drawn_s, points_t=drawn_t, extra_maps=extras,
      title=f'{source} -> {target} (step {matcher.step})',
      base_mapping_st=result.get('base_mapping_st'),
      base_mapping_ts=result.get('base_mapping_ts'))
  common.save_npy(paths['npy'], result['mapping_st'].astype(np.float32))
  written = {'png': paths['png'], 'npy': paths['npy']}
  if 'confidence_st' in result:
    written['confidence'] = common.save_npy(
        paths['confidence'], result['confidence_st'].astype(np.float32))
  if points_s is not None:
    written['csv'] = common.write_keypoints_csv(paths['csv'], points_s,
                                                drawn_t)
  return written


@common.main_wrapper
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  written = match_files(FLAGS.workdir, FLAGS.source, FLAGS.target,
                        FLAGS.output, keypoints=FLAGS.keypoints,
                        step=FLAGS.step)
  for path in written.values():
    print(f'wrote {path}')


def run() -> None:
  """Console-script entry point."""
  flags.mark_flags_as_required(['workdir', 'source', 'target', 'output'])
  common.run(main)


if __name__ == '__main__':
  run()
