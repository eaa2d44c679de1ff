"""CAMNet's losses (paper 000, Sec. 4), as pure functions.

Alignment (Eq. 4-5) reuses SFNet's mask and flow consistency terms on the
feature grid; the confidence terms (Eq. 6-7) compare the predicted confidence
with a ground truth made by thresholding the error of the predicted flow
against the synthetic ground-truth flow; the adversarial terms (Eq. 10,
12-14) are least-squares GAN losses on patch scores of a discriminator, whose
input pairs (Eq. 8-9) `discriminator_pairs` builds.

Every loss is "multiplied by the foreground masks" (Sec. 4): alignment
through SFNet's masked terms, confidence by averaging over foreground cells
where the ground truth is defined, adversarial by masking D's input images
(`discriminator_pairs`).

Per-image terms return (B,); the weighted totals average over the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from semcorr_jax import geometry
from semcorr_jax.losses import sfnet as sfnet_losses

Array = jax.Array


def alignment_loss(mapping_st: Array, mapping_ts: Array, mask_s: Array,
                   mask_t: Array, mask_weight: float) -> Array:
  """L_a = lambda * L_mask + L_flow (Eq. 4), per image.

  Args:
    mapping_st: (B, hs, ws, 2) (x, y) in target cells (F^{t<-s}).
    mapping_ts: (B, ht, wt, 2) (x, y) in source cells (F^{s<-t}).
    mask_s: (B, hs, ws) binary source foreground.
    mask_t: (B, ht, wt) binary target foreground.
    mask_weight: lambda (0.188 = SFNet's 3 / 16).

  Returns:
    (B,) per-image L_a.
  """
  args = (mapping_st, mapping_ts, mask_s, mask_t)
  return (mask_weight * sfnet_losses.mask_consistency_loss(*args)
          + sfnet_losses.flow_consistency_loss(*args))


def total_alignment_loss(base: Sequence[Array], refined: Sequence[Array],
                         mask_s: Array, mask_t: Array, mask_weight: float,
                         base_weight: float) -> Array:
  """L_align = gamma * L_a(F_b) + L_a(F_r) (Eq. 5), per image.

  Args:
    base: (mapping_st, mapping_ts) of the base flow.
    refined: (mapping_st, mapping_ts) of the refined flow.
    mask_s, mask_t: binary foregrounds on the feature grid.
    mask_weight: lambda of Eq. 4.
    base_weight: gamma.

  Returns:
    (B,) per-image L_align.
  """
  return (base_weight * alignment_loss(*base, mask_s, mask_t, mask_weight)
          + alignment_loss(*refined, mask_s, mask_t, mask_weight))


def ground_truth_on_grid(mapping_px: Array, valid_px: Array,
                         grid_hw: Sequence[int], target_hw: Sequence[int]
                         ) -> tuple[Array, Array]:
  """Reads an image-resolution ground-truth mapping at the feature cells.

  Feature cell (i, j) sits on image pixel (j (W-1)/(w-1), i (H-1)/(h-1))
  (align corners, the convention of `geometry.resize_mapping`).

  Args:
    mapping_px: (B, H, W, 2) ground-truth (x, y) in the other image's pixels.
    valid_px: (B, H, W) 1 where that ground truth lands inside the other
      image.
    grid_hw: (h, w) the feature grid the mapping is defined on.
    target_hw: (h', w') the feature grid of the other image.

  Returns:
    mapping (B, h, w, 2) in the other image's cells, and valid (B, h, w) in
    {0, 1}: 1 where every pixel the bilinear read touches is valid.
  """
  image_hw = mapping_px.shape[1:3]
  # Invalid pixels may hold any value; keep them finite and out of the way.
  mapping_px = jnp.where(valid_px[..., None] > 0.5, mapping_px, 0.0)
  mapping = geometry.resize_mapping(mapping_px, grid_hw, image_hw, target_hw)
  valid = geometry.resize_images(valid_px[..., None].astype(jnp.float32),
                                 grid_hw)[..., 0]
  return mapping, (valid > 0.999).astype(jnp.float32)


def ground_truth_confidence(predicted: Array, ground_truth: Array,
                            threshold: float) -> Array:
  """C = 1 where |F_pred - F_gt| <= threshold, else 0 (Sec. 4.2).

  Args:
    predicted: (B, h, w, 2) predicted mapping (or flow).
    ground_truth: (B, h, w, 2) ground truth, same units.
    threshold: end-point error tolerated, in those units.

  Returns:
    (B, h, w) float32 labels, without gradient.
  """
  error = jnp.linalg.norm(predicted - ground_truth, axis=-1)
  return jax.lax.stop_gradient((error <= threshold).astype(jnp.float32))


def masked_end_point_error(mapping: Array, ground_truth: Array,
                           weight: Array) -> Array:
  """Mean end-point error over weighted cells, per image (not in the paper).

  `sum_p w_p |m_p - m*_p| / (sum_p w_p + 1)`; used by the optional direct
  supervision of the refinement network's flow (`loss.update_flow_weight`).

  Args:
    mapping: (B, h, w, 2) predicted mapping.
    ground_truth: (B, h, w, 2) ground truth, same units.
    weight: (B, h, w) cells that count.

  Returns:
    (B,) per-image mean EPE.
  """
  epe = jnp.sqrt(jnp.sum(jnp.square(mapping - ground_truth), axis=-1) + 1e-12)
  return jnp.sum(epe * weight, axis=(1, 2)) / (jnp.sum(weight, axis=(1, 2))
                                               + 1.0)


def confidence_cross_entropy(logit: Array, label: Array, weight: Array
                             ) -> Array:
  """Binary cross-entropy CE(C~, C) averaged over weighted cells, per image.

  With C~ = sigmoid(logit):
  `CE = -sum_p w_p [C_p log C~_p + (1 - C_p) log(1 - C~_p)] / (sum_p w_p + 1)`
  (the +1 as SFNet's foreground counts).

  Args:
    logit: (B, h, w) confidence logits.
    label: (B, h, w) ground-truth confidence in {0, 1}.
    weight: (B, h, w) cells that count (foreground and defined ground truth).

  Returns:
    (B,) per-image CE.
  """
  ce = -(label * jax.nn.log_sigmoid(logit)
         + (1.0 - label) * jax.nn.log_sigmoid(-logit))
  axes = tuple(range(1, logit.ndim))
  return jnp.sum(ce * weight, axis=axes) / (jnp.sum(weight, axis=axes) + 1.0)


def confidence_loss(logits: Sequence[Array], labels: Sequence[Array],
                    weights: Sequence[Array]) -> Array:
  """L_c = CE(C~^{s<-t}, C^{s<-t}) + CE(C~^{t<-s}, C^{t<-s}) (Eq. 6), per image.

  Args:
    logits: the (st, ts) confidence logits, each (B, h, w).
    labels: the (st, ts) ground-truth confidences.
    weights: the (st, ts) cell weights.

  Returns:
    (B,) per-image L_c.
  """
  return sum(confidence_cross_entropy(l, c, w)
             for l, c, w in zip(logits, labels, weights))


def total_confidence_loss(base: Array, refined: Array,
                          base_weight: float) -> Array:
  """L_confi = beta * L_c(base) + L_c(refined) (Eq. 7), per image.

  Args:
    base: (B,) L_c of the base confidences (`confidence_loss`).
    refined: (B,) L_c of the refined confidences.
    base_weight: beta.

  Returns:
    (B,) per-image L_confi.
  """
  return base_weight * base + refined


def warp_to_reference(image: Array, mapping: Array) -> Array:
  """W(I; F) of Eq. 8: `image` seen in the frame of the mapping's grid.

  Args:
    image: (B, H, W, C) the image warped (the source for mapping_ts).
    mapping: (B, h, w, 2) for every cell of the reference the (x, y) in the
      warped image's cells (h x w its feature grid).

  Returns:
    (B, H, W, C) bilinear samples at the mapping lifted to pixels; 0 where it
    leaves the image.
  """
  hw = image.shape[1:3]
  mapping_px = geometry.resize_mapping(mapping, hw, mapping.shape[1:3], hw)
  return geometry.bilinear_sample(image, mapping_px)


def _ground_truth_warp(image: Array, batch: Mapping[str, Array],
                       direction: str) -> Array:
  """`image` warped by the ground-truth mapping_<direction> (Eq. 9), 0 where
  that mapping is undefined."""
  valid = batch[f'valid_{direction}'][..., None] > 0.5
  mapping = jnp.where(valid, batch[f'mapping_{direction}'], 0.0)
  return jnp.where(valid, geometry.bilinear_sample(image, mapping), 0.0)


def discriminator_pairs(outputs: Mapping[str, Array],
                        batch: Mapping[str, Array], real_pair: str
                        ) -> dict[str, Array]:
  """D's inputs, both directions stacked on the batch axis ([t; s]).

  Args:
    outputs: the predicted 'mapping_st', 'mapping_ts' (B, h, w, 2) in cells.
    batch: the synthetic batch: 'source_image', 'target_image' (B, H, W, 3),
      'source_mask', 'target_mask' (B, H, W), and for real_pair='warped_gt'
      the ground truth 'mapping_st', 'mapping_ts' (B, H, W, 2) in pixels
      with 'valid_st', 'valid_ts' (B, H, W).
    real_pair: 'warped_gt' or 'reference' (`config.gan.real_pair`).

  Returns:
    'fake' (2B, H, W, 3): source warped by the predicted mapping_ts, and
    target warped by mapping_st; 'real': the same by the ground truth
    ('warped_gt') or the reference itself ('reference', Eq. 9 taken
    literally); 'reference': [target; source]. All are multiplied by the
    reference's foreground mask.
  """
  src, tgt = batch['source_image'], batch['target_image']
  fake = jnp.concatenate([warp_to_reference(src, outputs['mapping_ts']),
                          warp_to_reference(tgt, outputs['mapping_st'])])
  reference = jnp.concatenate([tgt, src])
  if real_pair == 'warped_gt':
    real = jnp.concatenate([_ground_truth_warp(src, batch, 'ts'),
                            _ground_truth_warp(tgt, batch, 'st')])
  elif real_pair == 'reference':
    real = reference
  else:
    raise ValueError(f"real_pair must be 'warped_gt' or 'reference', got "
                     f'{real_pair!r}')
  mask = jnp.concatenate([batch['target_mask'],
                          batch['source_mask']])[..., None]
  return {'fake': fake * mask, 'real': real * mask,
          'reference': reference * mask}


def lsgan_generator_loss(fake_scores: Sequence[Array]) -> Array:
  """L_adv = sum_directions mean_patches (D(I~, I) - 1)^2 (Eq. 10), per image.

  Args:
    fake_scores: D's patch scores of the predicted warps, one (B, h', w')
      array per direction.

  Returns:
    (B,) per-image L_adv; minimised when D calls every warp real (1).
  """
  return sum(jnp.mean(jnp.square(s - 1.0), axis=(1, 2)) for s in fake_scores)


def lsgan_discriminator_loss(real_scores: Sequence[Array],
                             fake_scores: Sequence[Array]
                             ) -> tuple[Array, Array]:
  """L_real (Eq. 12) and L_fake (Eq. 13); L_D = L_real + L_fake (Eq. 14).

  Args:
    real_scores: D's scores of the ground-truth warps, per direction.
    fake_scores: D's scores of the predicted warps, per direction.

  Returns:
    (L_real, L_fake), each (B,) per image: real pushed to 1, fake to 0.
  """
  real = sum(jnp.mean(jnp.square(s - 1.0), axis=(1, 2)) for s in real_scores)
  fake = sum(jnp.mean(jnp.square(s), axis=(1, 2)) for s in fake_scores)
  return real, fake


def generator_loss(align: Array, confidence: Array, adversarial: Array,
                   align_weight: float, confidence_weight: float,
                   adversarial_weight: float) -> Array:
  """L_G = mu1 L_align + mu2 L_confi + L_adv (Eq. 11), batch mean.

  Args:
    align: (B,) L_align (Eq. 5).
    confidence: (B,) L_confi (Eq. 7).
    adversarial: (B,) L_adv (Eq. 10).
    align_weight: mu1.
    confidence_weight: mu2.
    adversarial_weight: weight of L_adv (1 in the paper; 0 = no GAN).

  Returns:
    Scalar L_G.
  """
  return jnp.mean(align_weight * align + confidence_weight * confidence
                  + adversarial_weight * adversarial)
