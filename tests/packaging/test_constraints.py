"""requirements/constraints.txt pins what CI installs, within pyproject's bounds.

`make setup` (and so `make test` and CI's .ci/run) installs with
`pip install -c requirements/constraints.txt`; every core and `train`
dependency must be pinned there with `==`, at a version its declared
bounds allow.
"""

import re
import tomllib

from packaging import requirements
from packaging import utils
from packaging import version

from helpers import paths

REPO = paths.REPO
CONSTRAINTS = REPO / 'requirements' / 'constraints.txt'


def _pins():
  """{normalised name: Version} of the `name==version` lines."""
  pins = {}
  for line in CONSTRAINTS.read_text().splitlines():
    line = line.split('#', 1)[0].strip()
    if not line:
      continue
    # Constraints must be plain pins: pip refuses URLs and editables there.
    match = re.fullmatch(r'([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)',
                         line)
    assert match, f'not a name==version pin: {line!r}'
    name = utils.canonicalize_name(match[1])
    assert name not in pins, f'{name} pinned twice'
    pins[name] = version.Version(match[2])
  return pins


def _requirements(project, group):
  """The requirements of `group` ('' = core), self-references expanded."""
  extras = project['optional-dependencies']
  own = utils.canonicalize_name(project['name'])
  out = []
  for line in project['dependencies'] if not group else extras[group]:
    req = requirements.Requirement(line)
    if utils.canonicalize_name(req.name) == own:
      for extra in req.extras:
        out += _requirements(project, extra)
    else:
      out.append(req)
  return out


def test_core_and_train_dependencies_are_pinned_within_bounds():
  project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
  pins = _pins()
  reqs = _requirements(project, '') + _requirements(project, 'train')
  names = {utils.canonicalize_name(r.name) for r in reqs}
  # Both TensorFlow wheels (x86-64 / elsewhere) and the core are there.
  assert {'tensorflow', 'tensorflow-cpu', 'jax', 'clu', 'etils'} <= names
  for req in reqs:
    name = utils.canonicalize_name(req.name)
    assert name in pins, f'{name} is not pinned in {CONSTRAINTS.name}'
    assert req.specifier.contains(pins[name], prereleases=True), (
        f'{name}=={pins[name]} is outside pyproject\'s {req.specifier}')
  assert utils.canonicalize_name(project['name']) not in pins


def test_make_and_ci_install_from_the_constraints():
  makefile = (REPO / 'Makefile').read_text()
  stamp = re.search(r'^\$\(VENV\)/\.installed:(.*)$', makefile, re.M)
  assert stamp, 'no .installed rule'
  assert 'CONSTRAINTS' in stamp[1] and 'pyproject.toml' in stamp[1]
  assert 'CONSTRAINTS := requirements/constraints.txt' in makefile
  assert ("pip install --quiet -c $(CONSTRAINTS) -e '.[train,test,pretrained]'"
          in makefile)
  ci = (REPO / '.ci' / 'run').read_text()
  assert re.search(r'^make test$', ci, re.M)
