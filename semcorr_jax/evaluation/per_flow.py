"""Scores of every declared flow: prefixes, views and merges of results.

Evaluators score each flow a method declares (`semcorr_jax.outputs`): the
primary flow's metrics are unprefixed (`pck@0.1`), another flow `f`'s carry
its prefix (`f_pck@0.1`), in the summary and in nested groups alike
(`per_category[c]['f_pck@0.1']`). Results say which flows they hold under
'flows' (`describe`), so reports can lay them out without knowing a method.

A scorer tells which of its keys depend on the flow with an
`is_flow_metric(key)` predicate (e.g. 'pck@0.1' does, 'num_pairs' or
'category' does not); `merge` and `view` use it to combine and split results.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import confidence as conf_lib

FlowKey = Callable[[str], bool]


def describe(flows: Sequence[outputs.Flow]) -> list[dict[str, Any]]:
  """JSON-ready [{'name', 'prefix', 'extras', 'description'}], primary first."""
  return [{'name': f.name, 'prefix': outputs.prefix(flows, f.name),
           'extras': list(f.extras), 'description': f.description}
          for f in flows]


def described(results: Mapping[str, Any]) -> list[dict[str, Any]]:
  """`results['flows']`, or the one default flow for results without it."""
  return list(results.get('flows') or describe(outputs.DEFAULT_FLOWS))


def split(flows: Sequence[outputs.Flow], prediction: Mapping[str, Any]
          ) -> dict[str, dict[str, Any]]:
  """`outputs.split`, with a SemcorrError when a declared mapping is missing."""
  try:
    return outputs.split(flows, prediction)
  except KeyError as e:
    raise SemcorrError('the prediction does not hold what the method '
                       f'declares: {e.args[0]}') from e


def has_confidence(flow: outputs.Flow) -> bool:
  return outputs.CONFIDENCE in flow.extras


def conventions(flows: Sequence[outputs.Flow], what: str) -> dict[str, str]:
  """{'<prefix>*': text} for every flow but the primary one.

  Args:
    flows: the declared flows.
    what: what was scored, e.g. 'keypoints' or 'pairs'.
  """
  out = {}
  for f in flows[1:]:
    p = outputs.prefix(flows, f.name)
    about = f' ({f.description})' if f.description else ''
    out[f'{p}*'] = (f"the same {what} and protocol scored with flow "
                    f"'{f.name}'{about}: '{p}mapping_st'/'_ts' instead of the "
                    'primary mappings')
  return out


def view(results: Mapping[str, Any], prefix: str, is_flow_metric: FlowKey
         ) -> dict[str, Any]:
  """The results of one flow under unprefixed names, nested dicts included.

  Flow metrics of the primary flow are dropped and replaced by the flow's
  own (`<prefix><key>`); everything else is kept.
  """
  if not prefix:
    return dict(results)
  out = {}
  for key, value in results.items():
    if isinstance(value, Mapping):
      out[key] = view(value, prefix, is_flow_metric)
    elif key.startswith(prefix) and is_flow_metric(key[len(prefix):]):
      out[key[len(prefix):]] = value
    elif not is_flow_metric(key):
      out.setdefault(key, value)
  return out


def merge(primary: dict[str, Any], other: Mapping[str, Any], prefix: str,
          is_flow_metric: FlowKey) -> dict[str, Any]:
  """Adds another flow's results to the primary flow's, in place.

  Flow metrics of `other` go in as `<prefix><key>` at the same nesting
  level; other keys missing from `primary` (e.g. a conventions entry only
  that flow has) are copied as they are.

  Returns:
    `primary`.
  """
  for key, value in other.items():
    mine = primary.get(key)
    if isinstance(value, Mapping) and isinstance(mine, dict):
      merge(mine, value, prefix, is_flow_metric)
    elif is_flow_metric(key):
      primary[prefix + key] = value
    elif key not in primary:
      primary[key] = value
  return primary


def confidence_rows(results: Mapping[str, Any], label: str = ''
                    ) -> list[tuple[str, dict[str, Any]]]:
  """(row label, unprefixed confidence metrics) of every flow that has them.

  Args:
    results: results holding '<prefix>confidence_*' keys and 'flows'.
    label: prepended to the flow names, e.g. 'trained'.
  """
  rows = []
  for f in described(results):
    metrics = conf_lib.unprefixed(results, f['prefix'] + conf_lib.PREFIX)
    metrics.pop('split', None)
    if metrics:
      rows.append((f'{label}, {f["name"]}' if label else f['name'], metrics))
  return rows
