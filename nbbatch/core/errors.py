"""Errors as the one line a person reads."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def first_line(error: BaseException | None) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    text = str(error).strip() if error is not None else ""
    return text.splitlines()[0] if text else type(error).__name__


class SettingError(ValueError):
    """A setting's value refused, naming its `field` so that each front end can say it its own way.

    The message reads ``true_cfg must be a number from 1 to 100 (1 is off), not 0.5``;
    `said_as` puts the magic's ``--true-cfg`` or the panel's "true cfg" in the field's place.
    `problem` is what follows the name: a predicate (``must be ...``) or, when `predicate` is
    False, a sentence of its own that follows a colon (``loras: LoRA weight must be a number``).
    Where it needs another setting (`needs`), ``{needs}`` in `problem` names that one the same way.
    """

    def __init__(self, field: str, problem: str, *, predicate: bool = True, needs: str | None = None) -> None:
        self.field, self.problem, self.predicate, self.needs = field, problem, predicate, needs
        super().__init__(self.said_as(field, needs))

    def said_as(self, name: str, needs: str | None = None) -> str:
        """The message with `name` for the field and `needs` for the one it needs: ``--refiner-at ... --refiner``."""
        problem = self.problem if self.needs is None else self.problem.replace("{needs}", needs or self.needs)
        return f"{name}{' ' if self.predicate else ': '}{problem}"


class OutOfMemory(RuntimeError):
    """A chunk did not fit in the device's memory (its memory already freed): the engine may halve the chunk."""


def raised_by_nbbatch(error: BaseException) -> bool:
    """Whether nbbatch's own code raised `error` (a refusal it words for a person), not a library it called.

    The innermost frame of its traceback decides: a ``ValueError`` from inside diffusers is
    a library's, and its traceback is worth keeping; one nbbatch raises is a one-line message.
    """
    traceback = error.__traceback__
    if traceback is None:
        return True
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return Path(traceback.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)
