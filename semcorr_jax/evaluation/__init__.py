"""Evaluation: protocols, metrics, benchmark runs, pictures (numpy metrics).

* `keypoints`: numpy read-out of mappings at points, keypoint grids, boxes.
* `pck`: PCK and end-point error (weakalign conventions, reference-facts §D.4),
  the keypoint-extent threshold (with the DHPF/CATs padding bug as an option)
  and the PF-PASCAL square frame.
* `protocol`: how original images become model inputs (resize, SFNet's
  288 + 16 padding) and how predictions come back (`PairPrediction`);
  `default_protocol(benchmark)` states each benchmark's conventions.
* `keypoint_benchmark`, `tss`, `caltech`: per-pair scoring and summaries of
  the keypoint benchmarks (PF-PASCAL, PF-WILLOW, SPair-71k), TSS flow
  accuracy and Caltech-101 label transfer; `spair_tables` the SPair-71k
  per-factor tables; `flow_io` Middlebury `.flo` files.
* `runner`: `evaluate_benchmark` over a TFDS benchmark, with JSON, Markdown,
  per-pair CSV and a picture of the worst pairs.
* `worst_pairs`: the picture of a run's worst pairs.
* `confidence`: ROC AUC (Mann-Whitney) and high/low-confidence PCK of the
  confidence maps of methods that predict them (CAMNet).
* `fake`: models with known mappings (identity, affine; a fake CAMNet with
  base mappings and confidence maps) for exact tests.
* `synthetic`: `evaluate_synthetic` (one model), `evaluate_workdir` (a trained
  workdir beside its untrained twin); `synthetic_scores` its per-pair scores
  and summaries.
* `reports`: `write_eval` / `read_eval` (JSON + Markdown in workdir/eval) and
  `format_comparison` (trained beside untrained).
* `visualize`: `flow_to_color`, `draw_match`, `draw_eval_pairs` (Agg).

Coordinate conventions: docs/architecture.md.
"""

from semcorr_jax.evaluation.keypoints import transfer_keypoints  # noqa: F401
from semcorr_jax.evaluation.synthetic import evaluate_synthetic  # noqa: F401
from semcorr_jax.evaluation.synthetic import evaluate_workdir  # noqa: F401
from semcorr_jax.evaluation.synthetic import format_comparison  # noqa: F401
from semcorr_jax.evaluation.synthetic import write_eval  # noqa: F401
