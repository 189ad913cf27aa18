"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class MixtralTrtError(Exception):
    """Bad input from the user (a file, tensor, argument); the message names it and says what is wrong."""

    exit_code = 2  # the CLI's exit status for this error


class CheckpointError(MixtralTrtError):
    """A checkpoint directory or file that cannot be loaded as the config says."""


class ConfigError(MixtralTrtError):
    """A config.json / params.json whose values are missing or inconsistent."""


class WriteError(MixtralTrtError):
    """An output that could not be written (disk full, read-only file system, ...); the previous output is
    unchanged. An I/O failure rather than a bad argument: the CLI exits with code 1."""

    exit_code = 1
