"""The shared config sections: placeholders, overrides, the Lite0 fallback."""

import ml_collections
import pytest

from semcorr_jax import config_blocks
from semcorr_jax.weights import efficientnet_lite


def test_placeholders_are_typed_and_never_shared():
  a, b = config_blocks.backbone(('layer3',)), config_blocks.backbone(('x',))
  a.lock()
  a.weights = '/w.npz'  # a None field the command line can still set
  assert a.weights == '/w.npz' and b.weights is None
  with pytest.raises(TypeError):
    a.stage_sizes = 'not a tuple'
  opt = config_blocks.optimizer(
      'adam', 1e-3, groups=dict(x=config_blocks.group(frozen=True),
                                y=config_blocks.group(False, lr=0.5)))
  opt.groups.x.lr = 0.25
  assert (opt.groups.x.lr, opt.groups.y.lr, opt.lr) == (0.25, 0.5, 1e-3)
  assert list(opt.groups) == ['x', 'y'] and opt.decay_at == ()


def test_overrides_replace_fields_and_typos_are_refused():
  data = config_blocks.pair_data((64, 64), (80, 80), warp='mixed')
  assert (data.image_size, data.scene_size, data.warp) == ((64, 64), (80, 80),
                                                           'mixed')
  with pytest.raises(ValueError, match="no field 'occluder'"):
    config_blocks.pair_data((64, 64), (80, 80), occluder=3)
  assert config_blocks.synthetic_eval(num_pairs=4).num_pairs == 4
  with pytest.raises(ValueError, match="no field 'steps'"):
    config_blocks.init_from(steps=3)


def test_benchmark_protocol_fields_follow_frame():
  e = config_blocks.benchmark_eval('pf_pascal', 'test', 'img', 'square',
                                   protocol='resize', square_side=256,
                                   every=5, select='pck@0.1')
  order = list(e._fields)  # pylint: disable=protected-access
  assert order.index('square_side') == order.index('frame') + 1
  assert (e.every, e.select, e.data_dir, e.num_pairs) == (5, 'pck@0.1', None,
                                                         None)


def test_lite0_fallback_is_a_random_resnet50_with_a_notice(monkeypatch,
                                                           capsys):
  b = config_blocks.backbone(('layer3',))
  monkeypatch.setattr(efficientnet_lite, 'packaged_lite0_path', lambda: None)
  assert not config_blocks.lite0_if_installed(b, 'configs/x.py:quick')
  assert (b.name, b.depth, b.width) == ('resnet', 50, 16)
  assert capsys.readouterr().err.startswith('configs/x.py:quick: ')
  monkeypatch.setattr(efficientnet_lite, 'packaged_lite0_path', lambda: '/p')
  b = config_blocks.backbone(('layer3',))
  assert config_blocks.lite0_if_installed(b, 'configs/x.py:quick')
  assert (b.name, b.depth) == ('efficientnet_lite0', 101)


def test_set_fields_follows_dotted_keys():
  c = config_blocks.init_from()
  c.nested = config_blocks.synthetic_eval()
  config_blocks.set_fields(c, {'folder': 'best', 'nested.every': 7})
  assert (c.folder, c.nested.every) == ('best', 7)


def test_trainer_tools_are_off_by_default_and_typed():
  c = ml_collections.ConfigDict({'seed': 0})
  c.update(config_blocks.trainer_tools(profile_steps=3))
  c.lock()
  assert (c.image_every, c.profile_steps) == (0, 3)
  c.image_every = 500  # a field of a locked config: --config.image_every=500
  with pytest.raises(TypeError):
    c.profile_steps = 'all'
  with pytest.raises(ValueError, match="no field 'imag_every'"):
    config_blocks.trainer_tools(imag_every=1)
