"""The `camnet` method: CAMNet + hybrid loss + alternating LSGAN training.

Generator G = CAMNet + the warping operator (Eq. 8): the refined mappings,
lifted to image resolution, warp each image into the other's frame. The
PatchGAN discriminator D scores (warped, reference) pairs inside the
reference's foreground. One `train_step` is one generator update followed by
`config.gan.disc_steps` discriminator updates on the same batch's warps
(alternating, Fig. 3). G and D each have their own `TrainState` (step,
parameters, optimiser), held together in a `GANTrainState` that is
checkpointed as a whole; inference reads the generator only (D is dropped
after training).

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
from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.losses import camnet as camnet_losses
from semcorr_jax.methods import base
from semcorr_jax.models import backbones
from semcorr_jax.models import camnet as camnet_model
from semcorr_jax.models import patchgan

Array = jax.Array
PyTree = Any
BACKBONE = ('base', 'backbone')
# D's entry in `state_variables` (beside the generator's collections) and
# the name of its one parameter group (`learning_rate/discriminator`).
DISCRIMINATOR = 'discriminator'


@flax.struct.dataclass
class GANTrainState:
  """The generator's and the discriminator's train states.

  Attributes:
    generator: CAMNet's `TrainState`; its step counts train steps.
    discriminator: D's `TrainState` (optimiser `config.disc_optimizer`); its
      step counts D updates (`gan.disc_steps` per train step).
  """
  generator: base.TrainState
  discriminator: base.TrainState

  @property
  def step(self) -> Array:
    """Train steps done (the generator's updates)."""
    return self.generator.step


def check_config(config) -> None:
  """One clear error for CAMNet settings that cannot work.

  Raises:
    SemcorrError: a bad GAN setting or confidence threshold. (Data without
      the dense ground truth and masks CAMNet trains on is refused by the
      trainer, from `batch_keys`.)
  """
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

  Config (configs/camnet.py): `config.model` (SFNet's fields and the
  heads'), `config.backbone`, `config.loss` (mask_weight lambda, base_weight
  gamma, base_confidence_weight beta, align_weight mu1, confidence_weight
  mu2, adversarial_weight, confidence_threshold in feature cells,
  update_flow_weight), `config.gan` (enabled, disc_steps, real_pair, width,
  num_layers, sigmoid_output), `config.optimizer` (G; groups 'backbone' =
  params/base/backbone, 'model') and `config.disc_optimizer` (D).
  """

  flows = (
      outputs.Flow('final', ('confidence',), 'refined flow F_r'),
      outputs.Flow('base', ('confidence',), 'base flow of the SFNet network'),
  )
  batch_keys = ('source_image', 'target_image', 'source_mask', 'target_mask',
                'mapping_st', 'mapping_ts', 'valid_st', 'valid_ts')
  # Options added after the first CAMNet runs; those runs used these.
  legacy_defaults = {'model.confidence_inputs': 'features_flow',
                     'model.refine_readout': 'none',
                     'model.refine_coordinates': False,
                     'loss.update_flow_weight': 0.0,
                     'disc_optimizer.weight_decay': 0.0,
                     'disc_optimizer.momentum': None,
                     'disc_optimizer.grad_clip_norm': None}

  # With a refinement network, its own flow F_u is scored too.
  UPDATE_FLOW = outputs.Flow('update', (), 'updated flow F_u of U (Eq. 2)')

  def __init__(self, config, total_steps: int):
    check_config(config)
    super().__init__(config, total_steps)
    if config.model.refinement != 'none':
      self.flows = outputs.check((*type(self).flows, self.UPDATE_FLOW))

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
    """Loads `config.backbone.weights` into `params/base/backbone`.

    `variables` may carry D's (`state_variables` of the GAN state); they
    pass through untouched.
    """
    if DISCRIMINATOR not in variables:
      return backbones.load_backbone_pretrained(
          variables, backbones.backbone_config(self.config), subtree=BACKBONE)
    generator = {k: v for k, v in variables.items() if k != DISCRIMINATOR}
    loaded = self.load_pretrained(generator)
    if loaded is generator:  # nothing to load
      return variables
    return {**loaded, DISCRIMINATOR: variables[DISCRIMINATOR]}

  @functools.cached_property
  def disc_tx(self) -> optax.GradientTransformation:
    # Built once: static metadata of the state, as `tx`.
    return base.make_optimizer(
        self.config.disc_optimizer, self.total_steps, (DISCRIMINATOR,),
        lambda params: jax.tree.map(lambda _: DISCRIMINATOR, params))

  def init_state(self, rng: Array, batch: base.Batch
                 ) -> base.TrainState | GANTrainState:
    g_rng, d_rng = jax.random.split(rng)
    generator = super().init_state(g_rng, batch)
    if not self.gan_enabled:
      return generator
    image = batch['target_image'][:1]
    variables = dict(self.build_discriminator().init(d_rng, image, image))
    params = variables.pop('params')
    discriminator = base.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
        opt_state=self.disc_tx.init(params), tx=self.disc_tx)
    return GANTrainState(generator=generator, discriminator=discriminator)

  # --- what the trainer reads and edits ---------------------------------------
  def inference_variables(self, state: base.TrainState | GANTrainState
                          ) -> PyTree:
    """The generator's variables ({'params', 'batch_stats'})."""
    if isinstance(state, GANTrainState):
      state = state.generator
    return super().inference_variables(state)

  def state_variables(self, state: base.TrainState | GANTrainState) -> PyTree:
    """The generator's collections, and with the GAN D's under
    'discriminator' ({'params': ...})."""
    if not isinstance(state, GANTrainState):
      return super().state_variables(state)
    return {**super().state_variables(state.generator),
            DISCRIMINATOR: super().state_variables(state.discriminator)}

  def with_state_variables(self, state: base.TrainState | GANTrainState,
                           variables: PyTree
                           ) -> base.TrainState | GANTrainState:
    """`state` with the model variables replaced; D's are kept when
    `variables` has no 'discriminator' entry."""
    variables = dict(variables)
    disc = variables.pop(DISCRIMINATOR, None)
    if not isinstance(state, GANTrainState):
      return super().with_state_variables(state, variables)
    discriminator = state.discriminator
    if disc is not None:
      discriminator = super().with_state_variables(discriminator, disc)
    return state.replace(
        generator=super().with_state_variables(state.generator, variables),
        discriminator=discriminator)

  # --- losses -----------------------------------------------------------------
  def forward_losses(self, params: PyTree, model_state: PyTree,
                     batch: base.Batch
                     ) -> tuple[Array, dict[str, Array], PyTree, dict]:
    """Train-mode forward and mu1 L_align + mu2 L_confi (batch mean).

    Returns:
      (loss, metrics, model_state, out): scalar metrics, the non-param
      collections after the forward (updated BatchNorm statistics), the
      model's outputs.
    """
    cfg = self.config.loss
    out, updates = self.model.apply(
        {'params': params, **model_state}, batch['source_image'],
        batch['target_image'], train=True, mutable=['batch_stats'])
    hw = out['feature_hw']
    mask_s = geometry.downsample_mask(batch['source_mask'], hw)
    mask_t = geometry.downsample_mask(batch['target_mask'], hw)
    base_maps = (out['base_mapping_st'], out['base_mapping_ts'])
    refined_maps = (out['mapping_st'], out['mapping_ts'])
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
    update_weight = cfg.update_flow_weight
    if update_weight and self.model.refinement != 'none':
      # Optional, not in the paper: supervise F_u with the synthetic flow.
      update = sum(camnet_losses.masked_end_point_error(
          out[f'update_mapping_{d}'], gt[d][0], w)
                   for d, w in zip(('st', 'ts'), weights))
      metrics['update_flow_loss'] = jnp.mean(update)
    if self.model.has_confidence:
      terms = {}
      for kind in ('base', 'refined'):
        labels = tuple(camnet_losses.ground_truth_confidence(
            out[f'{"base_" if kind == "base" else ""}mapping_{d}'],
            gt[d][0], cfg.confidence_threshold) for d in ('st', 'ts'))
        logits = (out[f'{kind}_confidence_logit_st'],
                  out[f'{kind}_confidence_logit_ts'])
        terms[kind] = camnet_losses.confidence_loss(logits, labels, weights)
        correct = [jnp.sum(((l > 0) == (c > 0.5)) * w)
                   / jnp.maximum(jnp.sum(w), 1.0)
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
    flow_st = geometry.mapping_to_flow(out['mapping_st'])
    metrics['mean_flow'] = jnp.mean(jnp.linalg.norm(flow_st, axis=-1))
    return total, metrics, {**model_state, **updates}, out

  def loss(self, params: PyTree, model_state: PyTree, batch: base.Batch,
           rng: Array) -> tuple[Array, tuple[dict[str, Array], PyTree]]:
    """L_G without the adversarial term (the step when the GAN is off)."""
    del rng
    total, metrics, model_state, _ = self.forward_losses(params, model_state,
                                                         batch)
    return total, (metrics, model_state)

  def generator_loss(self, params: PyTree, model_state: PyTree,
                     disc_variables: PyTree, batch: base.Batch
                     ) -> tuple[Array, tuple[dict[str, Array], PyTree, dict]]:
    """L_G (Eq. 11) and, as aux, (metrics, the generator's model state after
    the forward, D's input pairs without gradient)."""
    total, metrics, model_state, out = self.forward_losses(
        params, model_state, batch)
    pairs = camnet_losses.discriminator_pairs(out, batch,
                                              self.config.gan.real_pair)
    scores = self.build_discriminator().apply(disc_variables, pairs['fake'],
                                              pairs['reference'])
    b = batch['source_image'].shape[0]
    adv = camnet_losses.lsgan_generator_loss([scores[:b], scores[b:]])
    metrics['adv_loss'] = jnp.mean(adv)
    total = total + self.config.loss.adversarial_weight * jnp.mean(adv)
    return total, (metrics, model_state, jax.lax.stop_gradient(pairs))

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
    g, d = state.generator, state.discriminator
    grad_fn = jax.value_and_grad(self.generator_loss, has_aux=True)
    (loss, (metrics, model_state, pairs)), grads = grad_fn(
        g.params, g.model_state, d.variables(), batch)
    g, step_metrics = self.apply_gradients(g, grads, model_state)
    return (state.replace(generator=g),
            {**metrics, 'loss': loss, **step_metrics}, pairs)

  def discriminator_step(self, state: GANTrainState, pairs: dict[str, Array]
                         ) -> tuple[GANTrainState, dict[str, Array]]:
    """One D update on fixed pairs (G untouched)."""
    d = state.discriminator
    grad_fn = jax.value_and_grad(self.discriminator_loss, has_aux=True)
    (loss, metrics), grads = grad_fn(d.params, pairs)
    updates, opt_state = d.tx.update(grads, d.opt_state, d.params)
    metrics = {**metrics, 'disc_loss': loss,
               'disc_grad_norm': optax.tree.norm(grads),
               **base.learning_rates(self.config.disc_optimizer,
                                     self.total_steps, (DISCRIMINATOR,),
                                     d.step)}
    d = d.replace(step=d.step + 1,
                  params=optax.apply_updates(d.params, updates),
                  opt_state=opt_state)
    return state.replace(discriminator=d), metrics

  @property
  def step_parts(self) -> tuple[tuple[str, Any, int], ...]:
    """The updates one GAN train step makes, in order: (name, fn, repeats)
    (benchmarks/throughput.py times each alone); () without the GAN."""
    if not self.gan_enabled:
      return ()
    return (('generator', self.generator_step, 1),
            ('discriminator', self.discriminator_step,
             int(self.config.gan.disc_steps)))

  def train_step(self, state: base.TrainState | GANTrainState,
                 batch: base.Batch, rng: Array
                 ) -> tuple[base.TrainState | GANTrainState, dict[str, Array]]:
    if not self.gan_enabled:
      return super().train_step(state, batch, rng)
    state, metrics, pairs = self.generator_step(state, batch)
    for _ in range(int(self.config.gan.disc_steps)):
      state, disc_metrics = self.discriminator_step(state, pairs)
    return state, {**metrics, **disc_metrics}

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
    # One channel per cell of the other image, + (x, y) when U reads them.
    channels = (refine['stem']['kernel'].shape[2]
                - 2 * bool(self.config.model.refine_coordinates))
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
      'base_mapping_st'/'_ts' the base network's, 'update_mapping_st'/'_ts'
      U's F_u (with refinement), 'feature_mapping_st'/'_ts'
      the refined ones in feature cells, and with confidence-aware
      refinement 'confidence_st'/'_ts' (B, H, W) in [0, 1] (the refined
      flow's, on the grid of the image the mapping starts from) and
      'base_confidence_st'/'_ts'.
    """
    self.check_input_size(variables, source.shape[1:3])
    out = self.model.apply(variables, source, target, train=False)
    hw = out['feature_hw']
    src_hw, tgt_hw = source.shape[1:3], target.shape[1:3]
    result = {}
    prefixes = ('', 'base_') + (('update_',) if 'update_mapping_st' in out
                                 else ())
    for prefix in prefixes:
      result[f'{prefix}mapping_st'] = geometry.resize_mapping(
          out[f'{prefix}mapping_st'], src_hw, hw, tgt_hw)
      result[f'{prefix}mapping_ts'] = geometry.resize_mapping(
          out[f'{prefix}mapping_ts'], tgt_hw, hw, src_hw)
    result['feature_mapping_st'] = out['mapping_st']
    result['feature_mapping_ts'] = out['mapping_ts']
    if self.model.has_confidence:
      for name, out_name in (('refined_confidence', 'confidence'),
                             ('base_confidence', 'base_confidence')):
        for d, image_hw in (('st', src_hw), ('ts', tgt_hw)):
          result[f'{out_name}_{d}'] = geometry.resize_images(
              out[f'{name}_{d}'][..., None], image_hw)[..., 0]
    return result
