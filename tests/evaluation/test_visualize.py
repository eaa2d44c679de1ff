"""Pictures of matches and evaluations: one row per declared flow (per pair),
extras as colour-barred panels."""

import numpy as np
from PIL import Image
import pytest

from semcorr_jax import outputs
from semcorr_jax.evaluation import evaluators
from semcorr_jax.evaluation import fake
from semcorr_jax.evaluation import protocol as protocol_lib
from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import runner
from semcorr_jax.evaluation import visualize
from semcorr_jax.evaluation import worst_pairs

from helpers import pf_fixture

# A method's declaration as CAMNet makes it: two flows, each with confidence.
FLOWS = (outputs.Flow('final', ('confidence',), 'refined'),
         outputs.Flow('base', ('confidence',), 'before refinement'))


def _grid(h, w):
  gx, gy = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float),
                       indexing='xy')
  return np.stack([gx, gy], -1)


def _pair(seed=0):
  rng = np.random.default_rng(seed)
  source = rng.random((20, 30, 3)).astype(np.float32)
  target = rng.random((16, 24, 3)).astype(np.float32)
  mapping_st = _grid(20, 30) * [23 / 29, 15 / 19]
  mapping_ts = _grid(16, 24) * [29 / 23, 19 / 15]
  return rng, source, target, mapping_st, mapping_ts


def test_map_panels_fixed_scale_titles_and_order():
  maps = {'other': np.zeros((4, 5, 1)), 'guide_confidence_ts': np.ones((3, 3)),
          'confidence_ts': np.ones((3, 3)), 'confidence_st': np.ones((4, 5)),
          'not_a_map': np.zeros((4, 5, 2))}
  panels = visualize.map_panels(maps)
  # Confidence maps first (fixed [0, 1] scale), otherwise in the given order.
  assert [p[0] for p in panels] == ['guide_confidence_ts', 'confidence_ts',
                                    'confidence_st', 'other']
  assert panels[0][1] == 'guide confidence (target -> source)'
  assert panels[1][1] == 'confidence (target -> source)'
  assert panels[2][1] == 'confidence (source -> target)'
  assert [p[3:] for p in panels] == [(0.0, 1.0)] * 3 + [(None, None)]
  assert panels[3][2].shape == (4, 5)


def test_flow_panels_follow_the_declaration():
  flows = (outputs.Flow('final', ('occlusion', 'confidence')),
           outputs.Flow('guide', ('confidence',)))
  maps = {'occlusion_ts': np.zeros((3, 3)), 'confidence_st': np.ones((4, 5)),
          'confidence_ts': np.ones((3, 3)),
          'guide_confidence_st': np.ones((4, 5, 2)),  # not one map: skipped
          'guide_confidence_ts': np.ones((3, 3, 1))}
  final = visualize.flow_panels(flows, 'final', maps)
  assert [(p[0], p[1], p[3], p[4]) for p in final] == [
      ('occlusion_ts', 'occlusion (target -> source)', None, None),
      ('confidence_st', 'confidence (source -> target)', 0.0, 1.0),
      ('confidence_ts', 'confidence (target -> source)', 0.0, 1.0)]
  guide = visualize.flow_panels(flows, 'guide', maps)
  assert [(p[0], p[1]) for p in guide] == [
      ('guide_confidence_ts', 'guide confidence (target -> source)')]
  assert guide[0][2].shape == (3, 3)


def test_match_rows_need_every_declared_mapping():
  _, _, _, mapping_st, mapping_ts = _pair()
  with pytest.raises(KeyError, match='base_mapping_st'):
    visualize.match_rows(FLOWS, {'mapping_st': mapping_st,
                                 'mapping_ts': mapping_ts})


def test_draw_flows_one_row_per_declared_flow(tmp_path):
  rng, source, target, mapping_st, mapping_ts = _pair()
  points = np.array([[3., 4.], [20., 10.]])
  one_row = visualize.draw_match(str(tmp_path / 'a.png'), source, target,
                                 mapping_st, mapping_ts, points_s=points)
  maps = {'mapping_st': mapping_st, 'mapping_ts': mapping_ts,
          'base_mapping_st': mapping_st + 1, 'base_mapping_ts': mapping_ts - 1,
          'confidence_st': rng.random((20, 30)),
          'confidence_ts': rng.random((16, 24)),
          'base_confidence_st': rng.random((20, 30))}
  rows = visualize.match_rows(FLOWS, maps)
  assert [r.flow for r in rows] == ['final', 'base']
  assert [len(r.panels) for r in rows] == [2, 1]
  np.testing.assert_array_equal(rows[1].mapping_st, mapping_st + 1)

  figure = visualize.match_figure(source, target, FLOWS, maps,
                                  points_s=points)
  grid = figure.axes[0].get_subplotspec().get_gridspec()
  assert grid.get_geometry() == (2, 6)  # 4 panels + the most extras (2)
  titles = {ax.get_title() for ax in figure.axes}
  assert {'target (transferred keypoints)', 'flow source -> target',
          'target (keypoints by the base flow)', 'base flow source -> target',
          'base confidence (source -> target)'} <= titles

  two_rows = visualize.draw_flows(str(tmp_path / 'b.png'), source, target,
                                  FLOWS, maps, points_s=points, title='t')
  (w1, h1), (w2, h2) = Image.open(one_row).size, Image.open(two_rows).size
  assert h2 > 1.7 * h1  # a second row (the base flow)
  assert w2 > 1.3 * w1  # two confidence columns beside the flow


# --- evaluation pictures: a row per pair and flow ------------------------------
# A primary flow without a confidence, a second one with it (a tent map).
TWO_FLOWS = (outputs.Flow('final'),
             outputs.Flow('guide', ('confidence',), 'a coarser guess'))
MATRICES = {'final': [[1, 0, 0], [0, 1, 0]],
            'guide': [[0.8, 0, 0.1], [0, 0.8, 0]]}
PANEL = 192  # worst_pairs.WORST_PANEL_INCHES (2.4) x WORST_DPI (80)


def _synthetic_batch(pairs=2, h=24, w=32):
  """Held-out pairs as the pipeline yields them: identity ground truth."""
  rng = np.random.default_rng(0)
  grid = np.broadcast_to(_grid(h, w), (pairs, h, w, 2)).astype(np.float32)
  ones = np.ones((pairs, h, w), np.float32)
  return {'source_image': rng.random((pairs, h, w, 3)).astype(np.float32),
          'target_image': rng.random((pairs, h, w, 3)).astype(np.float32),
          'mapping_st': grid, 'mapping_ts': grid, 'source_mask': ones,
          'target_mask': ones, 'valid_st': ones, 'valid_ts': ones}


def _axes_grid(figure):
  """{(row, column): axes} of a figure's subplot grid (colour bars left
  out)."""
  grid = {}
  for ax in figure.axes:
    if ax.get_label() != '<colorbar>':
      spec = ax.get_subplotspec().get_topmost_subplotspec()
      grid[(spec.rowspan.start, spec.colspan.start)] = ax
  return grid


def test_eval_pairs_one_row_per_pair_and_flow(tmp_path):
  batch = _synthetic_batch()
  prediction = fake.flows_predict_fn(TWO_FLOWS, MATRICES)(
      batch['source_image'], batch['target_image'])
  figure = visualize.eval_pairs_figure(batch, prediction, TWO_FLOWS,
                                       num_pairs=2)
  grid = _axes_grid(figure)
  # 2 pairs x 2 flows; 6 panels + the confidence column.
  assert max(grid) == (3, 6) and len(grid) == 4 * 7
  assert [grid[(r, 0)].get_ylabel() for r in (0, 2)] == [
      'pair 0: final', 'pair 1: final']
  assert [t.get_text() for t in grid[(3, 0)].texts] == [
      'pair 1: guide\na coarser guess']
  assert [grid[(r, 2)].get_title() for r in range(4)] == [
      'warped (final)', 'warped (guide)'] * 2
  # Each row draws its own flow: the guide's row warps by its mapping_ts.
  for row, key in ((2, 'mapping_ts'), (3, 'guide_mapping_ts')):
    np.testing.assert_allclose(
        grid[(row, 2)].images[0].get_array(),
        visualize.warp_image(batch['source_image'][1], prediction[key][1]),
        atol=1e-6)
  # The guide's confidence on [0, 1]; the final flow declares none.
  confidence = grid[(3, 6)]
  assert confidence.get_title() == 'guide confidence\n(source -> target)'
  assert confidence.images[0].get_clim() == (0.0, 1.0)
  np.testing.assert_allclose(confidence.images[0].get_array(),
                             prediction['guide_confidence_st'][1])
  assert not grid[(2, 6)].axison and not grid[(2, 6)].images
  # The guide's rows leave out the pair's source and truth (drawn above).
  assert not grid[(1, 3)].images and not grid[(1, 5)].images

  # The PNG: twice the rows of the one-flow picture (the default, which
  # draws only the primary flow and has no confidence column).
  one = visualize.draw_eval_pairs(str(tmp_path / 'one.png'), batch,
                                  prediction, num_pairs=2)
  two = visualize.draw_eval_pairs(str(tmp_path / 'two.png'), batch,
                                  prediction, num_pairs=2, flows=TWO_FLOWS)
  (w1, h1), (w2, h2) = Image.open(one).size, Image.open(two).size
  assert 1.8 * h1 < h2 < 2.2 * h1
  assert w2 > 1.1 * w1


def test_synthetic_evaluator_draws_every_flow(load_config, tmp_path):
  ev = evaluators.build(load_config('sfnet', 'test'), TWO_FLOWS)[0]
  assert ev.type == 'synthetic'
  batch = _synthetic_batch(pairs=2)
  prediction = fake.flows_predict_fn(TWO_FLOWS, MATRICES)(
      batch['source_image'], batch['target_image'])
  results = {reports.ARTEFACTS: {'batch': batch, 'prediction': prediction}}
  ((path, write),) = ev.file_writers(str(tmp_path), 'synthetic', results, 3,
                                     True)
  assert path.endswith('synthetic_pairs.png')
  write(path)
  single = visualize.draw_eval_pairs(str(tmp_path / 'one.png'), batch,
                                     prediction, num_pairs=2, title='t')
  assert (Image.open(path).size[1]
          > 1.8 * Image.open(single).size[1])  # a row per flow


def _keypoint_pair():
  """A 30 x 20 source and 40 x 30 target with three keypoints each."""
  rng = np.random.default_rng(1)
  unit = np.array([[0.25, 0.25], [0.5, 0.75], [0.75, 0.5]])
  return {'pair_id': b'a-b', 'source_image': rng.random((20, 30, 3)),
          'target_image': rng.random((30, 40, 3)),
          'source_keypoints': unit * [29, 19],
          'target_keypoints': unit * [39, 29]}


def test_worst_pair_rows_one_row_per_flow(tmp_path):
  example = _keypoint_pair()
  model = (17, 17)  # odd: the tent confidence reads out exactly
  outputs_ = fake.flows_predict_fn(TWO_FLOWS, MATRICES)(
      np.zeros((1, *model, 3)), np.zeros((1, *model, 3)))
  prediction = protocol_lib.PairPrediction(
      {k: v[0] for k, v in outputs_.items()}, (20, 30), (30, 40), model, 0)
  record = {'pair_id': 'a-b', 'pck@0.1': 1.0, 'guide_pck@0.1': 0.5}
  protocol = protocol_lib.default_protocol('pf_willow')
  rows = worst_pairs.worst_pair_rows(example, prediction, record,
                                     'keypoints', protocol, 'pck@0.1',
                                     TWO_FLOWS)
  assert [r['flow'] for r in rows] == ['final', 'guide']
  assert [r['caption'] for r in rows] == ['a-b, final: pck@0.1 = 1.000',
                                          'a-b, guide: pck@0.1 = 0.500']
  final, guide = rows[0]['panels'], rows[1]['panels']
  assert len(final) == 4 and final[0]['title'] == 'source'
  # The guide row: no repeated source/target, its own transfer, confidence.
  assert guide[:2] == [None, None] and len(guide) == 5
  np.testing.assert_allclose(
      guide[2]['predicted'],
      prediction.transfer(example['target_keypoints'], 'ts', 'guide_'))
  assert not np.allclose(guide[2]['predicted'], final[2]['predicted'])
  assert guide[4]['scale'] == (0.0, 1.0)
  assert guide[4]['title'] == 'guide confidence (target -> source)'
  assert guide[4]['image'].shape == (30, 40)  # the target's pixels ('ts')
  assert guide[4]['image'][0, 0] == pytest.approx(0.0, abs=1e-9)
  assert guide[4]['image'].max() <= 1.0
  # The one-flow default keeps today's row.
  (only,) = worst_pairs.worst_pair_rows(example, prediction, record,
                                        'keypoints', protocol, 'pck@0.1')
  assert only['caption'] == 'a-b, pck@0.1 = 1.000'
  assert len(only['panels']) == 4
  path = worst_pairs.draw_worst_pairs(str(tmp_path / 'w.png'), rows, 't')
  assert Image.open(path).size == worst_pairs.worst_pairs_size(2, 5) == (
      5 * PANEL, 2 * PANEL)


def test_benchmark_worst_png_one_row_per_pair_and_flow(tmp_path):
  data_dir = str(pf_fixture.write_pf_willow(tmp_path / 'data'))
  predict_fn = fake.flows_predict_fn(TWO_FLOWS, MATRICES)
  scored = runner.score_benchmark(predict_fn, 'pf_willow', model_size=(32, 32),
                                  data_dir=data_dir, progress=False,
                                  num_worst=2, flows=TWO_FLOWS)
  assert scored.flows == TWO_FLOWS and len(scored.worst) == 2
  # Only the drawn maps of every flow are kept for the picture.
  assert set(scored.worst[0][1].outputs) == {
      'mapping_st', 'mapping_ts', 'guide_mapping_st', 'guide_mapping_ts',
      'guide_confidence_st', 'guide_confidence_ts'}
  runner.evaluate_benchmark(predict_fn, 'pf_willow', model_size=(32, 32),
                            data_dir=data_dir, progress=False, num_worst=2,
                            flows=TWO_FLOWS, out_dir=str(tmp_path / 'eval'))
  png = tmp_path / 'eval' / 'pf_willow_test_worst.png'
  # 2 pairs x 2 flows; 4 panels + the guide's confidence.
  assert Image.open(png).size == (5 * PANEL, 4 * PANEL)
