r"""`semcorr-convert-weights`: a state dict from one file format to another.

  semcorr-convert-weights resnet101-63fe2227.pth resnet101.npz
  semcorr-convert-weights model.npz model.safetensors
  semcorr-convert-weights model.safetensors model.pth

Reads `.pth`/`.pt`/`.bin` (either `torch.save` format, without torch and
refusing pickles that refer to anything but tensors), `.safetensors` or
`.npz` (`semcorr_jax.weights.state_dict.read_state_dict`) and writes the
format of OUTPUT's suffix: `.safetensors`, `.pth`/`.pt` (a zip-format file
`torch.load(weights_only=True)` reads) or `.npz`. The output is written to
a temporary name, then renamed; every failure is one `error:` line and exit
status 1. (`python -m semcorr_jax.cli.convert_weights` is the same tool.)
"""

from __future__ import annotations

import sys

from absl import flags

from semcorr_jax.cli import common
from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import state_dict

PROG = 'semcorr-convert-weights'


def _flag_values() -> flags.FlagValues:
  """The tool's flags, in a FlagValues of their own (`main` may run several
  times in one process, beside other tools' flags)."""
  values = flags.FlagValues()
  flags.DEFINE_string('input', None, 'the state dict to read (or give it as '
                      'the first argument)', flag_values=values)
  flags.DEFINE_string('output', None, 'the file to write; its suffix picks '
                      'the format (or give it as the second argument)',
                      flag_values=values)
  return values


def _paths(values: flags.FlagValues, args: list[str]) -> tuple[str, str]:
  """(input, output) from the flags or the two positional arguments."""
  given = [values.input, values.output]
  rest = list(args)
  for i, value in enumerate(given):
    if value is None and rest:
      given[i] = rest.pop(0)
  if rest or None in given:
    raise SemcorrError('give INPUT and OUTPUT (arguments or --input/--output)'
                       f'; got {args}')
  return given[0], given[1]


def main(argv=None) -> int:
  """CLI (`argv` without the program name; None: sys.argv[1:]).

  Returns:
    The exit status: 0, or 1 after an error.
  """
  def body(values, args):
    source, output = _paths(values, args)
    state = state_dict.read_state_dict(source)
    state_dict.save_state_dict(state, output)
    print(f'wrote {len(state)} arrays to {output}')

  return common.run_own_flags(PROG, sys.modules[__name__], _flag_values, body,
                              argv)


def run() -> None:
  """Console-script entry point."""
  sys.exit(main())


if __name__ == '__main__':
  run()
