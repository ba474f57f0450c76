"""The two ways a ``lit-gpt`` command can fail on purpose, each printed as one ``error:`` line (standard library only).

- ``ConfigError``: bad user input (a config value, a path, a flag, a file that is not what it should be). The
  command exits with status 2 before doing any work, or with nothing lost.
- ``RunFailed``: a run that started and had to stop (e.g. a non-finite loss); exit status 1. The message names the
  state that was saved and how to resume from it.

Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input: a config value, a data path, a sampling option, an unreadable checkpoint.

    The command line prints its message as one line and exits with status 2, without a traceback, so every
    message says what was wrong and what to do instead.
    """


class RunFailed(RuntimeError):
    """A run that started and had to stop; the command line prints the message as one line and exits with status 1.

    The message says what happened, which state was saved, and how to resume from it.
    """
