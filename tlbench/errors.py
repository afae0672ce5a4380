"""Errors a researcher can act on: each message names the input, what was expected and the fix."""


class TlbenchError(Exception):
    """Base class for every error tlbench raises on bad input; the CLI prints it without a traceback."""


class ConfigError(TlbenchError):
    """A configuration value that cannot work (unknown name, wrong type, impossible combination)."""


class DatasetError(TlbenchError):
    """A dataset root that is missing, incomplete or laid out differently from what its loader expects."""


class WeightsError(TlbenchError):
    """Pretrained weights that are unavailable offline or do not match the model."""


class ImageDecodeError(TlbenchError):
    """One image file that cannot be decoded; extraction skips it and lists it in results.json."""


class RunFinished(Exception):
    """The run directory already holds this run's result and the job was requeued after writing it:
    nothing to do, and not an error (the CLI exits 0)."""


class StorageFullError(TlbenchError):
    """A disk (or quota) that filled up while writing features; the partial entry is removed."""
