"""Silencing the loading bars and notices of diffusers and transformers while nbbatch loads on the user's behalf."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence diffusers' and transformers' loading bars, notices and deprecation warnings; restore them after."""
    from transformers.utils import logging as transformers_logging

    saved = [
        (transformers_logging, transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled())
    ]
    transformers_logging.set_verbosity_error()  # before diffusers imports transformers' image processors
    from diffusers.utils import logging as diffusers_logging

    saved.append((diffusers_logging, diffusers_logging.get_verbosity(), diffusers_logging.is_progress_bar_enabled()))
    for module, _, _ in saved:
        module.set_verbosity_error()
        module.disable_progress_bar()
    try:
        with warnings.catch_warnings():  # diffusers' deprecation notices about configs the user cannot change
            warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")
            yield
    finally:
        for module, verbosity, bars in saved:
            module.set_verbosity(verbosity)
            if bars:
                module.enable_progress_bar()


@contextlib.contextmanager
def quiet_call() -> Iterator[None]:
    """Silence diffusers' and transformers' logs during a pipeline call: nbbatch says itself what matters.

    FLUX.1 logs that CLIP truncates every long prompt, though CLIP gives only its pooled
    embedding there and T5 reads the whole prompt (nbbatch warns of a prompt cut short where
    it is); HiDream asks its Llama for attention maps it never reads, which transformers
    says SDPA attention cannot give.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = [(module, module.get_verbosity()) for module in (diffusers_logging, transformers_logging)]
    for module, _ in saved:
        module.set_verbosity_error()
    try:
        yield
    finally:
        for module, verbosity in saved:
            module.set_verbosity(verbosity)
