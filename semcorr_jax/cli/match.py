r"""`semcorr-match`: dense matches between two image files.

  semcorr-match --workdir=runs/sfnet_quick --source=a.jpg --target=b.jpg \
    [--keypoints=points.csv] [--step=N] [--best] --output=out/match.png

Writes `out/match.png`: one row per flow the method declares (the primary
flow first; `semcorr_jax.outputs`), each with the target and the keypoints
it moves, the source warped into the target frame, its flow colour map and
its extras (confidence maps on a fixed [0, 1] scale); the first row starts
with the source and its keypoints. Beside it: `out/match_mapping.npy` (the
primary mapping_st: (H_s, W_s, 2) float32, for every source pixel the
matching (x, y) in target pixels, x first), one `out/match_<key>.npy` per
declared extra of the source -> target direction under its flat key (e.g.
`match_confidence.npy` = confidence_st: (H_s, W_s) float32 in [0, 1];
another flow's as `match_<flow>_confidence.npy`), and, with `--keypoints`,
`out/match_keypoints.csv` (x_source,y_source,x_target,y_target).

Images are read with Pillow as RGB, at any size, upright as their EXIF
orientation says, 16-bit ones scaled (`semcorr_jax.image_files`, as the
Python API reads files); `skimage:<name>` is a photo bundled with
scikit-image (e.g. `skimage:chelsea`), `skimage:<name>_warped` the same photo
under a fixed affine warp. The keypoints CSV has one x, y row per point
(pixels of the upright source), an optional header naming the x and y
columns, and `,`, `;`, tab or spaces between values; a point outside the
source is refused before the model loads.
"""
from __future__ import annotations

import os
from typing import Sequence

from absl import app
from absl import flags
import numpy as np

from semcorr_jax import api
from semcorr_jax import image_files
from semcorr_jax import output_paths as output_checks
from semcorr_jax import outputs
from semcorr_jax.cli import common
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import keypoints as kp
from semcorr_jax.evaluation import visualize

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
      ('bool', 'best', False, 'read the selected model (best/) instead of '
       'checkpoints/'),
  )
  for kind, name, default, help_text in defs:
    if name not in FLAGS:
      getattr(flags, f'DEFINE_{kind}')(name, default, help_text)


_define_flags()


def output_paths(output: str,
                 flows: Sequence[outputs.Flow] = outputs.DEFAULT_FLOWS
                 ) -> dict[str, str]:
  """Where `match_files` writes, by kind.

  `out/m.png` -> {'png': out/m.png, 'npy': out/m_mapping.npy, 'csv':
  out/m_keypoints.csv} and, for every extra a flow declares, its source ->
  target map: {'<flat key>': out/m_<flat key without _st>.npy}, e.g.
  'confidence_st': out/m_confidence.npy.
  """
  stem = os.path.splitext(output)[0]
  paths = {'png': output, 'npy': f'{stem}_mapping.npy',
           'csv': f'{stem}_keypoints.csv'}
  for flow in flows:
    for extra in flow.extras:
      key = outputs.key(flows, flow.name, extra, 'st')
      paths[key] = f'{stem}_{key[:-len("_st")]}.npy'
  return paths


def check_outputs(output: str, with_csv: bool,
                  flows: Sequence[outputs.Flow] = outputs.DEFAULT_FLOWS
                  ) -> None:
  """Checks that every file `match_files` writes can be written (not a
  folder; a folder that exists writable, or can be created), before any
  work."""
  for kind, path in output_paths(output, flows).items():
    if kind != 'csv' or with_csv:
      output_checks.check_writable_output(path, '--output', make_parents=True)


def default_points(height: int, width: int, n: int = 4) -> np.ndarray:
  """An n x n grid of points over the central 70 % of an image (for drawing)."""
  xs = np.linspace(0.15 * (width - 1), 0.85 * (width - 1), n)
  ys = np.linspace(0.15 * (height - 1), 0.85 * (height - 1), n)
  gx, gy = np.meshgrid(xs, ys, indexing='xy')
  return np.stack([gx.ravel(), gy.ravel()], axis=-1)


def match_files(workdir: str, source: str, target: str, output: str,
                keypoints: str | None = None, step: int | None = None,
                best: bool = False) -> dict[str, str]:
  """Library form of the tool: reads, matches, writes; returns the paths.

  Inputs and output locations are all checked before the model loads, and
  nothing is written until the match succeeded.

  Returns:
    {kind: path written}, kinds as in `output_paths`.

  Raises:
    SemcorrError: bad input file, output path or workdir.
  """
  if not output or not output.lower().endswith('.png'):
    raise SemcorrError(f'--output must name a .png file, got {output!r}')
  src = common.read_image(source, 'source')
  tgt = common.read_image(target, 'target')
  points_s = common.read_keypoints_csv(keypoints) if keypoints else None
  if points_s is not None:
    api.check_points(points_s, f'keypoints {image_files.shown(keypoints)}',
                     src.shape[:2])
  out_dir = os.path.dirname(output_checks.absolute(output))
  check_outputs(output, points_s is not None)
  if not workdir or not output_checks.as_path(workdir).is_dir():
    raise SemcorrError(f'workdir {workdir!r}: no such folder')
  config_json = output_checks.as_path(os.path.join(workdir, 'config.json'))
  if not config_json.is_file():
    raise SemcorrError(f'{os.path.join(workdir, "config.json")} not found: is '
                       f'{workdir!r} a semcorr-train workdir?')

  with common.native_stderr_held():  # a failed restore is one line
    matcher = api.load(workdir, step, best=best)
  check_outputs(output, points_s is not None, matcher.flows)
  common.hide_gpus_from_tensorflow(import_if_needed=False)
  result = matcher.match(src, tgt)
  drawn_s = points_s if points_s is not None else default_points(
      *src.shape[:2])
  drawn_t = kp.transfer_keypoints(result['mapping_st'], drawn_s)

  paths = output_paths(output, matcher.flows)
  output_checks.makedirs(out_dir)
  visualize.draw_flows(  # atomic write
      paths['png'], src, tgt, matcher.flows, result, points_s=drawn_s,
      points_t=drawn_t, title=_title(source, target, matcher.step))
  common.save_npy(paths['npy'], result['mapping_st'].astype(np.float32))
  written = {'png': paths['png'], 'npy': paths['npy']}
  for key, path in paths.items():
    if key in result:  # a declared extra the method predicted
      written[key] = common.save_npy(path, result[key].astype(np.float32))
  if points_s is not None:
    written['csv'] = common.write_keypoints_csv(paths['csv'], points_s,
                                                drawn_t)
  return written


def _title(source: str, target: str, step: int | None) -> str:
  """The picture's title: file names as text matplotlib draws verbatim."""
  names = [image_files.printable(p).replace('$', r'\$')
           for p in (source, target)]
  return f'{names[0]} -> {names[1]} (step {step})'


@common.main_wrapper
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  written = match_files(FLAGS.workdir, FLAGS.source, FLAGS.target,
                        FLAGS.output, keypoints=FLAGS.keypoints,
                        step=FLAGS.step, best=FLAGS.best)
  for path in written.values():
    print(f'wrote {image_files.printable(path)}')


def run() -> None:
  """Console-script entry point."""
  flags.mark_flags_as_required(['workdir', 'source', 'target', 'output'])
  common.run(main)


if __name__ == '__main__':
  run()
