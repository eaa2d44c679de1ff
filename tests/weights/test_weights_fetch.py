"""Tests for semcorr_jax/weights/fetch.py without network.

The download goes through urllib with a file:// URL to a tiny torchvision-
layout ResNet that the test writes (`save_torch_file`), registered as a
model with its own sha256 prefix; the real URLs are only checked for form.
"""

import errno
import hashlib
import os
import urllib.error
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import resnet
from semcorr_jax.weights import export_torchvision_resnet
from semcorr_jax.cli import fetch_weights
from semcorr_jax.weights import fetch
from semcorr_jax.weights import load_backbone_weights
from semcorr_jax.weights import read_state_dict
from semcorr_jax.weights.state_dict import save_torch_file

STAGES = (1, 1, 1, 1)


@pytest.fixture(scope='module')
def tiny_state():
  model = resnet.ResNet(stage_sizes=STAGES, width=4, num_classes=5)
  template = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda x: rng.standard_normal(x.shape, np.float32), template)
  return export_torchvision_resnet(variables)


def _serve(tmp_path, monkeypatch, state, name='tiny'):
  """Writes `state` as a torch file named like torchvision's; registers it."""
  src = tmp_path / 'src.pth'
  save_torch_file(state, src)
  digest = hashlib.sha256(src.read_bytes()).hexdigest()
  served = tmp_path / f'{name}-{digest[:8]}.pth'
  src.rename(served)
  model = fetch.Model(served.as_uri(), STAGES)
  monkeypatch.setitem(fetch.MODELS, name, model)
  return model


def test_real_models_are_torchvision_v1():
  assert fetch.MODELS['resnet101'].sha256_prefix == '63fe2227'
  assert fetch.MODELS['resnet50'].sha256_prefix == '0676ba61'
  assert fetch.MODELS['resnet101'].stage_sizes == (3, 4, 23, 3)
  assert all(m.url.startswith('https://download.pytorch.org/models/')
             for m in fetch.MODELS.values())


def test_download_verify_convert(tiny_state, tmp_path, monkeypatch, capsys):
  _serve(tmp_path, monkeypatch, tiny_state)
  out = tmp_path / 'out' / 'tiny.npz'
  assert fetch_weights.main(['tiny', '--output', str(out), '--keep_download']) == 0
  assert 'wrote' in capsys.readouterr().out
  read = read_state_dict(out)
  assert read.keys() == tiny_state.keys()
  for k, v in tiny_state.items():
    np.testing.assert_array_equal(read[k], v)
  # The download was kept under its own name, no temporary file is left.
  names = sorted(p.name for p in out.parent.iterdir())
  assert names[0].startswith('tiny-') and names[1] == 'tiny.npz'
  assert len(names) == 2
  # The .npz is what config.backbone.weights loads.
  template = jax.eval_shape(
      resnet.ResNet(stage_sizes=STAGES, width=4, last_stage='layer3').init,
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  _, unused = load_backbone_weights(template, out)
  assert unused and all(k.startswith(('layer4.', 'fc.')) for k in unused)


def test_input_file_is_verified_and_converted(tiny_state, tmp_path,
                                              monkeypatch):
  model = _serve(tmp_path, monkeypatch, tiny_state)
  served = model.url[len('file://'):]
  out = tmp_path / 'x.npz'
  fetch.fetch('tiny', out, input_path=served)
  assert read_state_dict(out).keys() == tiny_state.keys()


def test_incomplete_state_dict_is_refused(tiny_state, tmp_path, monkeypatch):
  state = dict(tiny_state)
  del state['layer2.0.bn1.running_var']
  _serve(tmp_path, monkeypatch, state)
  out = tmp_path / 'tiny.npz'
  with pytest.raises(SemcorrError, match=r'missing \(layer2.0.bn1'):
    fetch.fetch('tiny', out)
  assert not out.exists()
  assert not list(tmp_path.glob('*.part'))


def test_hash_mismatch_is_refused(tiny_state, tmp_path, monkeypatch):
  model = _serve(tmp_path, monkeypatch, tiny_state)
  bad = fetch.Model(model.url.replace(model.sha256_prefix, '00000000'),
                    STAGES)
  served = tmp_path / bad.file_name
  (tmp_path / model.file_name).rename(served)
  monkeypatch.setitem(fetch.MODELS, 'tiny', bad)
  with pytest.raises(SemcorrError, match='does not start with 00000000'):
    fetch.fetch('tiny', tmp_path / 'out' / 'tiny.npz')
  assert not list((tmp_path / 'out').iterdir())


def test_no_network_is_one_line_error(tmp_path, monkeypatch, capsys):
  def offline(*args, **kwargs):
    raise urllib.error.URLError(OSError(-3, 'Temporary failure in name '
                                        'resolution'))
  monkeypatch.setattr(urllib.request, 'urlopen', offline)
  out = tmp_path / 'resnet101.npz'
  assert fetch_weights.main(['resnet101', '--output', str(out)]) == 1
  err = capsys.readouterr().err
  assert 'cannot download https://download.pytorch.org/models/resnet101-' in err
  assert '--input' in err and err.count('\n') == 1
  assert not list(tmp_path.iterdir())


def test_bad_arguments(tmp_path):
  with pytest.raises(SemcorrError, match='must end in .npz'):
    fetch.fetch('resnet50', tmp_path / 'w.pth')
  with pytest.raises(SemcorrError, match='unknown model'):
    fetch.fetch('vgg16', tmp_path / 'w.npz')
  with pytest.raises(SemcorrError, match='no such file'):
    fetch.fetch('resnet50', tmp_path / 'w.npz', input_path=tmp_path / 'n.pth')


# --- Output locations are checked before any download or conversion. ---


def _no_download(monkeypatch):
  def urlopen(*args, **kwargs):
    raise AssertionError('downloaded before checking --output')
  monkeypatch.setattr(urllib.request, 'urlopen', urlopen)


def _deny_writes_to(monkeypatch, folder):
  """chmod a-w `folder`; as root (permissions do not bind) emulate them."""
  os.chmod(folder, 0o555)
  if os.geteuid() == 0:
    real_access = os.access

    def access(path, mode, **kwargs):
      if os.path.samefile(path, folder) and mode & os.W_OK:
        return False
      return real_access(path, mode, **kwargs)
    monkeypatch.setattr(os, 'access', access)


@pytest.mark.parametrize('case', ['under_a_file', 'a_folder', 'read_only',
                                  'keep_download_onto_folder'])
def test_unwritable_output_is_one_line_before_download(tmp_path, monkeypatch,
                                                        capsys, case):
  _no_download(monkeypatch)
  args = []
  if case == 'under_a_file':
    (tmp_path / 'file').write_text('x')
    out = tmp_path / 'file' / 'sub' / 'resnet50.npz'
  elif case == 'a_folder':
    out = tmp_path / 'dir.npz'
    out.mkdir()
  elif case == 'read_only':
    (tmp_path / 'ro').mkdir()
    out = tmp_path / 'ro' / 'resnet50.npz'
    _deny_writes_to(monkeypatch, tmp_path / 'ro')
  else:
    out = tmp_path / 'resnet50.npz'
    (tmp_path / fetch.MODELS['resnet50'].file_name).mkdir()
    args = ['--keep_download']
  before = sorted(tmp_path.rglob('*'))
  try:
    assert fetch_weights.main(['resnet50', '--output', str(out)] + args) == 1
  finally:
    if (tmp_path / 'ro').exists():
      os.chmod(tmp_path / 'ro', 0o755)
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert '--' in err and str(tmp_path) in err
  assert sorted(tmp_path.rglob('*')) == before  # Nothing created or left.


def test_output_checked_before_reading_input(tmp_path, monkeypatch, capsys):
  def read(*args, **kwargs):
    raise AssertionError('read --input before checking --output')
  monkeypatch.setattr(fetch, 'sha256_of', read)
  (tmp_path / 'in.pth').write_bytes(b'x')
  out = tmp_path / 'out.npz'
  out.mkdir()
  assert fetch_weights.main(['resnet50', '--input', str(tmp_path / 'in.pth'),
                     '--output', str(out)]) == 1
  assert 'is a folder' in capsys.readouterr().err


def test_full_disk_while_writing_is_one_line(tiny_state, tmp_path, monkeypatch,
                                             capsys):
  _serve(tmp_path, monkeypatch, tiny_state)
  out_dir = tmp_path / 'out'

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(np, 'savez', full)
  assert fetch_weights.main(['tiny', '--output', str(out_dir / 'tiny.npz')]) == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'No space left' in err, err
  assert not list(out_dir.iterdir())  # Neither .part nor .npz left.
