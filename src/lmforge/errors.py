"""Errors that reach the user as one line.

Raise these inside the library; only ``cli.py`` turns them into a message and exit status 2.
A message says what happened (with the file, line or value) and what to do about it.
"""

from __future__ import annotations


class LMForgeError(Exception):
    """Base class: an expected failure the user can fix."""


class UserInputError(LMForgeError):
    """A bad argument or option value."""


class DataError(LMForgeError):
    """A corpus, source file or prepared dataset that cannot be used as it is."""


class TokenizerError(LMForgeError):
    """A tokenizer that cannot be trained, loaded or applied."""


class OutputExistsError(LMForgeError):
    """An output path already holds something we would overwrite."""


class CheckpointError(LMForgeError):
    """A run directory or checkpoint that is missing, corrupt or belongs to another model."""


class DownloadError(DataError):
    """A corpus that could not be downloaded, or whose bytes are not the ones expected."""


class LostProcessError(LMForgeError):
    """Another process of a torchrun job died or stopped answering."""
