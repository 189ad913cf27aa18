"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class MixtralTrtError(Exception):
    """Bad input from the user (a file, tensor, argument); the message names it and says what is wrong."""


class CheckpointError(MixtralTrtError):
    """A checkpoint directory or file that cannot be loaded as the config says."""


class ConfigError(MixtralTrtError):
    """A config.json / params.json whose values are missing or inconsistent."""
