"""Prompt embeddings for weighted and long prompts, clip skip and mixed negatives, built with `compel`.

Most batches pass their prompts to the pipeline as text, as diffusers' guide does. A chunk
goes through `Conditioner` instead when one of its prompts has A1111 weight syntax or a
``BREAK`` (`nbbatch.core.attention`), is longer than the text encoder's 75-token window,
asks for a clip skip on SD 1.x/2.x (diffusers' own path needs the ``text_model`` that
transformers 5 removed), or, on SDXL, when some images of the chunk have a negative prompt
and others none (the pipeline would encode ``""`` for the latter instead of its zeros).

compel does the tokenizing, the 75-token windows and the weighting; nbbatch parses A1111's
syntax itself (compel's own syntax differs: ``(word)1.3``, ``word+``) and hands compel the
pieces, so a prompt with no weights gives exactly the embeddings diffusers makes. Each
image's embeddings are its own: a prompt and its negative are padded to the longer of the
two with the empty prompt's window (as compel does) and nothing more, so an image comes out
the same in any batch; the engine batches only images whose embeddings have one length.
FLUX.1's weights go through `T5Conditioner`: compel weights its T5 sequence, as its own
``CompelForFlux`` does. SD3's go through `SD3Conditioner`: compel weights each of its three
encoders' sequences, which are put together as the pipeline puts them (compel has no SD3
wrapper; sd_embed, which has one, is not on the package index). Chroma's go through
`MaskedT5Conditioner`: its T5 encoded with the padding masked, as the pipeline encodes it;
AuraFlow's likewise, its padding's embeddings then zeroed as its pipeline zeroes them; PixArt-Σ's likewise, with
the mask of the prompt's tokens, each fragment lowercased (or its caption cleaned) as its pipeline does a prompt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nbbatch.core.attention import is_plain, parse_attention, plain_text


def supports(pipe: Any) -> bool:
    """Whether `pipe` encodes its prompts with CLIP text encoders as SD 1.x/2.x and SDXL do."""
    encoder = getattr(pipe, "text_encoder", None)
    return getattr(pipe, "tokenizer", None) is not None and type(encoder).__name__.startswith("CLIPText")


def is_xl(pipe: Any) -> bool:
    """Whether `pipe` has SDXL's second text encoder (and takes pooled embeddings)."""
    return getattr(pipe, "text_encoder_2", None) is not None


def cut_text(tokenizer: Any, window: int, prompt: str) -> str | None:
    """What a pipeline's own encoding cuts off the end of `prompt` (past `window` tokens of `tokenizer`), or None."""
    if tokenizer is None:
        return None
    kept = window - 2  # the window holds a start and an end token
    ids = tokenizer(prompt, add_special_tokens=False, verbose=False).input_ids  # no notice of a long one: it is ours
    return tokenizer.decode(ids[kept:]).strip() or None if len(ids) > kept else None


@dataclass(frozen=True)
class Conditioning:
    """One image's prompt and negative prompt embeddings, of one length (pooled ones on SDXL)."""

    embeds: Any
    negative_embeds: Any
    pooled: Any = None
    negative_pooled: Any = None

    @property
    def length(self) -> int:
        """How many token positions the embeddings have: 77 per 75-token window."""
        return int(self.embeds.shape[1])


class Conditioner:
    """Builds and remembers the embeddings of (prompt, negative prompt) pairs for one pipeline view.

    `clip_skip` counts as A1111 does (1: the last layer). As diffusers does, the skip
    applies to the prompt and not to the negative prompt, so a chunk that comes here
    gives the same images as one diffusers encodes itself.
    """

    reads_any_length = True

    def __init__(self, pipe: Any, clip_skip: int | None = None) -> None:
        self.pipe = pipe
        self.skip = clip_skip or 1
        self.xl = is_xl(pipe)
        pairs = [(pipe.tokenizer, pipe.text_encoder)]
        if self.xl:
            pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
        self._prompt = [self._provider(tokenizer, encoder, self.skip) for tokenizer, encoder in pairs]
        self._negative = [self._provider(tokenizer, encoder, 1) for tokenizer, encoder in pairs]
        self._cache: dict[tuple[str, str | None], Conditioning] = {}
        self._lengths: dict[tuple[str, str | None], int] = {}
        self._window_counts: dict[str, int] = {}  # per text: asked for every image of a batch

    def _provider(self, tokenizer: Any, encoder: Any, skip: int) -> Any:
        # SD takes the normalised last hidden state (clip skip N: state -N, normalised);
        # SDXL the state before the last, not normalised (clip skip N: state -(N+1)).
        hidden = -(skip + 1) if self.xl else -skip
        return _layer_provider(tokenizer, encoder, hidden, not self.xl, self.pipe._execution_device)

    def needed(self, prompts: list[str], negatives: list[str | None]) -> bool:
        """Whether a chunk with these prompts must be encoded here rather than by the pipeline."""
        texts = [*prompts, *(n for n in negatives if n)]
        if self.skip > 1 and not self.xl:
            return True
        if self.xl and self.pipe.config.get("force_zeros_for_empty_prompt") and len({not n for n in negatives}) > 1:
            return True
        return any(not is_plain(text) or self._windows(text) > 1 for text in texts)

    def _windows(self, text: str) -> int:
        if text not in self._window_counts:
            tokenizer = self.pipe.tokenizer
            text_read = self.pipe.maybe_convert_prompt(text, tokenizer)
            ids = tokenizer(text_read, add_special_tokens=False, verbose=False).input_ids
            self._window_counts[text] = max(1, -(-len(ids) // (tokenizer.model_max_length - 2)))
        return self._window_counts[text]

    def length(self, prompt: str, negative: str | None) -> int:
        """The token positions of this pair's embeddings (77 per window): images of one length share a call.

        Only the length is remembered (per pair, for the seeds that share it): a LoRA activated
        later may change the embeddings, not their length.
        """
        key = (prompt, negative)
        if key not in self._lengths:
            plain = all(is_plain(text) and self._windows(text) == 1 for text in (prompt, negative or ""))
            self._lengths[key] = self.pipe.tokenizer.model_max_length if plain else self._encode(*key).length
        return self._lengths[key]

    def encode(self, prompt: str, negative: str | None) -> Conditioning:
        """The embeddings of one image's prompt and negative prompt (remembered for the next image)."""
        key = (prompt, negative)
        if key not in self._cache:
            self._cache[key] = self._encode(prompt, negative)
        return self._cache[key]

    def arguments(self, prompts: list[str], negatives: list[str | None]) -> dict[str, Any]:
        """The pipeline's ``prompt_embeds`` (and negative, pooled) arguments for a chunk of one length."""
        import torch

        made = [self.encode(prompt, negative) for prompt, negative in zip(prompts, negatives)]
        arguments = {
            "prompt_embeds": torch.cat([c.embeds for c in made]),
            "negative_prompt_embeds": torch.cat([c.negative_embeds for c in made]),
        }
        if self.xl:
            arguments["pooled_prompt_embeds"] = torch.cat([c.pooled for c in made])
            arguments["negative_pooled_prompt_embeds"] = torch.cat([c.negative_pooled for c in made])
        return arguments

    def _encode(self, prompt: str, negative: str | None) -> Conditioning:
        import torch

        with torch.no_grad(), _quiet():
            embeds = self._embeds(self._prompt, prompt)
            zeros = self.xl and not negative and self.pipe.config.get("force_zeros_for_empty_prompt")
            negative_embeds = self._embeds(self._negative, negative or "")
            length = max(embeds.shape[1], negative_embeds.shape[1])
            empty = self._embeds(self._negative, "")
            embeds, negative_embeds = _pad(embeds, length, empty), _pad(negative_embeds, length, empty)
            if zeros:
                negative_embeds = torch.zeros_like(negative_embeds)
            if not self.xl:
                return Conditioning(embeds, negative_embeds)
            pooled = self._pooled(prompt)
            negative_pooled = torch.zeros_like(pooled) if zeros else self._pooled(negative or "")
        return Conditioning(embeds, negative_embeds, pooled, negative_pooled)

    def _embeds(self, providers: list[Any], prompt: str) -> Any:
        """The prompt through each text encoder (features side by side on SDXL), window by window."""
        import torch

        per_encoder = []
        for provider in providers:
            windows = []
            for window in parse_attention(prompt):
                window = window or [("", 1.0)]  # compel reads no fragments as an error, the empty one as ""
                texts = [self.pipe.maybe_convert_prompt(text, provider.tokenizer) for text, _ in window]
                weights = [weight for _, weight in window]
                windows.append(
                    provider.get_embeddings_for_weighted_prompt_fragments([texts], [weights], device=provider.device)
                )
            per_encoder.append(torch.cat(windows, dim=1))
        length = max(e.shape[1] for e in per_encoder)
        if any(e.shape[1] != length for e in per_encoder):
            raise ValueError(f"the text encoders split prompt {prompt!r} into different windows: shorten it")
        return torch.cat(per_encoder, dim=-1)

    def _pooled(self, prompt: str) -> Any:
        provider = self._prompt[-1]
        text = self.pipe.maybe_convert_prompt(plain_text(prompt), provider.tokenizer)
        return provider.get_pooled_embeddings([text], device=provider.device)


class _OneWindow:
    """What the conditioners of one-window encoders share: weights read in one window, each text encoded once.

    A chunk comes here only when one of its prompts has weights. Each text's embeddings and
    the argument that goes with them (`second`: a pooled embedding or an attention mask) are
    made by `_embed` from the prompt's fragments and its plain text; with `negatives`, every
    image gets its negative prompt's as well (the empty prompt's where it has none).
    """

    reads_any_length = False
    second = "pooled_prompt_embeds"
    """The pipeline argument that comes with ``prompt_embeds`` (its negative is ``negative_`` and this)."""

    def __init__(self, negatives: bool = True) -> None:
        self.negatives = negatives
        self._cache: dict[str, tuple[Any, Any]] = {}

    def needed(self, prompts: list[str], negatives: list[str | None]) -> bool:
        """Whether a chunk with these prompts has weights, and so must be encoded here."""
        return any(not is_plain(text) for text in [*prompts, *(n for n in negatives if n)])

    def arguments(self, prompts: list[str], negatives: list[str | None]) -> dict[str, Any]:
        """The pipeline's ``prompt_embeds`` and `second` (and the negative prompts' where guidance needs them)."""
        import torch

        made = [self._encode(prompt) for prompt in prompts]
        arguments = {"prompt_embeds": torch.cat([e for e, _ in made]), self.second: torch.cat([s for _, s in made])}
        if self.negatives:
            negative = [self._encode(text or "") for text in negatives]
            arguments["negative_prompt_embeds"] = torch.cat([e for e, _ in negative])
            arguments[f"negative_{self.second}"] = torch.cat([s for _, s in negative])
        return arguments

    def _encode(self, prompt: str) -> tuple[Any, Any]:
        if prompt not in self._cache:
            import torch

            windows = parse_attention(prompt)  # one: `check_prompts` refuses BREAK here
            fragments = (windows[0] if windows else None) or [("", 1.0)]  # the empty prompt: one empty fragment
            texts, weights = [[text for text, _ in fragments]], [[weight for _, weight in fragments]]
            with torch.no_grad(), _quiet():
                self._cache[prompt] = self._embed(texts, weights, plain_text(prompt))
        return self._cache[prompt]

    def _embed(self, texts: list[list[str]], weights: list[list[float]], plain: str) -> tuple[Any, Any]:
        raise NotImplementedError


def _t5_provider(tokenizer: Any, encoder: Any, window: int, masked: bool = False) -> Any:
    """Compel's provider for a T5 encoder reading `window` tokens (`masked`: with its padding masked out)."""
    import copy

    from compel import Compel

    tokenizer = copy.copy(tokenizer)
    tokenizer.model_max_length = window  # compel pads and cuts to the tokenizer's length: the pipeline's window
    options = {"padding_attention_mask_value": 0} if masked else {}
    return Compel(
        tokenizer=tokenizer, text_encoder=encoder, truncate_long_prompts=True, **options
    ).conditioning_provider


class T5Conditioner(_OneWindow):
    """FLUX.1's prompts with A1111 weights: their T5 sequence weighted by compel, CLIP's pooled embedding of the text.

    compel reads the T5 window the pipeline reads (`window`, its ``max_sequence_length``) and a
    fragment of weight 1 gives exactly the pipeline's own embeddings; CLIP's pooled embedding
    is the pipeline's own of the text without its weights (compel's ``CompelForFlux`` does the
    same: its pooled embedding ignores weights). ``BREAK`` splits CLIP's 75-token windows and
    means nothing to one T5 sequence: `nbbatch.models.backend.check_prompts` refuses it. With
    `negatives` (true CFG), every image gets its negative prompt's embeddings too.
    """

    def __init__(self, pipe: Any, window: int, negatives: bool) -> None:
        super().__init__(negatives)
        self.pipe, self.window = pipe, window
        self._t5 = _t5_provider(pipe.tokenizer_2, pipe.text_encoder_2, window)

    def length(self, prompt: str, negative: str | None) -> int:
        """Every image's T5 sequence is the window long: any prompts share a call."""
        return self.window

    def _embed(self, texts: list[list[str]], weights: list[list[float]], plain: str) -> tuple[Any, Any]:
        _, pooled, _ = self.pipe.encode_prompt(plain, prompt_2=plain, max_sequence_length=self.window)
        embeds = self._t5.get_embeddings_for_weighted_prompt_fragments(texts, weights, device=self._t5.device)
        return embeds.to(pooled.dtype), pooled


class SD3Conditioner(_OneWindow):
    """SD3's prompts with A1111 weights: each encoder's sequence weighted by compel, joined as the pipeline joins them.

    CLIP-L's and CLIP-G's states before the last (``clip_skip`` further back), cut at 77
    tokens, side by side, padded with zeros to T5's width, then T5's `window` tokens after
    them; the pooled embedding is the two CLIPs' of the text without its weights, as
    ``CompelForFlux`` does for FLUX.1. A fragment of weight 1 gives exactly the pipeline's own
    embeddings. Every image gets its negative prompt's embeddings: SD3's guidance is real CFG.
    """

    def __init__(self, pipe: Any, window: int, clip_skip: int | None) -> None:
        super().__init__()
        self.pipe, self.window = pipe, window
        hidden = -((clip_skip or 0) + 2)  # diffusers' clip_skip: states before the last, by default
        device = pipe._execution_device
        self._clips = [
            _layer_provider(pipe.tokenizer, pipe.text_encoder, hidden, False, device, truncate=True),
            _layer_provider(pipe.tokenizer_2, pipe.text_encoder_2, hidden, False, device, truncate=True),
        ]
        self._t5 = None  # without T5, the pipeline gives zeros in its place
        if pipe.text_encoder_3 is not None:
            self._t5 = _t5_provider(pipe.tokenizer_3, pipe.text_encoder_3, window)

    def length(self, prompt: str, negative: str | None) -> int:
        """Every image's sequence is 77 CLIP tokens and the T5 window: any prompts share a call."""
        return 77 + self.window

    def _embed(self, texts: list[list[str]], weights: list[list[float]], plain: str) -> tuple[Any, Any]:
        import torch

        _, _, pooled, _ = self.pipe.encode_prompt(
            plain, plain, plain, do_classifier_free_guidance=False, max_sequence_length=self.window
        )
        clips = [p.get_embeddings_for_weighted_prompt_fragments(texts, weights, device=p.device) for p in self._clips]
        clip = torch.cat(clips, dim=-1)
        if self._t5 is not None:
            t5 = self._t5.get_embeddings_for_weighted_prompt_fragments(texts, weights, device=self._t5.device)
        else:
            width = self.pipe.transformer.config.joint_attention_dim
            t5 = torch.zeros(1, self.window, width, dtype=clip.dtype, device=clip.device)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5.to(clip.dtype)], dim=-2).to(pooled.dtype), pooled


class MaskedT5Conditioner(_OneWindow):
    """Chroma's, AuraFlow's and PixArt-Σ's prompts with A1111 weights: their T5 sequence weighted by compel, masked.

    All three encode T5 with the padding masked out (compel does too, told the mask value).
    By `mask`: Chroma (``t5-masked``) hands the transformer a mask of the prompt's tokens and
    one padding token; AuraFlow (``t5-zeroed``) zeroes the padding's embeddings and passes the
    token mask spread over every feature; PixArt-Σ (``t5-exact``) passes the mask of the
    prompt's tokens, and each fragment goes through the pipeline's own text preprocessing first
    (lowercased, or its caption cleaned where bs4 and ftfy are installed), as a prompt does.
    The masks are made here from the tokens compel read. A fragment of weight 1 gives exactly
    the pipeline's own embeddings. Every image gets its negative prompt's embeddings: their
    guidance is real CFG.
    """

    second = "prompt_attention_mask"

    def __init__(self, pipe: Any, window: int, mask: str = "t5-masked") -> None:
        super().__init__()
        self.pipe, self.window, self.mask = pipe, window, mask
        self._t5 = _t5_provider(pipe.tokenizer, pipe.text_encoder, window, masked=True)

    def length(self, prompt: str, negative: str | None) -> int:
        """Every image's T5 sequence is the window long: any prompts share a call."""
        return self.window

    def _embed(self, texts: list[list[str]], weights: list[list[float]], plain: str) -> tuple[Any, Any]:
        import torch

        if self.mask == "t5-exact":  # PixArt-Σ's: lowercased and stripped, or cleaned with bs4 and ftfy
            from diffusers.utils import is_bs4_available, is_ftfy_available

            cleaned = is_bs4_available() and is_ftfy_available()  # else the pipeline says so and lowercases
            texts = [self.pipe._text_preprocessing(window, clean_caption=cleaned) for window in texts]
        embeds, tokens = self._t5.get_embeddings_for_weighted_prompt_fragments(
            texts, weights, should_return_tokens=True, device=self._t5.device
        )
        read = int((tokens != self._t5.tokenizer.pad_token_id).sum())  # the prompt's tokens and its end
        dtype = self.pipe.text_encoder.dtype
        positions = torch.arange(embeds.shape[1], device=embeds.device)[None]
        if self.mask == "t5-zeroed":
            kept = (positions < read).to(embeds.dtype)[..., None].expand(embeds.shape)
            embeds, mask = embeds * kept, kept.reshape(1, -1)
        else:  # Chroma's has one padding token more
            mask = (positions < read + (self.mask == "t5-masked")).to(dtype)
        return embeds.to(dtype), mask


PromptEncoder = Conditioner | T5Conditioner | SD3Conditioner | MaskedT5Conditioner
"""What encodes a chunk's prompts when nbbatch does it itself, by family (`nbbatch.models.families.Family.weights`)."""


def _layer_provider(
    tokenizer: Any, encoder: Any, hidden: int, normalise: bool, device: Any, truncate: bool = False
) -> Any:
    """A compel `EmbeddingsProvider` that takes the text encoder's hidden state `hidden` (then its layer norm).

    With `truncate`, a prompt is cut at the tokenizer's window (SD3 reads one); else windowed.

    compel's own clip-skip option reaches for ``text_model``, which transformers 5 removed,
    and knows one layer only; this one reads any layer, as diffusers' ``clip_skip`` does.
    """
    from compel import EmbeddingsProvider, ReturnedEmbeddingsType

    class LayerProvider(EmbeddingsProvider):
        def _encode_token_ids_to_embeddings(self, token_ids: Any, attention_mask: Any = None) -> Any:
            output = self.text_encoder(token_ids, attention_mask, output_hidden_states=True, return_dict=True)
            state = output.hidden_states[hidden]
            if not normalise:
                return state
            return getattr(self.text_encoder, "text_model", self.text_encoder).final_layer_norm(state)

    return LayerProvider(
        tokenizer=tokenizer,
        text_encoder=encoder,
        truncate=truncate,
        returned_embeddings_type=ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED,
        dtype_for_device_getter=lambda _: encoder.dtype,
        device=device,
    )


def _pad(embeds: Any, length: int, empty: Any) -> Any:
    """`embeds` made `length` long with windows of the empty prompt, as compel pads."""
    import torch

    missing = (length - embeds.shape[1]) // empty.shape[1]
    return torch.cat([embeds, empty.repeat(1, missing, 1)], dim=1) if missing else embeds


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' "sequence length is longer than the maximum" notice: long prompts are windowed here."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
