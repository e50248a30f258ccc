"""User-facing errors: one clear sentence naming the bad value and what was expected.

Entry points catch :class:`UserError` and print its message without a stack trace;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user (config, data file, ID, CLI flag)."""


class ConfigError(UserError):
    """A config file, key, value or override is invalid."""


class DataError(UserError):
    """A data file is missing, malformed, or holds values outside what the model expects."""
