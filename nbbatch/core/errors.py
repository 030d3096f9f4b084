"""Errors as the one line a person reads."""

from __future__ import annotations


def first_line(error: BaseException | None) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    text = str(error).strip() if error is not None else ""
    return text.splitlines()[0] if text else type(error).__name__


class OutOfMemory(RuntimeError):
    """A chunk did not fit in the device's memory (its memory already freed): the engine may halve the chunk."""
