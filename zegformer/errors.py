"""Exceptions with messages meant for the person who made the mistake (no traceback needed)."""


class ZegFormerError(ValueError):
    """Base class of every error this library raises on bad input or missing files."""


class ConfigError(ZegFormerError):
    """A config file is missing, unsafe, or a key/value in it (or in --opts) is wrong."""


class WeightsError(ZegFormerError):
    """Weights could not be found, downloaded, or do not match the model."""


class VocabularyError(ZegFormerError):
    """The class list is empty, too long, has duplicates or unusable names."""


class ImageError(ZegFormerError):
    """The input is not an image this library can read."""


class DatasetError(ZegFormerError):
    """A dataset on disk is missing, incomplete, unreadable or inconsistent (names the file)."""
