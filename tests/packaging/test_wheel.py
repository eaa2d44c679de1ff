"""The wheel: every module, the configs as `semcorr_jax.configs`, py.typed, data, licence.

One wheel is built from this checkout (`pip wheel --no-deps`, a few
seconds) and its file list and METADATA are checked against the folders
and pyproject.toml.
"""

import email.parser
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

from packaging import markers
from packaging import requirements
import pytest

from helpers import paths

REPO = paths.REPO
PACKAGE = REPO / 'semcorr_jax'
# sha256 of the Apache License 2.0 text as the ASF publishes it
# (https://www.apache.org/licenses/LICENSE-2.0.txt; Debian ships the same
# bytes as /usr/share/common-licenses/Apache-2.0).
APACHE_2_SHA256 = (
    'cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30')
TRAINING_STACK = {'tensorflow', 'tensorflow-cpu', 'tensorflow-datasets',
                  'tensorboard', 'clu'}


def _pyproject():
  return tomllib.loads((REPO / 'pyproject.toml').read_text())


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  # Built from a copy of what the wheel is made of: setuptools builds in
  # the source tree, and a stale build/ there would leak into the wheel.
  src = tmp_path_factory.mktemp('src')
  for name in ('pyproject.toml', 'README.md', 'LICENSE'):
    shutil.copy(REPO / name, src / name)
  for name in ('semcorr_jax', 'configs'):
    shutil.copytree(REPO / name, src / name,
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
  out = tmp_path_factory.mktemp('wheel')
  result = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--quiet', '-w',
       str(out), str(src)], capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  (path,) = out.glob('semcorr_jax-*.whl')
  with zipfile.ZipFile(path) as z:
    files = {name: z.read(name) for name in z.namelist()}
  (dist_info,) = {n.split('/')[0] for n in files if '.dist-info/' in n}
  return files, dist_info


def _source_files():
  """Wheel path -> repository file, for every file the wheel must hold."""
  wanted = {}
  for f in PACKAGE.rglob('*'):
    if f.is_file() and '__pycache__' not in f.parts and f.suffix != '.pyc':
      wanted[f.relative_to(REPO).as_posix()] = f
  for f in (REPO / 'configs').glob('*.py'):
    wanted[f'semcorr_jax/configs/{f.name}'] = f
  return wanted


def test_listed_packages_are_the_package_folders():
  # pyproject lists the packages (configs/ is mapped, so discovery cannot
  # be used): a new subpackage folder must be added there.
  listed = set(_pyproject()['tool']['setuptools']['packages'])
  folders = {'.'.join(p.parent.relative_to(REPO).parts)
             for p in PACKAGE.rglob('__init__.py')
             if '__pycache__' not in p.parts}
  assert listed == folders | {'semcorr_jax.configs'}
  assert (_pyproject()['tool']['setuptools']['package-dir']
          == {'semcorr_jax.configs': 'configs'})


def test_wheel_holds_every_module_configs_py_typed_and_data(wheel):
  files, dist_info = wheel
  wanted = _source_files()
  assert 'semcorr_jax/py.typed' in wanted
  assert 'semcorr_jax/configs/sfnet.py' in wanted
  assert 'semcorr_jax/configs/__init__.py' in wanted
  assert 'semcorr_jax/data/pf_pascal_test_images.txt' in wanted
  missing = sorted(set(wanted) - set(files))
  assert not missing, missing
  for name, source in wanted.items():
    assert files[name] == source.read_bytes(), name
  unexpected = sorted(n for n in files
                      if not n.startswith(dist_info) and n not in wanted)
  assert not unexpected, unexpected
  # Nothing else at the top level: no `configs` or `tests` package.
  tops = {n.split('/')[0] for n in files}
  assert tops == {'semcorr_jax', dist_info}


def test_license_is_the_apache_2_text():
  text = (REPO / 'LICENSE').read_bytes()
  assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256
  system_copy = pathlib.Path('/usr/share/common-licenses/Apache-2.0')
  if system_copy.is_file():
    assert text == system_copy.read_bytes()
  assert _pyproject()['project']['license'] == 'Apache-2.0'


def test_wheel_metadata_declares_the_licence_and_ships_it(wheel):
  files, dist_info = wheel
  meta = email.parser.Parser().parsestr(
      files[f'{dist_info}/METADATA'].decode())
  assert meta['License-Expression'] == 'Apache-2.0'
  assert meta.get_all('License-File') == ['LICENSE']
  assert (files[f'{dist_info}/licenses/LICENSE']
          == (REPO / 'LICENSE').read_bytes())
  assert 'Typing :: Typed' in meta.get_all('Classifier')


def _environment(system, machine):
  env = markers.default_environment()
  env.update(sys_platform=system, platform_machine=machine,
             platform_system={'linux': 'Linux', 'darwin': 'Darwin',
                              'win32': 'Windows'}[system])
  return env


@pytest.mark.parametrize('system, machine, tensorflow', [
    ('linux', 'x86_64', 'tensorflow-cpu'),
    ('win32', 'AMD64', 'tensorflow-cpu'),
    ('linux', 'aarch64', 'tensorflow'),
    ('darwin', 'arm64', 'tensorflow'),
])
def test_wheel_requirements_per_platform(wheel, system, machine, tensorflow):
  files, dist_info = wheel
  meta = email.parser.Parser().parsestr(
      files[f'{dist_info}/METADATA'].decode())
  reqs = [requirements.Requirement(r) for r in meta.get_all('Requires-Dist')]
  env = _environment(system, machine)

  def names(extra):
    return {r.name.lower() for r in reqs
            if r.marker is None or r.marker.evaluate({**env, 'extra': extra})}

  core = names('')
  assert not core & TRAINING_STACK, core & TRAINING_STACK
  assert {'jax', 'flax', 'optax', 'orbax-checkpoint', 'safetensors', 'etils',
          'chex', 'numpy'} <= core
  train = names('train')
  # Exactly one TensorFlow wheel per platform; the rest of `train` comes
  # from `train-no-tf` (a self-reference).
  assert train & {'tensorflow', 'tensorflow-cpu'} == {tensorflow}
  assert 'semcorr-jax' in {r.name.lower().replace('_', '-') for r in reqs
                           if r.marker and r.marker.evaluate(
                               {**env, 'extra': 'train'})}
  no_tf = names('train-no-tf')
  assert {'tensorflow-datasets', 'tensorboard', 'clu'} <= no_tf
  assert not no_tf & {'tensorflow', 'tensorflow-cpu'}
