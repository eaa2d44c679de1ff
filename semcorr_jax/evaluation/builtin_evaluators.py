"""The built-in evaluator types: 'synthetic' and 'benchmark'.

Settings and files: `semcorr_jax.evaluation.evaluators`.
"""

from __future__ import annotations

import math
import os
from typing import Any

from semcorr_jax import outputs
from semcorr_jax.data import benchmarks
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import benchmark_reports
from semcorr_jax.evaluation import confidence as conf_lib
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.evaluation import per_flow
from semcorr_jax.evaluation import predict
from semcorr_jax.evaluation import protocol as protocol_lib
from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import runner
from semcorr_jax.evaluation import synthetic
from semcorr_jax.evaluation import synthetic_scores
from semcorr_jax.evaluation import visualize
from semcorr_jax.evaluation.evaluator import Evaluator


class SyntheticEvaluator(Evaluator):
  """Held-out synthetic pairs with dense ground truth (`synthetic`)."""

  SETTINGS = {'num_pairs': 64, 'batch_size': 8, 'seed': 1234,
              'alphas': pck_lib.DEFAULT_ALPHAS, 'keypoint_stride': 8,
              'confidence_split': conf_lib.DEFAULT_SPLIT, 'num_pictures': 4}

  def validate(self) -> None:
    s = self.settings
    for key in ('num_pairs', 'batch_size', 'keypoint_stride'):
      if int(s[key]) < 1:
        raise SemcorrError(f'evals.{self.name}.{key} must be >= 1, got '
                           f'{s[key]}')
    _check_alphas(self, s['alphas'])
    synthetic.check_data(self.config.data)

  def metric_names(self) -> set[str]:
    return synthetic_scores.metric_names(self.settings['alphas'], self.flows)

  def run(self, predict_fn, variables, progress=False):
    del progress  # a few batches: no bar
    s = self.settings
    return synthetic.evaluate_synthetic(
        predict_fn, predict.to_one_device(variables), self.config.data,
        flows=self.flows, num_pairs=s['num_pairs'],
        batch_size=s['batch_size'], seed=s['seed'], alphas=s['alphas'],
        keypoint_stride=s['keypoint_stride'],
        confidence_split=s['confidence_split'],
        num_pictures=max(int(s['num_pictures']), 2))  # 2: `write_inputs`

  def markdown(self, results, untrained=None, step=None, label=''):
    doc = {'step': step, 'trained': results, 'untrained': untrained}
    return reports.comparison_markdown(
        f'{self.name}_{label}' if label else self.name, doc)

  def summary(self, results, untrained=None):
    return reports.format_comparison(results, untrained)

  def file_writers(self, out_dir, stem, results, step, trained):
    kept = results.get(reports.ARTEFACTS)
    if not trained or not kept or int(self.settings['num_pictures']) < 1:
      return []
    title = 'held-out pairs, trained model' + (
        f' (step {step})' if step is not None else '')
    return [(os.path.join(out_dir, f'{stem}_pairs.png'),
             lambda p: visualize.draw_eval_pairs(
                 p, kept['batch'], kept['prediction'],
                 num_pairs=int(self.settings['num_pictures']), title=title,
                 flows=self.flows))]

  def write_inputs(self, out, results):
    kept = results.get(reports.ARTEFACTS)
    if not kept:
      return []
    # Two held-out pairs as image files, e.g. for semcorr-match.
    return visualize.write_pair_images(os.path.join(out, 'pairs'),
                                       kept['batch'], 2)


PROTOCOL_FIELDS = tuple(k for k in protocol_lib.default_protocol('pf_pascal')
                        if k != 'benchmark')


class BenchmarkEvaluator(Evaluator):
  """A split of a TFDS benchmark through `evaluation.runner`."""

  SETTINGS = {'benchmark': '', 'split': None, 'data_dir': None,
              'tfds_dir': None, 'num_pairs': None, 'num_worst': 6,
              'protocol': None, **{k: None for k in PROTOCOL_FIELDS}}

  @property
  def benchmark(self) -> str:
    return str(self.settings['benchmark'])

  @property
  def split(self) -> str:
    return self.settings['split'] or runner.default_split(self.benchmark)

  @property
  def protocol(self):
    """The protocol: the benchmark's default, the preset, then fields."""
    s = self.settings
    try:
      return runner.build_protocol(
          self.benchmark, s['protocol'],
          **{k: s[k] for k in PROTOCOL_FIELDS})
    except SemcorrError as e:
      raise SemcorrError(f'evals.{self.name}: {e}') from e

  @property
  def model_size(self) -> tuple[int, int]:
    """The size the model runs at: its training size, unless the protocol
    fixes the input (`input_size` + 2 `pad`)."""
    protocol = self.protocol
    if protocol.input_size is None:
      return tuple(int(v) for v in self.config.data.image_size)
    return tuple(int(v) + 2 * int(protocol.pad) for v in protocol.input_size)

  def validate(self) -> None:
    if self.benchmark not in benchmarks.DATASETS:
      raise SemcorrError(
          f'evals.{self.name}.benchmark={self.benchmark!r}: unknown '
          f'benchmark; known: {", ".join(benchmarks.DATASETS)}')
    splits = benchmarks.info(self.benchmark).splits
    if self.split not in splits:
      raise SemcorrError(f'evals.{self.name}.split={self.split!r}: '
                         f'{self.benchmark} has {", ".join(splits)}')
    num_pairs = self.settings['num_pairs']
    if num_pairs is not None and int(num_pairs) < 1:
      raise SemcorrError(f'evals.{self.name}.num_pairs must be >= 1, got '
                         f'{num_pairs}')
    protocol = self.protocol
    protocol_lib.resolve_input_size(protocol, self.model_size)
    runner.check_data_dir(self.benchmark, self.settings['data_dir'],
                          self.setting('data_dir'))

  def prepare(self) -> None:
    runner.prepare_dataset(self.benchmark, self.split,
                           data_dir=self.settings['data_dir'],
                           tfds_dir=self.settings['tfds_dir'])

  def describe(self):
    return {'type': self.type, 'benchmark': self.benchmark,
            'split': self.split}

  def metric_names(self) -> set[str]:
    scorer = runner.scorer_of(self.benchmark)
    protocol = self.protocol
    names = set()
    for flow in self.flows:
      p = outputs.prefix(self.flows, flow.name)
      one = scorer.metric_names(protocol, per_flow.has_confidence(flow))
      names |= {p + k if scorer.is_flow_metric(k) else k for k in one}
    return names

  def headline(self) -> list[str]:
    scorer = runner.scorer_of(self.benchmark)
    main = sorted(k for k in scorer.metric_names(self.protocol)
                  if scorer.is_flow_metric(k))
    return [outputs.prefix(self.flows, f.name) + k for f in self.flows
            for k in main]

  def run(self, predict_fn, variables, progress=False):
    s = self.settings
    scored = runner.score_benchmark(
        predict.bind(predict_fn, predict.to_one_device(variables)),
        self.benchmark, model_size=self.model_size, split=self.split,
        data_dir=s['data_dir'], tfds_dir=s['tfds_dir'],
        protocol=self.protocol, num_pairs=s['num_pairs'], progress=progress,
        num_worst=int(s['num_worst']), flows=self.flows,
        data_dir_setting=self.setting('data_dir'))
    results = {'benchmark': self.benchmark, 'split': self.split,
               **scored.results['summary'],
               'protocol': scored.results['protocol']}
    results[reports.ARTEFACTS] = scored
    return results

  def markdown(self, results, untrained=None, step=None, label=''):
    model = [f'Model: {label}.'] if label else []
    model += [f'Checkpoint step {step}.'] if step is not None else []
    head = [f'# {self.name}: {self.benchmark} ({self.split})', '']
    head += [' '.join(model), ''] if model else []
    head += ['Protocol:', ''] + benchmark_reports.protocol_lines(
        self.protocol.to_dict()) + ['']
    scorer = runner.scorer_of(self.benchmark)
    text = '\n'.join(head) + '\n' + benchmark_reports.summary_markdown(
        scorer, results)
    if untrained is not None:
      text += ('\n## Untrained model\n\nThe model the run started from '
               '(same seed, pretrained weights if configured), no '
               'training.\n\n'
               + benchmark_reports.summary_markdown(scorer, untrained))
    return text

  def file_writers(self, out_dir, stem, results, step, trained):
    scored = results.get(reports.ARTEFACTS)
    if scored is None:
      return []
    paths = benchmark_reports.stem_paths(out_dir, stem)
    rows = benchmark_reports.output_writers(paths, scored, {}, '')
    return [w for w in rows if w[0] in (paths['csv'], paths['png'])]


def _check_alphas(ev: Evaluator, alphas: Any) -> None:
  try:
    values = [float(a) for a in alphas]
  except (TypeError, ValueError):
    values = []
  if not values or not all(0 < a < math.inf for a in values):
    raise SemcorrError(f'evals.{ev.name}.alphas must be positive numbers, '
                       f'got {alphas!r}')
