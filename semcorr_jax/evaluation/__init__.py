"""Evaluation: protocols, metrics, benchmark runs, evaluators, pictures.

Numpy metrics and predict functions only: nothing here builds a method or
reads a checkpoint (the API and CLIs do, then hand over a predict function).

* `evaluators`: named evaluators built from `config.evals` (types
  'synthetic' and 'benchmark', `register` for more); what the trainer and
  `semcorr-eval` run.
* `keypoints`: numpy read-out of mappings at points, keypoint grids, boxes.
* `pck`: PCK and end-point error (weakalign conventions, reference-facts §D.4),
  the keypoint-extent threshold (with the DHPF/CATs padding bug as an option)
  and the PF-PASCAL square frame.
* `protocol`: how original images become model inputs (resize, 288 + 16
  padding) and how predictions come back (`PairPrediction`);
  `default_protocol(benchmark)` states each benchmark's conventions.
* `keypoint_benchmark`, `tss`, `caltech`: per-pair scoring and summaries of
  the keypoint benchmarks (PF-PASCAL, PF-WILLOW, SPair-71k), TSS flow
  accuracy and Caltech-101 label transfer; `spair_tables` the SPair-71k
  per-factor tables.
* `runner`: `evaluate_benchmark` over a TFDS benchmark, with JSON, Markdown,
  per-pair CSV and a picture of the worst pairs.
* `per_flow`: every declared flow's scores (prefixes, merges, views).
* `predict`: calling a predict function from numpy in fixed-size batches.
* `worst_pairs`: the picture of a run's worst pairs.
* `confidence`: ROC AUC (Mann-Whitney) and high/low-confidence PCK of the
  confidence maps of flows that declare them.
* `fake`: models with known mappings (identity, affine; several flows with
  confidence maps) for exact tests.
* `synthetic`: `evaluate_synthetic` on the held-out synthetic pairs;
  `synthetic_scores` its per-pair scores and summaries.
* `reports`: `write_eval` / `read_eval` (JSON + Markdown in workdir/eval),
  `format_comparison` (trained beside untrained), `write_all`.
* `selection`: the model-selection history (eval/model_selection.json).
* `visualize`: `draw_flows` (a row per declared flow), `draw_match`,
  `draw_eval_pairs` (Agg); `flow_colors`: `flow_to_color`.

Coordinate conventions: docs/architecture.md.
"""
