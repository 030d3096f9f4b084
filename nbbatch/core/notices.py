"""Notices: what nbbatch tells the user while a batch runs (a prompt cut off, words a model does not know, ...).

They are Python warnings, unless a front end takes them itself: the panel runs its batches in
a thread, whose warnings would end up in the kernel's log rather than under the panel, so it
hands each notice to its message line with `notices_to`. The receiver lives in a context
variable: it holds in the thread that set it, and nowhere else.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar

_receiver: ContextVar[Callable[[str], None] | None] = ContextVar("nbbatch_notices", default=None)


def notice(message: str, category: type[Warning] = UserWarning, stacklevel: int = 2) -> None:
    """Tell the user `message`: to the receiver `notices_to` set in this thread, else as a warning.

    `stacklevel` counts as `warnings.warn`'s does, from the caller of `notice`.
    """
    receiver = _receiver.get()
    if receiver is not None:
        receiver(message)
    else:
        warnings.warn(message, category, stacklevel=stacklevel + 1)


@contextlib.contextmanager
def notices_to(receiver: Callable[[str], None]) -> Iterator[None]:
    """Within the block (and this thread), hand every notice to `receiver` instead of warning."""
    token = _receiver.set(receiver)
    try:
        yield
    finally:
        _receiver.reset(token)
