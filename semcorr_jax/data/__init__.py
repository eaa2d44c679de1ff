"""Data: scene sources, synthetic warps and the pair pipeline (tf.data).

`make_pair_dataset(data_config, split, batch_size=..., seed=...)` yields batches
in the format of docs/architecture.md; `default_data_config()` lists every data
field. Sources: 'embedded' (generated from images bundled with scikit-image)
and 'voc2012' (`semcorr_jax.data.voc`, imported only when used).
"""

from semcorr_jax.data.pipeline import default_data_config
from semcorr_jax.data.pipeline import make_pair_dataset
from semcorr_jax.data.sources import get_source
from semcorr_jax.data.sources import InMemorySource
from semcorr_jax.data.sources import SceneSource

__all__ = [
    'default_data_config', 'make_pair_dataset', 'get_source',
    'InMemorySource', 'SceneSource',
]
