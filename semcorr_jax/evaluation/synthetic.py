"""Held-out synthetic-pair evaluation: PCK of dense matches against exact GT.

The held-out split of the pair pipeline (`make_pair_dataset(..., 'heldout')`)
is fixed by the evaluator's `seed`, so every model of a config is scored on
the same pairs. For each pair, flow and direction:

* st: keypoints are source pixels on a stride-`keypoint_stride` grid that
  lie on the source foreground and whose ground-truth mapping lands inside
  the target (`valid_st`); the prediction reads the flow's predicted
  `mapping_st` at them (bilinear) and is compared, in target pixels, with
  the ground-truth `mapping_st`.
* ts: the same from target to source with `mapping_ts`, `target_mask` and
  `valid_ts`.

PCK follows `semcorr_jax.evaluation.pck` (d <= alpha * L; per-pair mean,
then mean over pairs). Same-image warps are easy, so results are always
reported beside an untrained model's (design.md, Evaluation).

Every declared flow is scored (`synthetic_scores`): the primary flow's keys
unprefixed, every other flow's with its prefix (`base_pck@0.1` for a flow
named 'base'), and for flows declaring a confidence the
`evaluation.confidence` metrics of the keypoints of all pairs and both
directions at the alpha_img thresholds (`confidence_auc@0.1`, ...).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from semcorr_jax import outputs
from semcorr_jax.data import pipeline
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import confidence as conf_lib
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.evaluation import per_flow
from semcorr_jax.evaluation import predict
from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import synthetic_scores

# What the synthetic scores read from a batch besides the images.
DENSE_KEYS = ('mapping_st', 'mapping_ts', 'source_mask', 'target_mask',
              'valid_st', 'valid_ts')


def check_data(data_config: Any) -> None:
  """Fails unless `data_config`'s source yields dense ground truth.

  Raises:
    SemcorrError: an unknown source, or one without `DENSE_KEYS` (real
      image pairs).
  """
  spec = pipeline.batch_spec(data_config, 1)
  missing = [k for k in DENSE_KEYS if k not in spec]
  if missing:
    raise SemcorrError(
        f'data.source={data_config.source!r} yields no dense ground truth '
        f'(no {", ".join(missing)}); synthetic evaluation needs synthetic '
        'pairs: score real pairs with a benchmark evaluator')


def heldout_batches(data_config: Any, num_pairs: int, batch_size: int,
                    seed: int) -> Iterator[dict[str, np.ndarray]]:
  """Yields the first `num_pairs` held-out pairs as numpy batches.

  Pair i is the same whatever `num_pairs` and `batch_size` are (the pipeline
  fixes pairs by (seed, split, index)). Every batch has
  `min(batch_size, num_pairs)` pairs except possibly the last.
  """
  batch_size = max(1, min(batch_size, num_pairs))
  # The pipeline drops partial batches: ask for whole ones, cut afterwards.
  num_batches = -(-num_pairs // batch_size)
  ds = pipeline.make_pair_dataset(
      data_config, 'heldout', batch_size=batch_size, seed=seed, repeat=False,
      num_examples=num_batches * batch_size)
  seen = 0
  for batch in ds.as_numpy_iterator():
    n = min(len(batch['source_image']), num_pairs - seen)
    if n <= 0:
      break
    yield {k: np.asarray(v)[:n] for k, v in batch.items()}
    seen += n


def conventions(data_config: Any, stride: int, seed: int,
                flows: Sequence[outputs.Flow] = outputs.DEFAULT_FLOWS
                ) -> dict[str, str]:
  """The evaluation protocol in words, stored beside the numbers."""
  h, w = data_config.image_size
  conv = {
      'data': (f"'heldout' split of the {data_config.get('source', '?')} "
               f'synthetic pairs, seed {seed}'),
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
  conv.update(per_flow.conventions(flows, 'keypoints'))
  if any(per_flow.has_confidence(f) for f in flows):
    conv['confidence_*'] = (conf_lib.CONVENTION
                            + ' (L = max(H, W), alpha_img)')
  return conv


def evaluate_synthetic(predict_fn: predict.PredictFn, variables: Any,
                       data_config: Any, *,
                       flows: Sequence[outputs.Flow] = outputs.DEFAULT_FLOWS,
                       num_pairs: int = 64, batch_size: int = 8,
                       seed: int = 1234,
                       alphas: Sequence[float] = pck_lib.DEFAULT_ALPHAS,
                       keypoint_stride: int = 8,
                       confidence_split: float = conf_lib.DEFAULT_SPLIT,
                       num_pictures: int = 0) -> dict[str, Any]:
  """PCK and end-point error of a model on the held-out synthetic pairs.

  Args:
    predict_fn: `(variables, source, target) -> flat outputs` of every flow
      in `flows` (a method's `predict`, jitted: one compilation for any
      number of variable sets).
    variables: the model variables.
    data_config: the run's `config.data` (a source with dense ground truth).
    flows: the flows the method declares; each is scored.
    num_pairs: held-out pairs to score.
    batch_size: pairs per predict call (the last batch is filled up).
    seed: data seed of the held-out pairs.
    alphas: PCK alphas.
    keypoint_stride: keypoint grid stride in pixels.
    confidence_split: confidence >= it counts as high.
    num_pictures: keep the first pairs and their outputs (up to this many)
      under `reports.ARTEFACTS` as {'batch', 'prediction'}, for pictures.

  Returns:
    A JSON-ready dict (apart from the artefacts): `pck@<alpha>` (alpha_img,
    mean of both directions), `pck_st@`, `pck_ts@`, `pck_bbox@`,
    `pck_bbox_st@`, `pck_bbox_ts@`, `epe`, `epe_st`, `epe_ts`, `num_pairs`,
    `num_keypoints(_st/_ts)` of the primary flow; the same keys of every
    other flow with its prefix; for flows with a confidence the confidence
    metrics `<prefix>confidence_*` and `confidence_split`; `alphas`,
    `keypoint_stride`, `flows` (`per_flow.describe`) and `conventions`.
  """
  flows = outputs.check(flows)
  alphas = tuple(float(a) for a in alphas)
  num_pairs, batch_size = int(num_pairs), int(batch_size)
  if num_pairs < 1:
    raise SemcorrError(f'num_pairs must be >= 1, got {num_pairs}')
  stride = int(keypoint_stride)
  pairs, first = [], None
  for batch in heldout_batches(data_config, num_pairs, batch_size, seed):
    pred = predict.predict_padded(predict_fn, variables, batch, batch_size)
    pairs.extend(synthetic_scores.score_batch(batch, pred, stride, alphas,
                                              flows))
    if first is None and num_pictures > 0:
      first = {'batch': {k: v[:num_pictures] for k, v in batch.items()},
               'prediction': {k: v[:num_pictures] for k, v in pred.items()}}
  results = synthetic_scores.summarize(
      pairs, alphas, image_hw=tuple(data_config.image_size),
      confidence_split=float(confidence_split), flows=flows)
  results['alphas'] = list(alphas)
  results['keypoint_stride'] = stride
  results['flows'] = per_flow.describe(flows)
  results['conventions'] = conventions(data_config, stride, seed, flows)
  if first is not None:
    results[reports.ARTEFACTS] = first
  return results
