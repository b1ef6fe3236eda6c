"""Named errors. Every message says what to change."""

from __future__ import annotations


class NNAuditError(Exception):
    """Base class for every error nnaudit raises on purpose."""


class ConfigError(NNAuditError):
    """The audit config is wrong. ``key`` is the dotted config key at fault."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"config error at '{key}': {message}")


class DataError(NNAuditError):
    """The data cannot be loaded or does not fit the model."""


class ModelError(NNAuditError):
    """The model cannot be loaded or its outputs do not fit the data."""


class PluginError(NNAuditError):
    """A plugin is missing, duplicated, or refused to run. The message names the plugin."""


class ResultsError(NNAuditError):
    """A results file is missing, unreadable or does not validate."""


class RunDirError(NNAuditError):
    """The output directory cannot take this run: locked by a live run, or holding a finished one."""


class StoreError(NNAuditError):
    """The results store cannot be reached, refuses the run, or holds no run for a reference. The message shows
    the store's URL with its password hidden."""
