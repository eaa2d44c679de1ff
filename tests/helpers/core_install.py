"""Inference as a core install runs it: only the core dependencies importable.

  python tests/helpers/core_install.py WORKDIR OUT_DIR

Puts a finder first in `sys.meta_path` that refuses every top-level module
of an installed distribution outside the core dependency closure (the
package's requirements without extras, followed through the installed
metadata): `tensorflow`, `tensorflow_datasets`, `tensorboard` and `clu`
(the `train` extra), but also `tqdm`, `torch`, `pytest`... It records each
attempt with its stack, then, as a user of the core install would:

1. `semcorr_jax.load(WORKDIR)` and `Matcher.match` on the images that
   `pair()` makes, saving `mapping_st` / `mapping_ts` to OUT_DIR/api.npz;
2. the `semcorr-match` console script (its entry point, as the installed
   script calls it) on the same two images saved as PNG files, writing
   OUT_DIR/cli.png and OUT_DIR/cli_mapping.npy;
3. imports every module of `semcorr_jax.configs` and builds
   `sfnet.get_config('test')` through the packaged name.

OUT_DIR/report.json lists the blocked import attempts: the module, the file
of the import statement (`importer`) and the stack. Libraries' own optional
imports (jax tries `nvidia`, `filelock`, `flatbuffers`) fail as they do in a
core venv; an attempt from semcorr_jax, or of the training stack from
anywhere, is what the test counts. Lookups
through `importlib.util.find_spec` get None, as where the packages are not
installed (etils.epath asks it whether TensorFlow is there), and are listed
under `probed`.
"""

import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import json
import os
import pkgutil
import re
import sys
import traceback

import numpy as np
from packaging import requirements

PACKAGE = 'semcorr_jax'
# Distributions every venv has (pip's own, and setuptools on Python < 3.12).
VENV_DEFAULTS = ('pip', 'setuptools')
# The `train` extra's packages: blocked whatever the metadata says.
TRAINING_STACK = ('tensorflow', 'tensorflow_datasets', 'tensorboard', 'clu')
_IMPORTLIB = os.path.dirname(importlib.__file__)


def _canonical(name):
  return re.sub(r'[-_.]+', '-', name).lower()


def core_closure():
  """Canonical names of the distributions a core install brings in."""
  seen = set()
  todo = [(PACKAGE, frozenset())]
  while todo:
    name, extras = todo.pop()
    key = (_canonical(name), extras)
    if key in seen:
      continue
    seen.add(key)
    try:
      dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
      continue  # a requirement for another platform or Python
    for line in dist.requires or ():
      req = requirements.Requirement(line)
      envs = [{'extra': e} for e in extras] or [{'extra': ''}]
      if req.marker is None or any(req.marker.evaluate(e) for e in envs):
        todo.append((req.name, frozenset(req.extras)))
  return {name for name, _ in seen} | set(VENV_DEFAULTS)


def blocked_modules():
  """Top-level modules of installed distributions outside the closure."""
  closure = core_closure()
  blocked = set(TRAINING_STACK)
  for module, dists in importlib.metadata.packages_distributions().items():
    if module != PACKAGE and not any(_canonical(d) in closure for d in dists):
      blocked.add(module)
  return blocked - set(sys.stdlib_module_names)


class Blocker(importlib.abc.MetaPathFinder):
  """Refuses the modules outside the core install and records who asked.

  Imports raise ModuleNotFoundError; `importlib.util.find_spec` probes
  (etils.epath asks whether TensorFlow is installed) answer None, as they
  do where the package is absent, and are recorded apart.
  """

  def __init__(self, blocked):
    self.blocked = frozenset(blocked)
    self.attempts = []
    self.probes = []
    self._find_spec = importlib.util.find_spec

  def is_blocked(self, fullname):
    return fullname.partition('.')[0] in self.blocked

  def probe(self, name, package=None):
    if self.is_blocked(name):
      self.probes.append(name)
      return None
    return self._find_spec(name, package)

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if self.is_blocked(fullname):
      frames = traceback.extract_stack()[:-1]
      callers = [f.filename for f in frames
                 if not f.filename.startswith('<frozen')
                 and os.path.dirname(f.filename) != _IMPORTLIB]
      self.attempts.append({
          'name': fullname,
          'importer': callers[-1] if callers else '?',
          'stack': ''.join(traceback.format_list(frames[-12:]))})
      raise ModuleNotFoundError(
          f'No module named {fullname!r} (core install)', name=fullname)
    return None


def pair():
  """(source, target): (48, 80, 3) and (72, 56, 3) uint8 images.

  Sizes differ from each other and from the `test` config's 64x64 input,
  so the lift back to the original grids shows in the shapes; uint8, so a
  PNG file holds exactly the array the API gets.
  """
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:48, 0:80] / 10.0
  source = np.stack([0.5 + 0.4 * np.sin(xx + yy), 0.5 + 0.4 * np.cos(xx),
                     rng.random((48, 80))], -1)
  target = rng.random((72, 56, 3))
  return tuple(np.round(x * 255).astype(np.uint8) for x in (source, target))


def main(workdir, out_dir):
  blocker = Blocker(blocked_modules())
  sys.meta_path.insert(0, blocker)
  importlib.util.find_spec = blocker.probe
  report = {'blocked_modules': sorted(blocker.blocked)}
  try:
    # Imported after the blocker is in place: what they import is the test.
    import semcorr_jax  # pylint: disable=g-import-not-at-top
    from PIL import Image  # pylint: disable=g-import-not-at-top

    source, target = pair()
    matcher = semcorr_jax.load(workdir)
    out = matcher.match(source, target)
    same = matcher.match(source, source)
    np.savez(os.path.join(out_dir, 'api.npz'),
             mapping_st=np.asarray(out['mapping_st']),
             mapping_ts=np.asarray(out['mapping_ts']),
             same_st=np.asarray(same['mapping_st']))
    report['step'] = int(matcher.step)

    paths = {}
    for name, image in (('source', source), ('target', target)):
      paths[name] = os.path.join(out_dir, f'{name}.png')
      Image.fromarray(image).save(paths[name])
    (entry,) = importlib.metadata.entry_points(
        group='console_scripts', name='semcorr-match')
    sys.argv = ['semcorr-match', f'--workdir={workdir}',
                f'--source={paths["source"]}', f'--target={paths["target"]}',
                f'--output={os.path.join(out_dir, "cli.png")}']
    try:
      entry.load()()
    except SystemExit as e:
      report['cli_exit'] = e.code
    else:
      report['cli_exit'] = 0

    configs = importlib.import_module('semcorr_jax.configs')
    report['configs'] = {}
    for module in pkgutil.iter_modules(configs.__path__):
      config = importlib.import_module(
          f'semcorr_jax.configs.{module.name}').get_config('test')
      report['configs'][module.name] = config.method
  finally:
    report['blocked'] = blocker.attempts
    report['probed'] = sorted(set(blocker.probes))
    with open(os.path.join(out_dir, 'report.json'), 'w') as f:
      json.dump(report, f, indent=1)


if __name__ == '__main__':
  main(*sys.argv[1:])
