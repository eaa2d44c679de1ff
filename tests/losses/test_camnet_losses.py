"""Hand-computed cases for CAMNet's losses (semcorr_jax/losses/camnet.py).

Paper 000, Sec. 4: alignment Eq. 4-5, the ground-truth confidence of Sec. 4.2
and its cross-entropy Eq. 6-7, the least-squares GAN terms Eq. 10 and 12-14,
and the generator total Eq. 11.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import geometry
from semcorr_jax.data import pipeline
from semcorr_jax.losses import camnet as losses
from semcorr_jax.losses import sfnet as sfnet_losses
from helpers import paths

LOG2 = float(np.log(2.0))
# Paper 000, Sec. 5.1: lambda, gamma, beta, mu1, mu2 (configs/camnet.py).
LAMBDA, GAMMA, BETA, MU1, MU2 = 0.188, 0.4, 0.4, 288.0, 18.0


def test_config_holds_the_paper_weights(load_config):
  loss = load_config('camnet', 'paper').loss
  assert (loss.mask_weight, loss.base_weight, loss.base_confidence_weight,
          loss.align_weight, loss.confidence_weight,
          loss.adversarial_weight) == (LAMBDA, GAMMA, BETA, MU1, MU2, 1.0)


# --- ground-truth confidence (Sec. 4.2) ---------------------------------------


def test_ground_truth_confidence_threshold_is_inclusive():
  pred = jnp.zeros((1, 1, 5, 2))
  # End-point errors: |(3, 4)| = 5 exactly in float32, |(3, 4.001)| = 5.0008,
  # 0, |(-3, -4)| = 5, |(1, 0)| = 1.
  gt = jnp.asarray([[[[3.0, 4.0], [3.0, 4.001], [0.0, 0.0], [-3.0, -4.0],
                      [1.0, 0.0]]]])
  labels = losses.ground_truth_confidence(pred, gt, 5.0)
  assert labels.dtype == jnp.float32 and labels.shape == (1, 1, 5)
  # error == threshold counts as correct (<=), just above does not.
  np.testing.assert_array_equal(labels[0, 0], [1.0, 0.0, 1.0, 1.0, 1.0])
  np.testing.assert_array_equal(
      losses.ground_truth_confidence(pred, gt, 4.999)[0, 0],
      [0.0, 0.0, 1.0, 0.0, 1.0])
  # The config's threshold is 1 feature cell: one cell off is still correct.
  np.testing.assert_array_equal(
      losses.ground_truth_confidence(pred, gt, 1.0)[0, 0],
      [0.0, 0.0, 1.0, 0.0, 1.0])
  np.testing.assert_array_equal(
      losses.ground_truth_confidence(pred, gt, 0.999)[0, 0],
      [0.0, 0.0, 1.0, 0.0, 0.0])


def test_ground_truth_confidence_labels_carry_no_gradient():
  gt = jnp.zeros((1, 2, 2, 2))
  pred = jnp.asarray([[[[0.5, 0.0], [1.2, 0.0]], [[0.0, 0.9], [3.0, 1.0]]]])
  labels = losses.ground_truth_confidence(pred, gt, 1.0)
  # Hard labels in {0, 1}, not a soft score of the error.
  np.testing.assert_array_equal(labels, [[[1.0, 0.0], [1.0, 0.0]]])

  def ce_of(pred, logit):
    label = losses.ground_truth_confidence(pred, gt, 1.0)
    return jnp.sum(losses.confidence_cross_entropy(logit, label,
                                                   jnp.ones((1, 2, 2))))

  logit = jnp.asarray([[[0.3, -1.0], [2.0, 0.5]]])
  g_pred, g_logit = jax.grad(ce_of, argnums=(0, 1))(pred, logit)
  # The flow being judged gets nothing from the confidence loss; the logits do.
  np.testing.assert_array_equal(g_pred, np.zeros_like(pred))
  assert np.all(np.asarray(g_logit) != 0)
  np.testing.assert_array_equal(
      jax.grad(lambda p: jnp.sum(losses.ground_truth_confidence(p, gt, 1.0)))(
          pred), np.zeros_like(pred))


# --- ground truth on the feature grid -----------------------------------------

IMAGE = 64


def _affine_mapping_px():
  """(1, 64, 64, 2): x' = 0.5 x + 21, y' = 0.75 y + 10.5 (target pixels)."""
  grid = np.asarray(geometry.pixel_grid(IMAGE, IMAGE))
  m = np.stack([0.5 * grid[..., 0] + 21.0, 0.75 * grid[..., 1] + 10.5], -1)
  return m[None].astype(np.float32)


def test_ground_truth_on_grid_of_an_affine_mapping():
  mapping_px = _affine_mapping_px()
  valid = np.ones((1, IMAGE, IMAGE), np.float32)
  # 5x5 source grid: cell (i, j) sits on pixel (15.75 j, 15.75 i) -> target
  # pixels (7.875 j + 21, 11.8125 i + 10.5) -> 4x4 target cells (x 3 / 63):
  # (0.375 j + 1, 0.5625 i + 0.5). Linear, so the bilinear read is exact.
  mapping, ok = losses.ground_truth_on_grid(
      jnp.asarray(mapping_px), jnp.asarray(valid), (5, 5), (4, 4))
  assert mapping.shape == (1, 5, 5, 2) and ok.shape == (1, 5, 5)
  j = np.arange(5, dtype=np.float32)
  np.testing.assert_allclose(mapping[0, :, :, 0],
                             np.broadcast_to(0.375 * j + 1.0, (5, 5)),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(mapping[0, :, :, 1],
                             np.broadcast_to((0.5625 * j + 0.5)[:, None],
                                             (5, 5)), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(ok, np.ones((1, 5, 5)))
  # Grids the other way round: cells on pixels 21 j -> (10.5 j + 21,
  # 15.75 i + 10.5) pixels -> 5x5 target cells (x 4 / 63): (2 j / 3 + 4 / 3,
  # i + 2 / 3).
  mapping, ok = losses.ground_truth_on_grid(
      jnp.asarray(mapping_px), jnp.asarray(valid), (4, 4), (5, 5))
  j = np.arange(4, dtype=np.float32)
  assert mapping.shape == (1, 4, 4, 2)
  np.testing.assert_allclose(mapping[0, 0, :, 0], 2 * j / 3 + 4 / 3,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(mapping[0, :, 0, 1], j + 2 / 3, rtol=1e-6,
                             atol=1e-6)


def test_ground_truth_on_grid_invalid_pixels_mark_cells_and_do_not_leak():
  mapping_px = _affine_mapping_px()
  valid = np.ones((1, IMAGE, IMAGE), np.float32)
  # 5x5 grid: cell column 1 reads pixel columns 15 (weight 0.25) and 16
  # (0.75); cell row 3 reads rows 47 (0.75) and 48 (0.25); nothing reads
  # column 30 (column 2 reads 31 and 32).
  valid[:, :, 15] = 0.0
  valid[:, 48, :] = 0.0
  valid[:, :, 30] = 0.0
  # Invalid pixels hold garbage, as the pipeline may leave there.
  mapping_px[:, :, 15] = np.nan
  mapping_px[:, 48, :] = np.inf
  mapping_px[:, :, 30] = 1e30
  mapping, ok = losses.ground_truth_on_grid(
      jnp.asarray(mapping_px), jnp.asarray(valid), (5, 5), (4, 4))
  expected_ok = np.ones((5, 5), np.float32)
  expected_ok[:, 1] = 0.0  # a minority (0.25) invalid neighbour is enough
  expected_ok[3, :] = 0.0
  np.testing.assert_array_equal(ok[0], expected_ok)
  assert np.all(np.isfinite(np.asarray(mapping)))
  j = np.arange(5, dtype=np.float32)
  want_x = np.broadcast_to(0.375 * j + 1.0, (5, 5))
  want_y = np.broadcast_to((0.5625 * j + 0.5)[:, None], (5, 5))
  keep = expected_ok > 0
  np.testing.assert_allclose(np.asarray(mapping[0, ..., 0])[keep],
                             want_x[keep], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(mapping[0, ..., 1])[keep],
                             want_y[keep], rtol=1e-6, atol=1e-6)


# --- confidence cross-entropy (Eq. 6-7) ---------------------------------------


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_confidence_ce_is_binary_cross_entropy_with_plus_one_normaliser():
  logit = jnp.asarray([[[-2.0, -0.5, 0.0, 1.5, 3.0]]])
  ones = jnp.ones_like(logit)
  # Label 1: -log(sigmoid(l)); label 0: -log(1 - sigmoid(l)); 5 cells -> /6.
  want1 = -np.log(_sigmoid(logit)).sum() / 6.0
  want0 = -np.log(1.0 - _sigmoid(logit)).sum() / 6.0
  np.testing.assert_allclose(
      losses.confidence_cross_entropy(logit, ones, ones), [want1], rtol=1e-6)
  np.testing.assert_allclose(
      losses.confidence_cross_entropy(logit, 0 * ones, ones), [want0],
      rtol=1e-6)
  # Logit 0 on 3 weighted cells of 4: 3 log 2 / (3 + 1).
  w = jnp.asarray([[[1.0, 1.0, 1.0, 0.0]]])
  np.testing.assert_allclose(
      losses.confidence_cross_entropy(jnp.zeros((1, 1, 4)), jnp.ones((1, 1, 4)),
                                      w), [0.75 * LOG2], rtol=1e-6)
  # One cell: log 2 / 2; no weighted cell: 0, not NaN.
  np.testing.assert_allclose(
      losses.confidence_cross_entropy(jnp.zeros((1, 1, 1)), jnp.ones((1, 1, 1)),
                                      jnp.ones((1, 1, 1))), [0.5 * LOG2],
      rtol=1e-6)
  np.testing.assert_array_equal(
      losses.confidence_cross_entropy(logit, ones, 0 * ones), [0.0])


def test_confidence_ce_weights_are_respected():
  # Cell 0: logit 0, label 1 (log 2); cell 1: logit log 3 (C~ = 0.75), label 0
  # (-log 0.25 = 2 log 2); cell 2: a confident wrong answer with weight 0.
  logit = jnp.asarray([[[0.0, np.log(3.0), -100.0]]], jnp.float32)
  label = jnp.asarray([[[1.0, 0.0, 1.0]]])
  w = jnp.asarray([[[1.0, 1.0, 0.0]]])
  np.testing.assert_allclose(losses.confidence_cross_entropy(logit, label, w),
                             [(LOG2 + 2 * LOG2) / 3.0], rtol=1e-6)
  # Weight 2 on cell 1: (log 2 + 2 * 2 log 2) / (3 + 1).
  w2 = jnp.asarray([[[1.0, 2.0, 0.0]]])
  np.testing.assert_allclose(losses.confidence_cross_entropy(logit, label, w2),
                             [5 * LOG2 / 4.0], rtol=1e-6)
  # Per image: a batch of two is two independent values.
  both = losses.confidence_cross_entropy(
      jnp.concatenate([logit, jnp.zeros_like(logit)]),
      jnp.concatenate([label, label]), jnp.concatenate([w, w]))
  np.testing.assert_allclose(both, [LOG2, 2 * LOG2 / 3.0], rtol=1e-6)


def test_confidence_ce_is_stable_at_large_logits():
  logit = jnp.asarray([[[-100.0, 100.0, 100.0, -100.0]]])
  label = jnp.asarray([[[1.0, 0.0, 1.0, 0.0]]])
  for k, want in ((0, 100.0), (1, 100.0), (2, 0.0), (3, 0.0)):
    w = jnp.zeros((1, 1, 4)).at[..., k].set(1.0)
    # Confident and wrong: 100 / (1 + 1) (log(sigmoid) would give inf);
    # confident and right: exp(-100) / 2 ~ 0 (1 - sigmoid would give log 0).
    value = losses.confidence_cross_entropy(logit, label, w)
    np.testing.assert_allclose(value, [want / 2.0], atol=1e-6, rtol=1e-6)
    grad = jax.grad(lambda l: jnp.sum(  # pylint: disable=cell-var-from-loop
        losses.confidence_cross_entropy(l, label, w)))(logit)
    assert np.all(np.isfinite(np.asarray(grad)))
  # d/dl at the wrong cell: (sigmoid(l) - label) / 2 = -0.5 for l=-100, y=1.
  w = jnp.asarray([[[1.0, 0.0, 0.0, 0.0]]])
  grad = jax.grad(lambda l: jnp.sum(
      losses.confidence_cross_entropy(l, label, w)))(logit)
  np.testing.assert_allclose(grad[0, 0, 0], -0.5, rtol=1e-6)


def test_confidence_loss_sums_both_directions_eq6():
  # s<-t: logit 0, label 1 on 3 cells -> 3 log 2 / 4.
  # t<-s: logit log 3, label 0 on 1 cell -> 2 log 2 / 2 = log 2.
  l_st, c_st, w_st = (jnp.zeros((1, 2, 2)), jnp.ones((1, 2, 2)),
                      jnp.asarray([[[1.0, 1.0], [1.0, 0.0]]]))
  l_ts = jnp.full((1, 2, 2), np.log(3.0), jnp.float32)
  c_ts = jnp.zeros((1, 2, 2))
  w_ts = jnp.asarray([[[0.0, 0.0], [0.0, 1.0]]])
  total = losses.confidence_loss((l_st, l_ts), (c_st, c_ts), (w_st, w_ts))
  np.testing.assert_allclose(total, [0.75 * LOG2 + LOG2], rtol=1e-6)
  # Each direction is paired with its own labels and weights.
  crossed = losses.confidence_loss((l_st, l_ts), (c_ts, c_st), (w_st, w_ts))
  assert abs(float(crossed[0]) - 1.75 * LOG2) > 0.1


def test_total_confidence_loss_beta_weighting_eq7():
  base = jnp.asarray([1.0, 2.0])
  refined = jnp.asarray([3.0, 5.0])
  # beta = 0.4 on the base term: 0.4 * [1, 2] + [3, 5].
  np.testing.assert_allclose(losses.total_confidence_loss(base, refined, BETA),
                             [3.4, 5.8], rtol=1e-6)
  np.testing.assert_allclose(
      losses.total_confidence_loss(base, refined, base_weight=0.1),
      [3.1, 5.2], rtol=1e-6)


# --- least-squares GAN (Eq. 10, 12-14) ----------------------------------------


def test_lsgan_generator_loss_eq10():
  ones = jnp.ones((2, 3, 3))
  np.testing.assert_array_equal(losses.lsgan_generator_loss([ones, ones]),
                                [0.0, 0.0])
  # Direction 1 patches (0.5, 1.0): mean(0.25, 0) = 0.125; direction 2 all
  # 0.2: 0.64 -> 0.765. Patches are averaged, directions summed.
  d1 = jnp.asarray([[[0.5, 1.0]]])
  d2 = jnp.full((1, 1, 2), 0.2)
  np.testing.assert_allclose(losses.lsgan_generator_loss([d1, d2]), [0.765],
                             rtol=1e-6)
  assert float(losses.lsgan_generator_loss([d1, ones[:1, :1, :2]])[0]) > 0
  # d/ds (s - 1)^2 / 2 = (0.5 - 1) = -0.5 at s = 0.5: descent raises D(fake).
  grad = jax.grad(lambda s: jnp.sum(losses.lsgan_generator_loss([s])))(
      jnp.full((1, 1, 2), 0.5))
  np.testing.assert_allclose(grad, np.full((1, 1, 2), -0.5), rtol=1e-6)


def test_lsgan_discriminator_loss_eq12_14():
  real = [jnp.asarray([[[0.5, 1.0]]]), jnp.full((1, 1, 2), 0.8)]
  fake = [jnp.asarray([[[0.5, 0.0]]]), jnp.full((1, 1, 2), 0.3)]
  l_real, l_fake = losses.lsgan_discriminator_loss(real, fake)
  # Real to 1: 0.125 + 0.04; fake to 0: mean(0.25, 0) + 0.09.
  np.testing.assert_allclose(l_real, [0.165], rtol=1e-6)
  np.testing.assert_allclose(l_fake, [0.215], rtol=1e-6)
  # A perfect D scores 0, an inverted one 1 per direction.
  z, o = jnp.zeros((1, 2, 2)), jnp.ones((1, 2, 2))
  np.testing.assert_array_equal(
      losses.lsgan_discriminator_loss([o, o], [z, z]), ([0.0], [0.0]))
  np.testing.assert_allclose(
      losses.lsgan_discriminator_loss([z, z], [o, o]), ([2.0], [2.0]))
  # Gradients at 0.5: real scores pushed up, fake scores down.
  half = jnp.full((1, 1, 2), 0.5)
  g_real, g_fake = jax.grad(
      lambda r, f: jnp.sum(sum(losses.lsgan_discriminator_loss([r], [f]))),
      argnums=(0, 1))(half, half)
  np.testing.assert_allclose(g_real, np.full((1, 1, 2), -0.5), rtol=1e-6)
  np.testing.assert_allclose(g_fake, np.full((1, 1, 2), 0.5), rtol=1e-6)


def test_generator_loss_weights_eq11():
  one, zero = jnp.ones((1,)), jnp.zeros((1,))
  # Each term alone: mu1 = 288 on L_align, mu2 = 18 on L_confi, 1 on L_adv.
  paper = (MU1, MU2, 1.0)
  np.testing.assert_allclose(losses.generator_loss(one, zero, zero, *paper),
                             288.0, rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss(zero, one, zero, *paper),
                             18.0, rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss(zero, zero, one, *paper),
                             1.0, rtol=1e-6)
  align = jnp.asarray([1.0, 0.0])
  confidence = jnp.asarray([0.0, 2.0])
  adv = jnp.asarray([0.5, 0.5])
  # Batch mean: (288 * 1 + 0.5 + 18 * 2 + 0.5) / 2 = 162.5.
  np.testing.assert_allclose(
      losses.generator_loss(align, confidence, adv, *paper), 162.5, rtol=1e-6)
  np.testing.assert_allclose(
      losses.generator_loss(align, confidence, adv, MU1, MU2, 0.0),
      162.0, rtol=1e-6)
  np.testing.assert_allclose(
      losses.generator_loss(align, confidence, adv, 1.0, 2.0, 4.0),
      (1.0 * 1 + 4.0 * 0.5 + 2.0 * 2 + 4.0 * 0.5) / 2.0, rtol=1e-6)  # 4.5


# --- alignment (Eq. 4-5) ------------------------------------------------------

H, W = 4, 5


def _identity(b=1):
  return jnp.broadcast_to(geometry.pixel_grid(H, W), (b, H, W, 2))


def _shifted(dx=0.0, dy=0.0, b=1):
  return _identity(b) + jnp.asarray([dx, dy], jnp.float32)


def _block(cols, rows=(1, 2)):
  m = np.zeros((1, H, W), np.float32)
  m[:, rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = 1.0
  return jnp.asarray(m)


def test_alignment_loss_is_lambda_mask_plus_flow_eq4():
  ms, mt = _block((0, 1)), _block((1, 2))  # target = source moved right 1
  # Identity mappings: 4 + 4 of 20 cells disagree -> L_mask = 0.4; the
  # flows are 0 so L_flow = 0: L_a = 0.188 * 0.4.
  np.testing.assert_allclose(
      losses.alignment_loss(_identity(), _identity(), ms, mt, LAMBDA),
      [0.0752], rtol=1e-6)
  np.testing.assert_allclose(
      losses.alignment_loss(_identity(), _identity(), ms, mt, 3.0), [1.2],
      rtol=1e-6)
  # The true shifts explain both masks and are exact inverses: 0.
  np.testing.assert_allclose(
      losses.alignment_loss(_shifted(1.0), _shifted(-1.0), ms, mt, LAMBDA),
      [0.0], atol=1e-7)
  # General mappings: the SFNet terms, lambda on the mask term only.
  noise = jax.random.normal(jax.random.key(0), (2, 1, H, W, 2)) * 0.4
  args = (_shifted(0.7) + noise[0], _shifted(-0.4, 0.3) + noise[1], ms, mt)
  l_mask = sfnet_losses.mask_consistency_loss(*args)
  l_flow = sfnet_losses.flow_consistency_loss(*args)
  assert float(l_mask[0]) > 0.01 and float(l_flow[0]) > 0.01
  np.testing.assert_allclose(losses.alignment_loss(*args, LAMBDA),
                             0.188 * l_mask + l_flow, rtol=1e-6)
  np.testing.assert_allclose(losses.alignment_loss(*args, mask_weight=2.0),
                             2.0 * l_mask + l_flow, rtol=1e-6)


def test_total_alignment_loss_gamma_weights_the_base_flow_eq5():
  ms, mt = _block((0, 1)), _block((1, 2))
  wrong = (_identity(), _identity())        # L_a = 0.0752
  right = (_shifted(1.0), _shifted(-1.0))   # L_a = 0
  # gamma = 0.4 on the base flow: a wrong base costs 0.4 * 0.0752, a wrong
  # refined flow the full 0.0752.
  np.testing.assert_allclose(
      losses.total_alignment_loss(wrong, right, ms, mt, LAMBDA, GAMMA),
      [0.4 * 0.0752], rtol=1e-6)
  np.testing.assert_allclose(
      losses.total_alignment_loss(right, wrong, ms, mt, LAMBDA, GAMMA),
      [0.0752], rtol=1e-6)
  np.testing.assert_allclose(
      losses.total_alignment_loss(wrong, wrong, ms, mt, mask_weight=1.0,
                                  base_weight=0.5), [1.5 * 0.4], rtol=1e-6)


# --- the discriminator's inputs (Eq. 8-9) -------------------------------------

IMAGE, GRID, B = 64, 4, 2


@pytest.fixture(scope='module')
def batch():
  """Two synthetic pairs of configs/camnet.py:test (64x64, masks, dense GT)."""
  config = config_files.load(f'{paths.CONFIGS / "camnet"}.py:test')
  ds = pipeline.make_pair_dataset(config.data, 'train', batch_size=B, seed=0)
  return jax.tree.map(jnp.asarray, next(ds.as_numpy_iterator()))


def _grid_identity(b=B):
  return jnp.broadcast_to(geometry.pixel_grid(GRID, GRID), (b, GRID, GRID, 2))


def test_warp_to_reference_lifts_the_cell_mapping():
  image = jax.random.uniform(jax.random.key(0), (1, IMAGE, IMAGE, 3))
  ident = _grid_identity(1)
  # The identity on the 4x4 grid is the identity on the pixels.
  np.testing.assert_allclose(losses.warp_to_reference(image, ident), image,
                             atol=1e-5)
  # One cell right = 21 pixels right; beyond the border: 0.
  warped = losses.warp_to_reference(image, ident + jnp.asarray([1.0, 0.0]))
  np.testing.assert_allclose(warped[:, :, :IMAGE - 21], image[:, :, 21:],
                             atol=1e-5)
  np.testing.assert_array_equal(warped[:, :, IMAGE - 20:], 0.0)


def test_discriminator_pairs_directions_and_masks(batch):
  # mapping_ts the identity, mapping_st one cell (21 px) to the right.
  ident = _grid_identity()
  outputs = {'mapping_ts': ident, 'mapping_st': ident + jnp.asarray([1.0, 0.0])}
  pairs = losses.discriminator_pairs(outputs, batch, 'warped_gt')
  src, tgt = batch['source_image'], batch['target_image']
  mask_s = batch['source_mask'][..., None]
  mask_t = batch['target_mask'][..., None]
  assert 0 < float(jnp.mean(mask_s)) < 1 and 0 < float(jnp.mean(mask_t)) < 1
  # [t frame; s frame]: the source warped by mapping_ts beside the target,
  # the target warped by mapping_st beside the source, every image inside
  # the reference's foreground.
  np.testing.assert_allclose(pairs['reference'][:B], tgt * mask_t)
  np.testing.assert_allclose(pairs['reference'][B:], src * mask_s)
  np.testing.assert_allclose(pairs['fake'][:B], src * mask_t, atol=1e-5)
  shifted = jnp.zeros_like(tgt).at[:, :, :IMAGE - 21].set(tgt[:, :, 21:])
  np.testing.assert_allclose(pairs['fake'][B:], shifted * mask_s, atol=1e-5)
  # Real pairs: the source warped by the ground-truth mapping_ts, 0 where it
  # is undefined (and the target by mapping_st).
  for half, image, d, mask in ((slice(0, B), src, 'ts', mask_t),
                               (slice(B, 2 * B), tgt, 'st', mask_s)):
    valid = batch[f'valid_{d}'][..., None] > 0.5
    gt = jnp.where(valid, batch[f'mapping_{d}'], 0.0)
    want = jnp.where(valid, geometry.bilinear_sample(image, gt), 0.0) * mask
    np.testing.assert_allclose(pairs['real'][half], want, atol=1e-6)
  assert float(jnp.mean(jnp.abs(pairs['real'][:B] - pairs['fake'][:B]))) > 0
  literal = losses.discriminator_pairs(outputs, batch, 'reference')
  np.testing.assert_array_equal(literal['real'], literal['reference'])
  with pytest.raises(ValueError, match='real_pair'):
    losses.discriminator_pairs(outputs, batch, 'target')


def test_adversarial_loss_reaches_the_mappings(batch):
  # G is trained through D: the warp is differentiable in the mapping (any
  # differentiable score of the fake pairs stands in for D here).
  def adversarial(mapping_ts):
    outputs = {'mapping_st': _grid_identity(), 'mapping_ts': mapping_ts}
    pairs = losses.discriminator_pairs(outputs, batch, 'warped_gt')
    scores = jnp.mean(pairs['fake'] * pairs['reference'], axis=-1)
    return jnp.sum(losses.lsgan_generator_loss([scores[:B], scores[B:]]))

  grad = jax.jit(jax.grad(adversarial))(_grid_identity() + 0.3)
  assert float(jnp.sum(jnp.abs(grad))) > 0
