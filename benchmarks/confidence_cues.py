r"""How well simple cues and CAMNet's learned confidence rank correct matches.

  .venv/bin/python benchmarks/confidence_cues.py --workdir=runs/table3/full_s0 \
      [--num_pairs=32] [--threshold=1.0]

On the held-out synthetic pairs of the run's config (the `synthetic`
evaluator's seed), every foreground cell of the source grid with defined
ground truth is labelled correct when its base flow F_b (`mapping_st`) lands
within `--threshold` cells of the truth (the training label of Eq. 6). Prints
the share of correct cells and the ROC AUC (`evaluation.confidence.roc_auc`)
of: the learned base confidence C_b (when the model has one), the
correlation's peak, its peak-to-second ratio, and minus the forward-backward
error of F_b against F_b of the other direction.
"""

from __future__ import annotations

import os
from typing import Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top
import jax  # noqa: E402  pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

from semcorr_jax.errors import SemcorrError  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import geometry  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import workdirs  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax.evaluation import confidence  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax.evaluation import synthetic  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax.losses import camnet as camnet_losses  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'A trained CAMNet workdir.',
                      required=True)
  flags.DEFINE_integer('num_pairs', 32, 'Held-out pairs.')
  flags.DEFINE_float('threshold', 1.0, 'Correct: error <= this, cells.')


def cue_scores(out: dict, batch: dict, threshold: float
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Labels and cue scores of the counted cells of one batch.

  Args:
    out: CAMNet's outputs (`model.apply`) for the batch.
    batch: the synthetic batch (dense ground truth, masks).
    threshold: correct when the error is <= this, in cells.

  Returns:
    (labels (N,) bool, {cue: (N,) scores, higher = more likely correct}).
  """
  hw = out['feature_hw']
  truth, valid = camnet_losses.ground_truth_on_grid(
      batch['mapping_st'], batch['valid_st'], hw, hw)
  counted = np.asarray(
      geometry.downsample_mask(batch['source_mask'], hw) * valid) > 0.5
  error = jnp.linalg.norm(out['base_mapping_st'] - truth, axis=-1)
  corr = out['corr_st']
  top2 = jax.lax.top_k(corr.reshape(*corr.shape[:3], -1), 2)[0]
  cues = {
      'corr peak': top2[..., 0],
      'peak / second peak': top2[..., 0] / (top2[..., 1] + 1e-6),
      '- forward-backward error': -geometry.cycle_error(
          out['base_mapping_st'], out['base_mapping_ts']),
  }
  if 'base_confidence_st' in out:
    cues['learned C_b'] = out['base_confidence_st']
  return (np.asarray(error <= threshold)[counted],
          {k: np.asarray(v)[counted] for k, v in cues.items()})


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  restored = workdirs.restore(FLAGS.workdir, for_inference=True)
  config, model = restored.config, restored.method.model
  apply = jax.jit(lambda v, s, t: model.apply(v, s, t, train=False))
  labels, scores = [], {}
  for batch in synthetic.heldout_batches(
      config.data, FLAGS.num_pairs, config.evals.synthetic.batch_size,
      config.evals.synthetic.seed):
    batch = jax.tree.map(jnp.asarray, batch)
    out = apply(restored.variables, batch['source_image'],
                batch['target_image'])
    if 'base_mapping_st' not in out or 'corr_st' not in out:
      raise app.UsageError(f'{FLAGS.workdir}: not a CAMNet model (its '
                           'outputs have no base flow and correlation)')
    batch_labels, batch_scores = cue_scores(out, batch, FLAGS.threshold)
    labels.append(batch_labels)
    for name, value in batch_scores.items():
      scores.setdefault(name, []).append(value)
  labels = np.concatenate(labels)
  print(f'{FLAGS.workdir}: {labels.size} cells, correct (<= '
        f'{FLAGS.threshold:g} cells) {labels.mean():.3f}')
  for name, values in scores.items():
    auc = confidence.roc_auc(np.concatenate(values), labels)
    print(f'  ROC AUC of {name}: {auc:.3f}')


def main_or_exit(argv: Sequence[str]) -> None:
  try:
    main(argv)
  except SemcorrError as e:  # bad workdir, config or data: one line
    raise SystemExit(f'%s: {e}' % os.path.basename(__file__)) from None


if __name__ == '__main__':
  define_flags()
  app.run(main_or_exit)
