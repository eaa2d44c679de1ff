"""User-facing errors.

Every failure caused by the user's input (a missing file, a corrupt image, a
wrong shape, a checkpoint that does not fit the model, a non-finite loss) is
raised as a `SemcorrError` with one line that says what is wrong and what to do.
The command-line entry points print that line and exit non-zero without a
traceback; library callers can catch the class.
"""


class SemcorrError(Exception):
  """An error the user can fix; its message is one self-contained line."""


class NonFiniteLossError(SemcorrError):
  """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


class CheckpointMismatchError(SemcorrError):
  """A readable checkpoint whose arrays do not fit the model of the config."""


class CheckpointCorruptError(SemcorrError):
  """A checkpoint whose files are damaged (truncated, unreadable metadata)."""
