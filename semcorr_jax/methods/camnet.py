"""The `camnet` method: CAMNet + hybrid loss + alternating LSGAN training.

Generator G = CAMNet + the warping operator (Eq. 8): the refined mappings,
lifted to image resolution, warp each image into the other's frame. The
PatchGAN discriminator D scores (warped, reference) pairs inside the
reference's foreground. One `train_step` is one generator update followed by
`config.gan.disc_steps` discriminator updates on the same batch's warps
(alternating, Fig. 3). G and D have separate optax optimisers and states,
held in one `GANTrainState` that is checkpointed as a whole; `params` /
`model_state` / `opt_state` are the generator's, so the generic trainer,
pretrained loading and inference see the generator only (D is dropped after
training).

Without the GAN (`config.gan.enabled=False`, the first Table-3 rows) the
state is the plain `TrainState` and the step is the base single-optimiser
step over `loss` (L_G without L_adv).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from semcorr_jax import geometry
from semcorr_jax.errors import SemcorrError
from semcorr_jax.losses import camnet as camnet_losses
from semcorr_jax.losses import sfnet as sfnet_losses
from semcorr_jax.methods import base
from semcorr_jax.models import backbones
from semcorr_jax.models import camnet as camnet_model
from semcorr_jax.models import patchgan

Array = jax.Array
PyTree = Any
MODEL_STATE = base.MODEL_STATE
BACKBONE = ('base', 'backbone')


@flax.struct.dataclass
class GANTrainState(base.TrainState):
  """`TrainState` of the generator plus the discriminator's own.

  Attributes:
    disc_params: D's `params`.
    disc_opt_state: the optax state of `disc_tx`.
    disc_tx: D's optimiser (static).
  """
  disc_params: PyTree
  disc_opt_state: optax.OptState
  disc_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


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


def _ground_truth_warp(image: Array, batch: base.Batch, direction: str
                       ) -> Array:
  """`image` warped by the ground-truth mapping_<direction> (Eq. 9), 0 where
  that mapping is undefined."""
  valid = batch[f'valid_{direction}'][..., None] > 0.5
  mapping = jnp.where(valid, batch[f'mapping_{direction}'], 0.0)
  return jnp.where(valid, geometry.bilinear_sample(image, mapping), 0.0)


def check_config(config) -> None:
  """One clear error for CAMNet settings that cannot work.

  Raises:
    SemcorrError: a data source without dense ground truth and masks, a bad
      GAN setting or confidence threshold.
  """
  if config.data.get('source') == 'pf_pascal':
    raise SemcorrError(
        "camnet trains on synthetic pairs (dense ground truth and masks); "
        "data.source='pf_pascal' has keypoints only")
  gan = config.gan
  if gan.enabled and int(gan.disc_steps) < 1:
    raise SemcorrError(f'gan.disc_steps must be >= 1, got {gan.disc_steps} '
                       '(gan.enabled=False trains without the discriminator)')
  if gan.real_pair not in ('warped_gt', 'reference'):
    raise SemcorrError(f"gan.real_pair must be 'warped_gt' or 'reference', "
                       f'got {gan.real_pair!r}')
  if not config.loss.confidence_threshold > 0:
    raise SemcorrError('loss.confidence_threshold must be > 0 (feature '
                       f'cells), got {config.loss.confidence_threshold}')


class CAMNetMethod(base.Method):
  """CAMNet (Huang et al. 2020) trained on synthetic pairs with masks.

  Config: `config.model` (`models.camnet.default_model_config`),
  `config.backbone`, `config.loss` (mask_weight lambda, base_weight gamma,
  base_confidence_weight beta, align_weight mu1, confidence_weight mu2,
  adversarial_weight, confidence_threshold in feature cells),
  `config.gan` (enabled, disc_steps, real_pair, width, num_layers,
  sigmoid_output), `config.optimizer` (G) and `config.disc_optimizer` (D).
  """

  def __init__(self, config, total_steps: int):
    check_config(config)
    super().__init__(config, total_steps)

  def build_model(self) -> camnet_model.CAMNet:
    return camnet_model.build(self.config)

  @property
  def gan_enabled(self) -> bool:
    return bool(self.config.gan.enabled)

  def build_discriminator(self) -> patchgan.PatchDiscriminator:
    g = self.config.gan
    return patchgan.PatchDiscriminator(
        width=g.width, num_layers=g.num_layers,
        sigmoid_output=g.sigmoid_output, dtype=self.config.model.dtype)

  # --- initialisation -------------------------------------------------------
  def load_pretrained(self, variables: PyTree) -> PyTree:
    """Loads `config.backbone.weights` into `params/base/backbone`."""
    return backbones.load_backbone_pretrained(
        variables, backbones.backbone_config(self.config), subtree=BACKBONE)

  def trainable(self, params: PyTree) -> PyTree:
    """Everything but the frozen backbone of the base network."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict(
        {k: k[:2] != BACKBONE for k in flat})

  @functools.cached_property
  def disc_tx(self) -> optax.GradientTransformation:
    # Built once: static metadata of the state, as `tx`.
    return base.make_optimizer(self.config.disc_optimizer, self.total_steps,
                               lambda p: jax.tree.map(lambda _: True, p))

  def init_state(self, rng: Array, batch: base.Batch) -> base.TrainState:
    g_rng, d_rng = jax.random.split(rng)
    state = super().init_state(g_rng, batch)
    if not self.gan_enabled:
      return state
    image = batch['target_image'][:1]
    disc_params = self.build_discriminator().init(d_rng, image,
                                                  image)['params']
    return GANTrainState(
        step=state.step, params=state.params, model_state=state.model_state,
        opt_state=state.opt_state, tx=state.tx, disc_params=disc_params,
        disc_opt_state=self.disc_tx.init(disc_params), disc_tx=self.disc_tx)

  # --- losses -----------------------------------------------------------------
  def forward_losses(self, params: PyTree, model_state: PyTree,
                     batch: base.Batch) -> tuple[Array, dict[str, Any], dict]:
    """Train-mode forward and mu1 L_align + mu2 L_confi (batch mean).

    Returns:
      (loss, metrics, outputs): metrics carry `MODEL_STATE` (updated
      BatchNorm statistics); outputs are the model's.
    """
    cfg = self.config.loss
    outputs, updates = self.model.apply(
        {'params': params, **model_state}, batch['source_image'],
        batch['target_image'], train=True, mutable=['batch_stats'])
    hw = outputs['feature_hw']
    mask_s = sfnet_losses.downsample_mask(batch['source_mask'], hw)
    mask_t = sfnet_losses.downsample_mask(batch['target_mask'], hw)
    base_maps = (outputs['base_mapping_st'], outputs['base_mapping_ts'])
    refined_maps = (outputs['mapping_st'], outputs['mapping_ts'])
    align = camnet_losses.total_alignment_loss(
        base_maps, refined_maps, mask_s, mask_t, cfg.mask_weight,
        cfg.base_weight if self.model.refinement != 'none' else 0.0)
    metrics = {'align_loss': jnp.mean(align)}
    confidence = jnp.zeros_like(align)
    gt = {d: camnet_losses.ground_truth_on_grid(
        batch[f'mapping_{d}'], batch[f'valid_{d}'], hw, hw)
          for d in ('st', 'ts')}
    weights = (mask_s * gt['st'][1], mask_t * gt['ts'][1])
    update = jnp.zeros_like(align)
    update_weight = cfg.get('update_flow_weight', 0.0)
    if update_weight and self.model.refinement != 'none':
      # Optional, not in the paper: supervise F_u with the synthetic flow.
      update = sum(camnet_losses.masked_end_point_error(
          outputs[f'update_mapping_{d}'], gt[d][0], w)
                   for d, w in zip(('st', 'ts'), weights))
      metrics['update_flow_loss'] = jnp.mean(update)
    if self.model.has_confidence:
      terms = {}
      for kind in ('base', 'refined'):
        labels = tuple(camnet_losses.ground_truth_confidence(
            outputs[f'{"base_" if kind == "base" else ""}mapping_{d}'],
            gt[d][0], cfg.confidence_threshold) for d in ('st', 'ts'))
        logits = (outputs[f'{kind}_confidence_logit_st'],
                  outputs[f'{kind}_confidence_logit_ts'])
        terms[kind] = camnet_losses.confidence_loss(logits, labels, weights)
        correct = [jnp.sum(((l > 0) == (c > 0.5)) * w) / jnp.maximum(jnp.sum(w), 1.0)
                   for l, c, w in zip(logits, labels, weights)]
        metrics[f'{kind}_confidence_accuracy'] = 0.5 * sum(correct)
        metrics[f'{kind}_correct_fraction'] = 0.5 * sum(
            jnp.sum(c * w) / jnp.maximum(jnp.sum(w), 1.0)
            for c, w in zip(labels, weights))
      confidence = camnet_losses.total_confidence_loss(
          terms['base'], terms['refined'], cfg.base_confidence_weight)
      metrics['confidence_loss'] = jnp.mean(confidence)
    total = camnet_losses.generator_loss(
        align, confidence, jnp.zeros_like(align), cfg.align_weight,
        cfg.confidence_weight, 0.0)
    total = total + update_weight * jnp.mean(update)
    flow_st = geometry.mapping_to_flow(outputs['mapping_st'])
    metrics['mean_flow'] = jnp.mean(jnp.linalg.norm(flow_st, axis=-1))
    metrics[MODEL_STATE] = {**model_state, **updates}
    return total, metrics, outputs

  def loss(self, params: PyTree, model_state: PyTree, batch: base.Batch,
           rng: Array) -> tuple[Array, dict[str, Any]]:
    """L_G without the adversarial term (the step when the GAN is off)."""
    del rng
    total, metrics, _ = self.forward_losses(params, model_state, batch)
    return total, metrics

  def discriminator_pairs(self, outputs: dict[str, Any], batch: base.Batch
                          ) -> dict[str, Array]:
    """D's inputs, both directions stacked on the batch axis ([t; s]).

    Returns:
      'fake' (2B, H, W, 3): source warped by the predicted mapping_ts, and
      target warped by mapping_st; 'real': the same by the ground truth
      (gan.real_pair='warped_gt') or the reference itself ('reference',
      Eq. 9 taken literally); 'reference': [target; source]. All are
      multiplied by the reference's foreground mask.
    """
    src, tgt = batch['source_image'], batch['target_image']
    fake = jnp.concatenate([warp_to_reference(src, outputs['mapping_ts']),
                            warp_to_reference(tgt, outputs['mapping_st'])])
    reference = jnp.concatenate([tgt, src])
    if self.config.gan.real_pair == 'warped_gt':
      real = jnp.concatenate([_ground_truth_warp(src, batch, 'ts'),
                              _ground_truth_warp(tgt, batch, 'st')])
    elif self.config.gan.real_pair == 'reference':
      real = reference
    else:  # check_config accepts only the two above
      raise AssertionError(self.config.gan.real_pair)
    mask = jnp.concatenate([batch['target_mask'],
                            batch['source_mask']])[..., None]
    return {'fake': fake * mask, 'real': real * mask,
            'reference': reference * mask}

  def generator_loss(self, params: PyTree, model_state: PyTree,
                     disc_params: PyTree, batch: base.Batch
                     ) -> tuple[Array, tuple[dict[str, Any], dict]]:
    """L_G (Eq. 11) and, as aux, (metrics, D's input pairs without grad)."""
    total, metrics, outputs = self.forward_losses(params, model_state, batch)
    pairs = self.discriminator_pairs(outputs, batch)
    scores = self.build_discriminator().apply({'params': disc_params},
                                              pairs['fake'],
                                              pairs['reference'])
    b = batch['source_image'].shape[0]
    adv = camnet_losses.lsgan_generator_loss([scores[:b], scores[b:]])
    metrics['adv_loss'] = jnp.mean(adv)
    total = total + self.config.loss.adversarial_weight * jnp.mean(adv)
    return total, (metrics, jax.lax.stop_gradient(pairs))

  def discriminator_loss(self, disc_params: PyTree, pairs: dict[str, Array]
                         ) -> tuple[Array, dict[str, Array]]:
    """L_D = L_real + L_fake (Eq. 12-14), batch mean."""
    disc = self.build_discriminator()
    n = pairs['fake'].shape[0]
    # One D call over real and fake pairs (instance norm: no mixing).
    scores = disc.apply({'params': disc_params},
                        jnp.concatenate([pairs['real'], pairs['fake']]),
                        jnp.concatenate([pairs['reference']] * 2))
    real, fake = scores[:n], scores[n:]
    b = n // 2
    l_real, l_fake = camnet_losses.lsgan_discriminator_loss(
        [real[:b], real[b:]], [fake[:b], fake[b:]])
    metrics = {'disc_real_loss': jnp.mean(l_real),
               'disc_fake_loss': jnp.mean(l_fake),
               'disc_real_score': jnp.mean(real),
               'disc_fake_score': jnp.mean(fake)}
    return jnp.mean(l_real + l_fake), metrics

  # --- steps ------------------------------------------------------------------
  def generator_step(self, state: GANTrainState, batch: base.Batch
                     ) -> tuple[GANTrainState, dict[str, Array], dict]:
    """One G update (D fixed); returns the new state, metrics, D's pairs."""
    grad_fn = jax.value_and_grad(self.generator_loss, has_aux=True)
    (loss, (metrics, pairs)), grads = grad_fn(
        state.params, state.model_state, state.disc_params, batch)
    metrics = dict(metrics)
    model_state = metrics.pop(MODEL_STATE)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(loss=loss, grad_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1, params=params,
                         model_state=model_state,
                         opt_state=opt_state), metrics, pairs

  def discriminator_step(self, state: GANTrainState, pairs: dict[str, Array]
                         ) -> tuple[GANTrainState, dict[str, Array]]:
    """One D update on fixed pairs (G untouched)."""
    grad_fn = jax.value_and_grad(self.discriminator_loss, has_aux=True)
    (loss, metrics), grads = grad_fn(state.disc_params, pairs)
    updates, disc_opt_state = state.disc_tx.update(
        grads, state.disc_opt_state, state.disc_params)
    disc_params = optax.apply_updates(state.disc_params, updates)
    metrics = dict(metrics, disc_loss=loss,
                   disc_grad_norm=optax.tree.norm(grads))
    return state.replace(disc_params=disc_params,
                         disc_opt_state=disc_opt_state), metrics

  def train_step(self, state: base.TrainState, batch: base.Batch, rng: Array
                 ) -> tuple[base.TrainState, dict[str, Array]]:
    if not self.gan_enabled:
      return super().train_step(state, batch, rng)
    lr = base.learning_rate_schedule(self.config.optimizer,
                                     self.total_steps)(state.step)
    state, metrics, pairs = self.generator_step(state, batch)
    for _ in range(int(self.config.gan.disc_steps)):
      state, disc_metrics = self.discriminator_step(state, pairs)
    return state, dict(metrics, **disc_metrics, learning_rate=lr)

  # --- inference --------------------------------------------------------------
  def check_input_size(self, variables: PyTree, image_hw: tuple[int, int]
                       ) -> None:
    """Refuses inputs whose matching grid differs from the trained one.

    U reads one correlation channel per cell of the other image, so its
    first conv fixes h * w (static shapes: checked at trace time).

    Raises:
      SemcorrError: naming the size the model needs.
    """
    refine = variables['params'].get('refinement')
    if refine is None:
      return
    channels = refine['stem']['kernel'].shape[2]
    spec = self.model.base.backbone_spec
    stride = spec.feature_strides()[spec.features[0]]
    # Every stride-2 layer of both backbones rounds up (SAME / torchvision).
    cells = -(-image_hw[0] // stride) * -(-image_hw[1] // stride)
    if cells != channels:
      trained = tuple(self.config.data.image_size)
      raise SemcorrError(
          f'CAMNet was trained at {trained[0]}x{trained[1]} and its '
          f'refinement network reads {channels} correlation channels; a '
          f'{image_hw[0]}x{image_hw[1]} input gives {cells}. Resize inputs '
          f'to {trained[0]}x{trained[1]} (semcorr-eval: --input_size='
          f'{trained[0]},{trained[1]}).')

  def predict(self, variables: PyTree, source: Array, target: Array
              ) -> dict[str, Array]:
    """Dense mappings and confidences at the input resolution.

    Returns:
      'mapping_st'/'_ts' (B, H, W, 2) the refined mappings in input pixels,
      'base_mapping_st'/'_ts' the base network's, 'feature_mapping_st'/'_ts'
      the refined ones in feature cells, and with confidence-aware
      refinement 'confidence_st'/'_ts' (B, H, W) in [0, 1] (the refined
      flow's, on the grid of the image the mapping starts from) and
      'base_confidence_st'/'_ts'.
    """
    self.check_input_size(variables, source.shape[1:3])
    outputs = self.model.apply(variables, source, target, train=False)
    hw = outputs['feature_hw']
    src_hw, tgt_hw = source.shape[1:3], target.shape[1:3]
    result = {}
    for prefix in ('', 'base_'):
      result[f'{prefix}mapping_st'] = geometry.resize_mapping(
          outputs[f'{prefix}mapping_st'], src_hw, hw, tgt_hw)
      result[f'{prefix}mapping_ts'] = geometry.resize_mapping(
          outputs[f'{prefix}mapping_ts'], tgt_hw, hw, src_hw)
    result['feature_mapping_st'] = outputs['mapping_st']
    result['feature_mapping_ts'] = outputs['mapping_ts']
    if self.model.has_confidence:
      for name, out_name in (('refined_confidence', 'confidence'),
                             ('base_confidence', 'base_confidence')):
        for d, image_hw in (('st', src_hw), ('ts', tgt_hw)):
          result[f'{out_name}_{d}'] = geometry.resize_images(
              outputs[f'{name}_{d}'][..., None], image_hw)[..., 0]
    return result
