"""One error family: every message names the file, row or field and what was expected."""


class FerError(Exception):
    """Base of every error the app shows to a user (pages catch this one type)."""


class DataFormatError(FerError):
    """A dataset file or folder is not in a format we read, or holds a bad row/field."""


class DataPathError(FerError):
    """A data path typed into the app lies outside the folder the server allows (FER_DATA_ROOT)."""


class CheckpointError(FerError):
    """A weights file is corrupt, truncated, pickled, or does not match the architecture."""


class RunDirError(FerError):
    """A run directory is missing, unreadable, unwritable or inconsistent."""


class ConfigError(FerError):
    """A run config has an unknown key or a value of the wrong type or range."""
