"""Named outputs: the flows a method predicts, declared once.

A method declares `flows`, a tuple of `Flow`s. The first is the *primary* flow:
the one a user gets by default (`mapping_st`, `mapping_ts`). Every other flow
(an intermediate estimate worth scoring on its own, e.g. a base flow before
refinement or a guidance flow) is spelled with its name as a prefix. `predict`
returns one flat dict, so it stays a jittable function of arrays:

  primary flow:   mapping_st, mapping_ts, <extra>_st, <extra>_ts
  other flow f:   f_mapping_st, f_mapping_ts, f_<extra>_st, f_<extra>_ts

Extras are per-pixel maps that go with a flow, one per direction, at the
resolution of the images. Generic code knows one kind of extra by meaning:
`confidence` (in [0, 1], higher = more likely correct), which evaluators score
(ROC AUC, PCK of high/low-confidence points) and pictures draw. Unknown extras
are carried along untouched.

Evaluation metrics of a flow take the same prefix (`pck@0.1` for the primary
flow, `f_pck@0.1` for flow `f`), so generic code loops over the declared flows
and never spells a method's flow names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

DIRECTIONS = ('st', 'ts')
MAPPING = 'mapping'
CONFIDENCE = 'confidence'


@dataclasses.dataclass(frozen=True)
class Flow:
  """One dense correspondence a method predicts.

  Attributes:
    name: short identifier, e.g. 'final', 'base', 'guidance'.
    extras: per-direction maps predicted with this flow, e.g. ('confidence',).
    description: one line for reports and pictures.
  """
  name: str
  extras: tuple[str, ...] = ()
  description: str = ''

  def __post_init__(self):
    if not self.name.isidentifier():
      raise ValueError(f'flow name {self.name!r} must be an identifier')


DEFAULT_FLOWS = (Flow('final', description='dense matches'),)


def check(flows: Sequence[Flow]) -> tuple[Flow, ...]:
  """Validates a declaration: at least one flow, unique names."""
  flows = tuple(flows)
  if not flows:
    raise ValueError('a method must declare at least one flow')
  names = [f.name for f in flows]
  if len(set(names)) != len(names):
    raise ValueError(f'flow names must be unique, got {names}')
  return flows


def primary(flows: Sequence[Flow]) -> Flow:
  return flows[0]


def find(flows: Sequence[Flow], name: str) -> Flow:
  for f in flows:
    if f.name == name:
      return f
  raise KeyError(f'no flow {name!r}; declared: {[f.name for f in flows]}')


def prefix(flows: Sequence[Flow], name: str) -> str:
  """'' for the primary flow, '<name>_' for every other one."""
  find(flows, name)
  return '' if flows[0].name == name else f'{name}_'


def key(flows: Sequence[Flow], name: str, kind: str, direction: str) -> str:
  """Flat output key, e.g. key(flows, 'base', 'mapping', 'st') = 'base_mapping_st'."""
  if direction not in DIRECTIONS:
    raise ValueError(f'direction must be one of {DIRECTIONS}, got '
                     f'{direction!r}')
  return f'{prefix(flows, name)}{kind}_{direction}'


def flow_keys(flows: Sequence[Flow], name: str) -> dict[str, str]:
  """{'mapping_st': flat key, 'mapping_ts': ..., '<extra>_st': ...} of a flow."""
  flow = find(flows, name)
  return {f'{kind}_{d}': key(flows, name, kind, d)
          for kind in (MAPPING, *flow.extras) for d in DIRECTIONS}


def mapping_keys(flows: Sequence[Flow]) -> tuple[str, ...]:
  """Every flat key holding an image-resolution mapping (pixels, x first)."""
  return tuple(key(flows, f.name, MAPPING, d) for f in flows
               for d in DIRECTIONS)


def split(flows: Sequence[Flow], predictions: Mapping[str, Any]
          ) -> dict[str, dict[str, Any]]:
  """Flat predictions -> {flow name: {'mapping_st', 'mapping_ts', extras}}.

  Only the maps each flow declares are taken, and only if present (a flow's
  extras may be absent, e.g. when a switch of the method turns them off);
  the mappings must be present.

  Raises:
    KeyError: a declared mapping is missing from `predictions`.
  """
  out = {}
  for flow in flows:
    maps = {}
    for local, flat in flow_keys(flows, flow.name).items():
      if flat in predictions:
        maps[local] = predictions[flat]
      elif local.startswith(MAPPING):
        raise KeyError(f'predictions lack {flat!r} of declared flow '
                       f'{flow.name!r}; keys: {sorted(predictions)}')
    out[flow.name] = maps
  return out


def join(flows: Sequence[Flow], per_flow: Mapping[str, Mapping[str, Any]]
         ) -> dict[str, Any]:
  """Inverse of `split`: {flow: {local key: value}} -> flat keys."""
  out = {}
  for name, maps in per_flow.items():
    p = prefix(flows, name)
    out.update({p + k: v for k, v in maps.items()})
  return out


def prefixed(flows: Sequence[Flow], name: str, metrics: Mapping[str, Any]
             ) -> dict[str, Any]:
  """Metric names of flow `name` with its prefix ('' for the primary flow)."""
  p = prefix(flows, name)
  return {p + k: v for k, v in metrics.items()}
