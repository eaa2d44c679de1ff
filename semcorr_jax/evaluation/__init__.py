"""Evaluation: keypoint transfer, PCK, the synthetic benchmark, pictures.

* `keypoints`: numpy read-out of mappings at points, keypoint grids, boxes.
* `pck`: PCK and end-point error (weakalign conventions, reference-facts §D.4).
* `synthetic`: `evaluate_synthetic` (one model), `evaluate_workdir` (a trained
  workdir beside its untrained twin).
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
