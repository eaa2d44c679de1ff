r"""`semcorr-fetch-weights`: torchvision's ImageNet ResNets as our `.npz`.

One command (needs internet once; no torch):

  semcorr-fetch-weights resnet101 --output ~/weights/resnet101.npz
  semcorr-fetch-weights resnet50 --output ~/weights/resnet50.npz

then train with `--config.backbone.weights=~/weights/resnet101.npz`. The
model is the first argument or `--model` (resnet50, resnet101);
`python -m semcorr_jax.cli.fetch_weights` is the same tool
(the library: `semcorr_jax.weights.fetch`).

It downloads torchvision's `IMAGENET1K_V1` file (`ResNet101_Weights` /
`ResNet50_Weights` in torchvision/models/resnet.py; the weights SFNet used)
from download.pytorch.org into a temporary file beside the output, checks
that its sha256 starts with the 8 hex digits in the file name (as
`torch.hub` does), reads it with `torch_pickle.read_torch_file` (no torch),
checks that it is a complete torchvision ResNet state dict of that depth
(`convert_torchvision_resnet`: every key, every shape, nothing extra),
and writes the state dict, torchvision keys unchanged, as `.npz` (written
to a temporary name, then renamed). The download is deleted afterwards
unless `--keep_download` is given.

Offline: download the file elsewhere (`--help` prints the URLs) and
convert it here with `--input`:

  semcorr-fetch-weights resnet101 \
    --input resnet101-63fe2227.pth --output ~/weights/resnet101.npz

The output location (and, with `--keep_download`, the download's final
name) is checked before anything is downloaded or read. Every failure (an
unwritable output, no network, hash mismatch, incomplete file, a full disk)
is one `error:` line and exit status 1; nothing half-written is left.
"""

from __future__ import annotations

import sys

from absl import flags

from semcorr_jax.cli import common
from semcorr_jax.cli import flag_parsing
from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import fetch

PROG = 'semcorr-fetch-weights'


def _flag_values() -> flags.FlagValues:
  """The tool's absl flags, in a FlagValues of their own: `main` may run
  several times in one process, beside other tools' flags (tests)."""
  values = flags.FlagValues()
  flags.DEFINE_enum(
      'model', None, sorted(fetch.MODELS),
      'the model (or give it as the first argument); ' +
      '; '.join(f'{k}: {m.url}' for k, m in fetch.MODELS.items()),
      flag_values=values)
  flags.DEFINE_string('output', None,
                      'the .npz to write (default: ./<model>.npz)',
                      flag_values=values)
  flags.DEFINE_string('input', None,
                      'convert this already downloaded .pth instead',
                      flag_values=values)
  flags.DEFINE_bool('keep_download', False, 'keep the .pth beside the output',
                    flag_values=values)
  flags.DEFINE_float('timeout', 60.0, 'network timeout in seconds',
                     flag_values=values)
  return values


def _model_name(values: flags.FlagValues, args: list[str]) -> str:
  """The model named by --model or the one positional argument."""
  if values.model is not None and not args:
    return values.model
  if len(args) != 1 or values.model is not None:
    raise SemcorrError(f'give one model, as the first argument or --model '
                       f'({", ".join(sorted(fetch.MODELS))}); got {args}')
  if args[0] not in fetch.MODELS:
    raise SemcorrError(flag_parsing.choice_error_line(
        f'model {args[0]!r}', args[0], sorted(fetch.MODELS)))
  return args[0]


def main(argv=None) -> int:
  """CLI (`argv` without the program name; None: sys.argv[1:]).

  `--help` prints the module docstring and the flags. Every failure is one
  `error:` line on stderr.

  Returns:
    The exit status: 0, or 1 after an error.
  """
  def body(values, args):
    name = _model_name(values, args)
    fetch.fetch(name, values.output or f'{name}.npz', values.input,
                values.keep_download, values.timeout)

  return common.run_own_flags(PROG, sys.modules[__name__], _flag_values, body,
                              argv)


def run() -> None:
  """Console-script entry point."""
  sys.exit(main())


if __name__ == '__main__':
  run()
