"""Data parallelism: the pmap model written as `jax.jit` over a device mesh.

Every device of every host holds a shard of the global batch along a single
`'data'` mesh axis; parameters and optimiser states are replicated. The jitted
step sees global arrays, so gradient means and BatchNorm statistics cover the
global batch without explicit collectives. Each host reads a disjoint slice of
the data and the slices are assembled with `make_array_from_process_local_data`.

The mesh comes from `jax.make_mesh`, which orders the devices for the
interconnect (a ring on TPU); it does not span several TPU slices (that
would need `mesh_utils.create_hybrid_device_mesh`).
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D `'data'` mesh over `devices` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else list(devices)
  # Auto axis type: `jax.make_mesh` defaults to Explicit, which some optax
  # losses reject on jax 0.12 (stack-facts.md); Auto works on 0.10-0.12.
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `'data'`, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """Returns the per-host batch size; errors if it does not divide evenly."""
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  if global_batch_size % n_dev:
    raise ValueError(f'batch_size {global_batch_size} is not divisible by the '
                     f'{n_dev} devices of the mesh')
  return global_batch_size // n_proc


def host_to_global(local_batch: dict[str, np.ndarray], mesh: Mesh
                   ) -> dict[str, jax.Array]:
  """Assembles per-host batches into global arrays sharded over `'data'`.

  Args:
    local_batch: this host's arrays, each (B_local, ...) with the same
      B_local (checked on the host, outside any trace).
    mesh: the `'data'` mesh.

  Returns:
    The global arrays, (B_local * process_count, ...).
  """
  chex.assert_equal_shape_prefix(jax.tree.leaves(local_batch), 1)
  sharding = data_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a host tree on every device of the mesh (identical on all hosts)."""
  return jax.device_put(tree, replicated(mesh))


def to_host(tree: Any) -> Any:
  """Numpy copy of a tree of replicated global arrays, on any host.

  `jax.device_get` refuses arrays that span other hosts; a replicated array
  has a full copy on every local device, so the first local shard suffices.
  """
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if not x.sharding.is_fully_replicated:
        raise ValueError('to_host needs replicated arrays; got sharding '
                         f'{x.sharding}')
      return np.asarray(x.addressable_data(0))
    return jax.device_get(x)
  return jax.tree.map(fetch, tree)
