"""Data (tf.data): scene sources, synthetic warps, real pairs, benchmarks.

* `pipeline`: `make_pair_dataset(data_config, split, ...)`, and per source
  (`pipeline.SOURCES`) `num_examples`, `batch_spec` and `dummy_batch`; the
  data config fields are listed in its module docstring.
* `sources`, `embedded`, `voc` (+ `voc_builder`): scene sources;
  `synthetic_pairs`, `warps`, `tps`: synthetic pairs of a scene.
* `real_pairs` (+ `pair_tables`): PF-PASCAL and SPair-71k pairs with boxes
  and keypoints.
* `streams`: split seeds and per-epoch orders shared by all sources.
* `benchmarks`: TFDS builders of the evaluation benchmarks; `flow_io`:
  Middlebury `.flo` files.

The data layer imports nothing above it (no evaluation, models or methods).
"""
