"""User-facing errors: one clear sentence naming the bad value and what was expected.

Entry points catch :class:`UserError` and print its message without a stack trace;
anything else is a bug and keeps its traceback. Suspicious but usable input is a
:class:`DataWarning` (see :func:`warn_user`): the CLI prints it as one ``warning:`` line and a
training run also records it in its ``summary.json``.
"""

import warnings


class UserError(Exception):
    """Bad input from the user (config, data file, ID, CLI flag)."""


class ConfigError(UserError):
    """A config file, key, value or override is invalid."""


class DataError(UserError):
    """A data file is missing, malformed, or holds values outside what the model expects."""


class DataWarning(UserWarning):
    """Input that is probably a mistake but still gives a defined result (said, not raised)."""


def warn_user(message: str) -> None:
    """Emit ``message`` as a :class:`DataWarning` (one ``warning:`` line in the CLI)."""
    warnings.warn(message, DataWarning, stacklevel=2)
