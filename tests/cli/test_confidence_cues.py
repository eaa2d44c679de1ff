"""benchmarks/confidence_cues.py: labels and cues of CAMNet-like outputs."""

import importlib.util

import jax.numpy as jnp
import numpy as np

from semcorr_jax import geometry
from helpers import paths


def _module():
  spec = importlib.util.spec_from_file_location(
      'confidence_cues', paths.REPO / 'benchmarks' / 'confidence_cues.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_labels_follow_the_threshold_and_cues_rank_them():
  cues = _module()
  g, size = 4, 31  # 4x4 cells on a 31x31 image: cell = 10 px
  grid = geometry.pixel_grid(g, g)[None]
  # Identity ground truth; the base flow is off by 2 cells in the top row.
  base_st = grid.at[:, 0, :, 0].add(2.0)
  corr = jnp.zeros((1, g, g, g, g)).at[:, 1:].set(1.0)  # peaked below row 0
  out = {'feature_hw': (g, g), 'base_mapping_st': base_st,
         'base_mapping_ts': grid, 'corr_st': corr,
         'base_confidence_st': jnp.full((1, g, g), 0.5)}
  batch = {'mapping_st': geometry.pixel_grid(size, size)[None],
           'valid_st': jnp.ones((1, size, size)),
           'source_mask': jnp.ones((1, size, size))}
  labels, scores = cues.cue_scores(out, batch, threshold=1.0)
  assert labels.shape == (g * g,)
  np.testing.assert_array_equal(labels.reshape(g, g)[0], False)
  np.testing.assert_array_equal(labels.reshape(g, g)[1:], True)
  # Forward-backward error: 2 cells in the top row, 0 elsewhere.
  fb = scores['- forward-backward error'].reshape(g, g)
  np.testing.assert_allclose(fb[1:], 0.0, atol=1e-5)
  assert np.all(fb[0, :2] < -1.5)
  assert set(scores) == {'corr peak', 'peak / second peak',
                         '- forward-backward error', 'learned C_b'}
  # With threshold 3 cells every cell is correct.
  assert cues.cue_scores(out, batch, threshold=3.0)[0].all()
