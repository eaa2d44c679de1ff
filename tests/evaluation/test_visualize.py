"""Match pictures: one row per declared flow, extras as colour-barred panels."""

import numpy as np
from PIL import Image
import pytest

from semcorr_jax import outputs
from semcorr_jax.evaluation import visualize

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
