r"""A1111's prompt weights: ``(word:1.3)``, ``(word)``, ``[word]``, ``BREAK``, read into weighted pieces.

The rules are AUTOMATIC1111's (``modules/prompt_parser.py``, ``parse_prompt_attention``):
``(text)`` multiplies the weight by 1.1, ``[text]`` divides it by 1.1, ``(text:W)``
multiplies it by W, brackets nest, ``\(`` ``\)`` ``\[`` ``\]`` ``\\`` are the characters
themselves, and ``BREAK`` starts a new 75-token window. Where A1111 lets an unbalanced
bracket weigh the rest of the prompt, nbbatch refuses it with a one-line error: it is
almost always a typo, and a silent 1.1 on half a prompt is hard to notice in a picture.
Its extra-network tags (``<lora:name:0.8>``) are refused the same way (see `check_prompt`).

Turning the pieces into embeddings is the model layer's work (`nbbatch.models.conditioning`,
with `compel`); this module is plain text.
"""

from __future__ import annotations

import re

Piece = tuple[str, float]
"""A run of prompt text and its weight."""

_TOKEN = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_SYNTAX = re.compile(r"[()\[\]\\]|\bBREAK\b")
_NETWORK = re.compile(r"<(\w+):([^>]+)>")
"""A1111's extra-network tag (``<lora:name:0.8>``, ``<hypernet:name>``), which its parser takes out of the text."""

UP = 1.1
"""What ``(text)`` multiplies the weight by, as in A1111."""

MAX_PROMPT_CHARS = 20_000
"""The longest prompt nbbatch takes: far past any text encoder's window, short enough to check at once."""


def check_text(prompt: str) -> None:
    """Raise ValueError for text no prompt can be: too long to be one, or not encodable (a lone surrogate).

    Checked before anything parses or tokenizes it, so a 50 MB prompt is refused at once.
    """
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"a prompt of {len(prompt):,} characters is longer than nbbatch takes ({MAX_PROMPT_CHARS:,}): "
            "text encoders read a few hundred tokens"
        )
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = prompt[error.start]
        raise ValueError(f"a prompt holds {bad!r}, which is not a character (a lone surrogate)") from None


def is_plain(prompt: str) -> bool:
    """Whether `prompt` has no weight syntax and no ``BREAK``: it is passed to the pipeline as it is."""
    return not _SYNTAX.search(prompt)


def parse_attention(prompt: str) -> list[list[Piece]]:
    """The prompt's windows (split at ``BREAK``), each a list of (text, weight) pieces.

    Adjacent pieces of one weight are merged, so ``(red:1.0) cat`` is the single piece
    ``("red cat", 1.0)``. An unbalanced bracket raises ValueError naming it.
    """
    pieces: list[tuple[str, float] | None] = []  # None marks a BREAK
    opened: list[tuple[str, int, int]] = []  # bracket, where it opened in the text, index of its first piece

    def weigh(start: int, factor: float) -> None:
        for index in range(start, len(pieces)):
            piece = pieces[index]
            if piece is not None:
                pieces[index] = (piece[0], piece[1] * factor)

    for match in _TOKEN.finditer(prompt):
        text, weight = match.group(0), match.group(1)
        if text.startswith("\\"):
            pieces.append((text[1:] or "\\", 1.0))
        elif text in ("(", "["):
            opened.append((text, match.start(), len(pieces)))
        elif weight is not None or text in (")", "]"):
            want = "[" if text == "]" else "("
            if not opened or opened[-1][0] != want:
                raise ValueError(
                    f"unbalanced {text[-1]!r} at character {match.start() + 1} of prompt {prompt!r}: "
                    f"open it with {want!r} or write \\{text[-1]} for the character itself"
                )
            _, _, start = opened.pop()
            weigh(start, _weight(weight, prompt) if weight is not None else (UP if text == ")" else 1 / UP))
        else:
            for number, part in enumerate(_BREAK.split(text)):
                if number:
                    pieces.append(None)
                pieces.append((part, 1.0))
    if opened:
        bracket, where, _ = opened[-1]
        close = ")" if bracket == "(" else "]"
        raise ValueError(
            f"unbalanced {bracket!r} at character {where + 1} of prompt {prompt!r}: "
            f"close it with {close!r} or write \\{bracket} for the character itself"
        )
    windows: list[list[Piece]] = [[]]
    for piece in pieces:
        if piece is None:
            windows.append([])
        elif piece[0]:
            window = windows[-1]
            if window and window[-1][1] == piece[1]:
                window[-1] = (window[-1][0] + piece[0], piece[1])
            else:
                window.append(piece)
    return windows


def _weight(text: str, prompt: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"weight {text!r} in prompt {prompt!r} is not a number: write it as (word:1.3)") from None


def plain_text(prompt: str) -> str:
    """The prompt's words without the weight syntax, as A1111 shows them (windows joined by a space)."""
    return " ".join("".join(text for text, _ in window) for window in parse_attention(prompt)).strip()


def check_prompt(prompt: str) -> None:
    """Raise ValueError for a prompt nbbatch cannot read as its writer meant: an unbalanced bracket, an A1111 tag.

    A1111 loads ``<lora:name:0.8>`` from its own LoRA folder and takes the tag out of the
    text; read as words, it would draw a different picture with no LoRA, silently. The
    error says how nbbatch loads one instead. Text that is no prompt at all fails `check_text` first.
    """
    check_text(prompt)
    tag = _NETWORK.search(prompt)
    if tag:
        kind, arguments = tag.groups()
        given = arguments.split(":")[1:2] or ["1"]  # A1111's weight follows the name; 1 when none does
        weight = given[0] if re.fullmatch(r"[+-]?[.\d]+", given[0]) else "WEIGHT"
        how = (
            f"load its file with --lora PATH:{weight} (loras=[(PATH, {weight})] in Python) and take the tag out"
            if kind.lower() in ("lora", "lyco")
            else f"nbbatch has no {kind} networks: take the tag out"
        )
        raise ValueError(f"prompt {prompt!r} holds the A1111 tag {tag.group(0)!r}, which nbbatch does not read: {how}")
    if not is_plain(prompt):
        parse_attention(prompt)
