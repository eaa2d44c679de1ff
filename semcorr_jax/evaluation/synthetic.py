"""Held-out synthetic-pair evaluation: PCK of dense matches against exact GT.

The held-out split of the pair pipeline (`make_pair_dataset(..., 'heldout')`)
is fixed by `config.eval.seed`, so every model of a config is scored on the
same pairs. For each pair and direction:

* st: keypoints are source pixels on a stride-`config.eval.keypoint_stride`
  grid that lie on the source foreground and whose ground-truth mapping lands
  inside the target (`valid_st`); the prediction reads the predicted
  `mapping_st` at them (bilinear) and is compared, in target pixels, with the
  ground-truth `mapping_st`.
* ts: the same from target to source with `mapping_ts`, `target_mask` and
  `valid_ts`.

PCK follows `semcorr_jax.evaluation.pck` (d <= alpha * L; per-pair mean,
then mean over pairs). Same-image warps are easy, so results are always
reported beside an untrained model's (design.md, Evaluation).

Methods with more outputs (CAMNet) get more, flat keys: with
'base_mapping_st'/'_ts' every score again for the base mappings, prefixed
'base_' (`base_pck@0.1`, `base_epe`, ...; the unprefixed keys are always the
final mapping); with 'confidence_st'/'_ts' (and 'base_confidence_*') the
`evaluation.confidence` metrics of the keypoints of all pairs and both
directions at the alpha_img thresholds (`confidence_auc@0.1`,
`base_confidence_pck_high@0.1`, ...).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import confidence as conf_lib
from semcorr_jax.evaluation.reports import DEFAULT_ALPHAS
from semcorr_jax.evaluation.reports import alpha_key  # noqa: F401
from semcorr_jax.evaluation.reports import format_comparison  # noqa: F401
from semcorr_jax.evaluation.reports import read_eval  # noqa: F401
from semcorr_jax.evaluation.reports import write_eval
from semcorr_jax.evaluation.synthetic_scores import score_batch
from semcorr_jax.evaluation.synthetic_scores import summarize

BENCHMARKS = ('synthetic',)
PredictFn = Callable[[Any, np.ndarray, np.ndarray], Mapping[str, Any]]


def jitted_predict(method: Any) -> PredictFn:
  """`jax.jit(method.predict)`, kept on the method (compiled once per shape)."""
  fn = getattr(method, '_semcorr_jitted_predict', None)
  if fn is None:
    fn = jax.jit(method.predict)
    try:
      method._semcorr_jitted_predict = fn  # pylint: disable=protected-access
    except AttributeError:  # slots or frozen: just do not cache
      pass
  return fn


def heldout_batches(config: ml_collections.ConfigDict, num_pairs: int,
                    batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Yields the first `num_pairs` held-out pairs as numpy batches.

  Pair i is the same whatever `num_pairs` and `batch_size` are (the pipeline
  fixes pairs by (seed, split, index)). Every batch has
  `min(batch_size, num_pairs)` pairs except possibly the last.
  """
  # Imported lazily: tf.data is only needed when pairs are generated.
  from semcorr_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  batch_size = max(1, min(batch_size, num_pairs))
  # The pipeline drops partial batches: ask for whole ones, cut afterwards.
  num_batches = -(-num_pairs // batch_size)
  ds = pipeline.make_pair_dataset(
      config.data, 'heldout', batch_size=batch_size,
      seed=config.eval.get('seed', 0), repeat=False,
      num_examples=num_batches * batch_size)
  seen = 0
  for batch in ds.as_numpy_iterator():
    n = min(len(batch['source_image']), num_pairs - seen)
    if n <= 0:
      break
    yield {k: np.asarray(v)[:n] for k, v in batch.items()}
    seen += n


def predict_padded(predict_fn: PredictFn, variables: Any,
                   batch: Mapping[str, np.ndarray], batch_size: int
                   ) -> dict[str, np.ndarray]:
  """Runs `predict_fn` on a batch padded to `batch_size` (one compilation).

  Returns:
    The prediction as numpy arrays, cut back to the batch's own size.
  """
  n = len(batch['source_image'])
  pad = max(batch_size - n, 0)

  def padded(x):
    return np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x

  out = predict_fn(variables, padded(batch['source_image']),
                   padded(batch['target_image']))
  return {k: np.asarray(v)[:n] for k, v in jax.device_get(dict(out)).items()
          if np.ndim(v) > 0}


def conventions(config: ml_collections.ConfigDict, stride: int
                ) -> dict[str, str]:
  """The evaluation protocol in words, stored beside the numbers."""
  h, w = config.data.image_size
  return {
      'data': (f"'heldout' split of the {config.data.get('source', '?')} "
               f"synthetic pairs, seed {config.eval.get('seed', 0)}"),
      'resolution': f'{h}x{w} (the model input size); pixels x first',
      'keypoints': (f'pixels on a stride-{stride} grid (offset {stride // 2}) '
                    'on the foreground mask where the ground truth lands '
                    'inside the other image'),
      'st': ('source keypoints -> target by the predicted mapping_st, '
             'compared with the ground-truth mapping_st in target pixels'),
      'ts': ('target keypoints -> source by the predicted mapping_ts, '
             'compared with the ground-truth mapping_ts in source pixels'),
      'read_out': 'bilinear read of the predicted mapping at the keypoints',
      'pck': ('correct if distance <= alpha * L (ties correct, weakalign); '
              'mean over keypoints per pair, then over pairs (pairs '
              'without keypoints skipped)'),
      'pck@alpha': 'alpha_img: L = max(H, W); mean of the st and ts values',
      'pck_bbox@alpha': ('alpha_bbox: L = max(h, w) of the foreground box '
                         'of the image compared in; mean of st and ts'),
      'epe': 'mean end-point error in pixels (per pair, then over pairs)',
  }


def evaluate_synthetic(method: Any, variables: Any,
                       config: ml_collections.ConfigDict, *,
                       num_pairs: int | None = None,
                       batch_size: int | None = None,
                       alphas: Sequence[float] | None = None,
                       predict_fn: PredictFn | None = None) -> dict[str, Any]:
  """PCK and end-point error of a method on the held-out synthetic pairs.

  Args:
    method: a `Method` (only `predict` is used, through `predict_fn`).
    variables: its inference variables.
    config: the run's config (`data`, `eval.{num_pairs, batch_size, seed,
      alphas, keypoint_stride}`).
    num_pairs: pairs to evaluate; None = `config.eval.num_pairs`.
    batch_size: pairs per predict call; None = `config.eval.batch_size`.
    alphas: PCK alphas; None = `config.eval.alphas` (default 0.05/0.1/0.15).
    predict_fn: `(variables, source, target) -> outputs`; None =
      `jax.jit(method.predict)` (cached per method) on one device. Pass one
      jitted function to score several variable sets without recompiling.

  Returns:
    A JSON-ready dict: `pck@<alpha>` (alpha_img, mean of both directions),
    `pck_st@`, `pck_ts@`, `pck_bbox@`, `pck_bbox_st@`, `pck_bbox_ts@`, `epe`,
    `epe_st`, `epe_ts`, `num_pairs`, `num_keypoints(_st/_ts)`, `alphas`,
    `conventions` (strings); when the method predicts them, the same keys
    of the base mappings prefixed `base_` and the confidence metrics
    `confidence_*` / `base_confidence_*` with `confidence_split`
    (`config.eval.confidence_split`, default 0.5; module docstring).
  """
  ev = config.eval
  num_pairs = int(num_pairs or ev.get('num_pairs', 64))
  batch_size = int(batch_size or ev.get('batch_size', 8))
  alphas = tuple(alphas or ev.get('alphas', None) or DEFAULT_ALPHAS)
  stride = int(ev.get('keypoint_stride', 8))
  if predict_fn is None:
    predict_fn = jitted_predict(method)
    variables = to_one_device(variables)
  pairs = []
  for batch in heldout_batches(config, num_pairs, batch_size):
    pred = predict_padded(predict_fn, variables, batch, batch_size)
    pairs.extend(score_batch(batch, pred, stride, alphas))
  results = summarize(
      pairs, alphas, image_hw=tuple(config.data.image_size),
      confidence_split=float(ev.get('confidence_split',
                                    conf_lib.DEFAULT_SPLIT)))
  results['alphas'] = list(alphas)
  results['keypoint_stride'] = stride
  results['conventions'] = conventions(config, stride)
  if any(k.startswith('base_') for k in results):
    results['conventions']['base_*'] = conf_lib.CONVENTIONS['base_*']
  if any(k.startswith(('confidence_', 'base_confidence_')) for k in results):
    results['conventions']['confidence_*'] = (
        conf_lib.CONVENTIONS['confidence_*'] + ' (L = max(H, W), alpha_img)')
  return results


def to_one_device(tree: Any) -> Any:
  """Copies fully addressable arrays of `tree` onto the first local device."""
  device = jax.local_devices()[0]
  leaves = jax.tree.leaves(tree)
  if all(getattr(x, 'is_fully_addressable', True) for x in leaves):
    return jax.device_put(tree, device)
  return tree


# --- a trained workdir, end to end -------------------------------------------
def untrained_variables(method: Any, config: ml_collections.ConfigDict
                        ) -> Any:
  """Inference variables of the method at initialisation (no training).

  Initialised exactly as `semcorr_jax.train` does (`init_state` with the first
  half of `jax.random.split(jax.random.key(config.seed))`, then
  `load_pretrained`), so it is the run's own starting point.
  """
  from semcorr_jax import checkpointing  # pylint: disable=g-import-not-at-top
  batch = jax.tree.map(np.asarray, checkpointing.dummy_batch(config))
  init_rng, _ = jax.random.split(jax.random.key(config.get('seed', 0)))
  state = jax.jit(method.init_state)(init_rng, batch)
  variables = method.load_pretrained(
      jax.device_get(method.inference_variables(state)))
  return to_one_device(variables)


def evaluate_workdir(workdir: str, benchmark: str = 'synthetic',
                     step: int | None = None, num_pairs: int | None = None,
                     *, num_pictures: int = 4,
                     restored: tuple[Any, ...] | None = None
                     ) -> dict[str, Any]:
  """Scores a trained workdir and its untrained twin; writes the reports.

  Writes `workdir/eval/<benchmark>.json` (`{'benchmark', 'step', 'trained',
  'untrained'}`), `<benchmark>.md` (the two side by side),
  `<benchmark>_pairs.png` (held-out pairs with the trained model's matches)
  and the first two held-out pairs as `eval/pairs/pair_00i_{source,target}.png`.

  Args:
    workdir: a `semcorr-train` workdir.
    benchmark: only 'synthetic' (the held-out synthetic pairs) so far.
    step: checkpoint step; None = the latest.
    num_pairs: held-out pairs; None = `config.eval.num_pairs`.
    num_pictures: pairs drawn in `<benchmark>_pairs.png`.
    restored: `checkpointing.restore_for_inference(workdir, step)` if the
      caller already has it.

  Returns:
    The dict written to the JSON file (NaNs as float NaN).

  Raises:
    SemcorrError: unknown benchmark, not a workdir, missing or mismatched
      checkpoint.
  """
  if benchmark not in BENCHMARKS:
    raise SemcorrError(f'evaluate_workdir scores the synthetic benchmark '
                       f'only, not {benchmark!r}; real benchmarks: '
                       'semcorr_jax.evaluation.runner.evaluate_benchmark')
  # Imported lazily: restoring needs Orbax and the method registry.
  from semcorr_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from semcorr_jax.evaluation import visualize  # pylint: disable=g-import-not-at-top
  config, method, variables, step = (
      restored or checkpointing.restore_for_inference(workdir, step))
  predict_fn = jitted_predict(method)  # shared: one compilation for both
  variables = to_one_device(variables)
  results: dict[str, Any] = {'benchmark': benchmark, 'step': int(step)}
  results['trained'] = evaluate_synthetic(
      method, variables, config, num_pairs=num_pairs, predict_fn=predict_fn)
  results['untrained'] = evaluate_synthetic(
      method, untrained_variables(method, config), config,
      num_pairs=num_pairs, predict_fn=predict_fn)
  write_eval(workdir, benchmark, results)

  out_dir = os.path.join(workdir, 'eval')
  batch_size = int(config.eval.get('batch_size', 8))
  batch = next(heldout_batches(config, max(num_pictures, 2), batch_size))
  pred = predict_padded(predict_fn, variables, batch, batch_size)
  visualize.draw_eval_pairs(
      os.path.join(out_dir, f'{benchmark}_pairs.png'), batch, pred,
      num_pairs=num_pictures,
      title=f'held-out pairs, trained model (step {step})')
  visualize.write_pair_images(os.path.join(out_dir, 'pairs'), batch, 2)
  return results
