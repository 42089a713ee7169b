"""Exceptions with messages a user can act on."""

from __future__ import annotations


class UnforgetError(Exception):
    """Base class of every error unforget raises on purpose."""


class ConfigError(UnforgetError):
    """A config file or a command-line override is wrong."""


class RegistryError(UnforgetError, KeyError):
    """A name is not in a registry (models, datasets, judges, methods, studies)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(UnforgetError):
    """A dataset file or sample cannot be used: names the file/line/index and what to do."""


class BadSampleError(DataError):
    """One sample is unusable (corrupt image, label outside the class list...)."""

    def __init__(self, message: str, *, sample_id: str | None = None, path: str | None = None):
        super().__init__(message)
        self.sample_id = sample_id
        self.path = path


class ModelLoadError(UnforgetError):
    """A model cannot be loaded (not found, offline, unsupported family, refused pickle)."""


class JudgeError(UnforgetError):
    """A judge could not produce a verdict (endpoint down, unparseable output)."""


class TrainingError(UnforgetError):
    """Training had to stop (non-finite loss, exploding gradients)."""
