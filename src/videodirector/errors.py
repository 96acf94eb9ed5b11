"""User-facing errors.

Every mistake a user can make (a missing file, a mask count that does not match the
frames, an edit word absent from the prompt...) raises :class:`UserError` with one line
that names the problem and the fix. The CLI prints that line and exits with status 2;
it never shows a traceback for these.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input, with a one-line message that says how to fix it."""


class ConfigError(UserError):
    """An unknown key, a wrong type or an inconsistent value in a config."""


class InputError(UserError):
    """A video or mask that cannot be read, or that does not fit the settings."""


class WeightsNotFoundError(UserError):
    """Model weights that are neither in a local folder nor reachable on the hub."""


class OutputExistsError(UserError):
    """An output folder or cache entry that would be overwritten without ``--overwrite``."""


class DeviceOutOfMemoryError(UserError):
    """The accelerator ran out of memory; the message names the flags that help."""


class CacheEntryError(UserError):
    """An inversion cache entry that fails verification (truncated, edited or from other settings)."""


class OutputLocationError(UserError):
    """An output or cache location that cannot be written, or would lose files the tool did not write."""
