r"""Prompt templates: ``{red|green|blue}``, ``{2$$a|b|c}`` and ``__wildcard__``, expanded with `dynamicprompts`.

The syntax and the sampling are the library's (the one InvokeAI uses). nbbatch splits a
line into its top-level parts and samples each template part on its own, so that every
prompt knows the values chosen for it: the prompts are the same, in the same order, as
the library's combinatorial generator gives, and each records its template and choices.

Braces have two uses in a prompt line. In the magic, ``{name}`` (an identifier and no
``|``) is a variable from the notebook, filled before the template is expanded; every
other ``{...}`` is a template. ``\{`` and ``\}`` are literal braces everywhere (``{{`` is
not: nested templates such as ``{a|{b|c}}`` end in ``}}``).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbbatch.core.seeds import MAX_IMAGES, SEED_MAX, random_seeds

if TYPE_CHECKING:
    from dynamicprompts.commands import Command
    from dynamicprompts.sampling_context import SamplingContext

_OPEN, _CLOSE = "\ue000", "\ue001"  # literal braces, hidden from the template parser
_VARIABLE = re.compile(r"\{([A-Za-z_]\w*)\}")
_WILDCARD = re.compile(r"__\S+?__")


@dataclass(frozen=True)
class Prompt:
    """One prompt made from a line: its text and, when the line was a template, the template and choices."""

    text: str
    template: str | None = None
    choices: tuple[str, ...] = ()
    seed: int | None = None  # the seed of a random draw


def fill_variables(line: str, number: int, namespace: Mapping[str, Any]) -> str:
    r"""`line` with each ``{name}`` (an identifier alone in braces) replaced by that variable's value.

    Braces in a value become literal (``\{``/``\}``), so a value is never read as a
    template. An unknown name raises ValueError naming it and the line.
    """

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in namespace:
            raise ValueError(f"prompt line {number}: unknown variable {{{name}}}")
        return str(namespace[name]).replace("{", "\\{").replace("}", "\\}")

    filled = _VARIABLE.sub(value, _hide_literals(line))
    return filled.replace(_OPEN, "\\{").replace(_CLOSE, "\\}")


def expand(
    lines: Sequence[str],
    *,
    wildcards: str | os.PathLike | None = None,
    draws: int | None = None,
    seed: int | None = None,
) -> list[Prompt]:
    r"""Every prompt the `lines` make: all combinations (rightmost choice fastest), or `draws` random ones per line.

    `wildcards` is the folder of ``name.txt`` (or json, yaml) files that ``__name__``
    reads. Random draws use `seed` (a random one when None, recorded in each prompt),
    so the same seed draws the same prompts. Lines
    without template syntax pass through (with ``\{``/``\}`` made plain braces). Raises
    ValueError for an unbalanced brace, an unknown wildcard, or more than the
    100,000 prompts one batch may hold.
    """
    if draws is not None and (isinstance(draws, bool) or not isinstance(draws, int) or not 1 <= draws <= MAX_IMAGES):
        raise ValueError(f"the number of random prompts must be a whole number from 1 to {MAX_IMAGES}, not {draws!r}")
    if draws is None and seed is not None:
        raise ValueError("a random-prompt seed needs a number of random prompts to draw")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        raise ValueError(f"the random-prompt seed must be a whole number from 0 to {SEED_MAX}, not {seed!r}")
    if draws is not None and seed is None:
        seed = random_seeds(1)[0]
    context = _context(wildcards, draws, seed)
    prompts: list[Prompt] = []
    for number, line in enumerate(lines, start=1):
        hidden = _hide_literals(line)
        parts = _parts(line, number, context) if "{" in hidden or _WILDCARD.search(hidden) else [hidden]
        if all(isinstance(part, str) for part in parts):
            made = [Prompt(_show_literals("".join(parts)).strip())]
        elif draws is None:
            made = _combinations(line, parts, context, MAX_IMAGES - len(prompts))
        else:
            made = [dataclasses.replace(_draw(line, parts, context), seed=seed) for _ in range(draws)]
        prompts.extend(made)
        if len(prompts) > MAX_IMAGES:
            break
    if len(prompts) > MAX_IMAGES:
        raise ValueError(f"the templates make more than {MAX_IMAGES} prompts, the most one batch may hold")
    return prompts


def _context(wildcards: str | os.PathLike | None, draws: int | None, seed: int | None) -> SamplingContext:
    from dynamicprompts.enums import SamplingMethod
    from dynamicprompts.sampling_context import SamplingContext
    from dynamicprompts.wildcards import WildcardManager

    if wildcards is not None and not Path(wildcards).expanduser().is_dir():
        raise ValueError(f"the wildcards folder {os.fspath(wildcards)!r} does not exist")
    manager = WildcardManager(Path(wildcards).expanduser() if wildcards is not None else None)
    if draws is None:
        return SamplingContext(wildcard_manager=manager, default_sampling_method=SamplingMethod.COMBINATORIAL)
    return SamplingContext(
        wildcard_manager=manager, default_sampling_method=SamplingMethod.RANDOM, rand=random.Random(seed)
    )


def _parts(line: str, number: int, context: SamplingContext) -> list[str | Command]:
    """The line's top-level parts: literal text, or a template part to sample."""
    from dynamicprompts.commands import LiteralCommand, SequenceCommand, WildcardCommand
    from dynamicprompts.parser.parse import parse
    from pyparsing import ParseException

    hidden = _hide_literals(line)
    if hidden.count("{") != hidden.count("}"):
        raise ValueError(
            f"prompt line {number}: the braces do not balance ({hidden.count('{')} {{ and {hidden.count('}')} }}); "
            "write \\{ or \\} for a literal brace"
        )
    try:
        command = parse(hidden, parser_config=context.parser_config)
    except ParseException as error:
        near = _show_literals(error.pstr[error.loc : error.loc + 12])
        raise ValueError(
            f"prompt line {number}: the template does not read at {near!r} (an unbalanced brace, or a $?); "
            "write \\{ or \\} for a literal brace"
        ) from None
    tokens = command.tokens if isinstance(command, SequenceCommand) else [command]
    for token in _walk(tokens):
        named = isinstance(token, WildcardCommand) and isinstance(token.wildcard, str)
        if named and not context.wildcard_manager.get_values(token.wildcard):
            raise ValueError(f"prompt line {number}: unknown wildcard __{token.wildcard}__; {_known(context)}")
    return [token.literal if isinstance(token, LiteralCommand) else token for token in tokens]


def _walk(tokens: Sequence[Command]) -> list[Command]:
    """Every command inside `tokens`, nested ones too."""
    from dynamicprompts.commands import SequenceCommand, VariantCommand

    found: list[Command] = []
    for token in tokens:
        found.append(token)
        if isinstance(token, SequenceCommand):
            found.extend(_walk(token.tokens))
        elif isinstance(token, VariantCommand):
            found.extend(_walk([option.value for option in token.variants]))
    return found


def _known(context: SamplingContext) -> str:
    manager = context.wildcard_manager
    if manager.path is None:
        return "give a wildcards folder (--wildcards FOLDER) holding name.txt"
    names = sorted(manager.get_collection_names())
    return f"{manager.path} holds {', '.join(names) if names else 'no wildcard files'}"


def _combinations(line: str, parts: list[str | Command], context: SamplingContext, room: int) -> list[Prompt]:
    values = [[part] if isinstance(part, str) else _values(part, context, room + 1) for part in parts]
    chosen = [i for i, part in enumerate(parts) if not isinstance(part, str)]
    return [
        _prompt(line, combination, chosen) for combination in itertools.islice(itertools.product(*values), room + 1)
    ]


def _values(part: Command, context: SamplingContext, limit: int) -> list[str]:
    return [result.text for result in context.sample_prompts(part, limit)]


def _draw(line: str, parts: list[str | Command], context: SamplingContext) -> Prompt:
    combination = [part if isinstance(part, str) else _values(part, context, 1)[0] for part in parts]
    return _prompt(line, combination, [i for i, part in enumerate(parts) if not isinstance(part, str)])


def _prompt(line: str, combination: Sequence[str], chosen: list[int]) -> Prompt:
    text = _show_literals("".join(combination)).strip()
    return Prompt(text, line, tuple(_show_literals(combination[i]) for i in chosen))


def _hide_literals(line: str) -> str:
    return line.replace("\\{", _OPEN).replace("\\}", _CLOSE)


def _show_literals(text: str) -> str:
    return text.replace(_OPEN, "{").replace(_CLOSE, "}")
