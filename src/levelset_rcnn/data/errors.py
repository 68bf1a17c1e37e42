"""Errors raised for bad dataset input (missing files, malformed JSON, inconsistent records)."""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A dataset file or record is missing, malformed or inconsistent.

    The message always names the offending file and, where one applies, the record
    (image id, annotation id, line number) so the user can fix the input.
    """
