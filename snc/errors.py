"""The error type of invalid options and inputs."""


class ConfigError(ValueError):
    """An invalid option or input: the message says what is wrong and how to fix it.

    The entry points print it in one or two lines (no traceback) and exit non-zero."""
