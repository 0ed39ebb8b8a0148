"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2."""


class RlhfError(Exception):
    """Base class: the message must name the input at fault and what to do about it."""


class ConfigError(RlhfError):
    pass


class DataError(RlhfError):
    pass


class ModelError(RlhfError):
    pass


class RunDirError(RlhfError):
    pass


class TrainingError(RlhfError):
    pass
