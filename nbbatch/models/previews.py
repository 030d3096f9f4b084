"""Step previews: each image in flight as a small RGB picture, from its latent by one linear map.

No extra model and no download: a latent's channels map to R, G and B by fixed factors
(ComfyUI's published ones for SD 1.x/2.x and SDXL latents, read from
``comfy/latent_formats.py``), applied to the scheduler's prediction of the clean latent
where it gives one (Euler, DDIM, LMS, Heun: ``pred_original_sample``; DPM++ and UniPC keep
it as their last model output), else to the noisy latent. A model folder can bring its
own factors in its ``nbbatch.json`` (``"latent_rgb"``), or say ``null`` for latents with no
known colours: such a pipeline gets no preview rather than a wrong one.

The built-in ``nbbatch:shapes`` has a designed latent space (a shape mask, the shape's and
the background's colours as constant fields), where a pixel's colour is a product of the
mask and a colour, which no linear map draws (its least-squares fit shows only the mean
colour). Its map has a second, masked part: ``rgb = x W + s(x) (x V)`` with
``s = sigmoid(slope * x[mask] + offset)``, fitted by least squares on its VAE's decodes,
so its previews show the shape forming, and a small per-pixel `Head` fitted on what those
get wrong (guidance pushes its colour fields past the palette, which its decoder undoes):
mean colours 14 levels off become 5 (medians on unseen pictures).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

SD_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SDXL_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_BIAS = (0.1084, -0.0175, -0.0011)

_SCALING = {0.18215: "sd", 0.13025: "sdxl"}
"""VAE scaling factors of the SD 1.x/2.x and SDXL latent spaces, which tell them apart."""

PREVIEW_SIDE = 256
"""The longest side of a preview picture, in pixels (the latent is 1/8 of the image)."""


Row = tuple[float, float, float]


@dataclass(frozen=True)
class Masked:
    """The masked part of a map: ``sigmoid(slope * latent[channel] + offset) * (latent @ factors + bias)``."""

    channel: int
    slope: float
    offset: float
    factors: tuple[Row, ...]
    bias: Row


@dataclass(frozen=True)
class Head:
    """A per-pixel correction: ``silu(latent @ weight + bias) @ out + out_bias``, a few hundred numbers.

    For latents whose colours no linear map draws well (the built-in model's mask times
    colour, pushed past the palette by guidance): fitted on the residual of the linear map.
    """

    weight: tuple[tuple[float, ...], ...]
    bias: tuple[float, ...]
    out: tuple[Row, ...]
    out_bias: Row

    def rgb(self, x: Any) -> Any:
        """The correction for latent pixels `x` (... x C), ... x 3."""
        import torch

        hidden = torch.nn.functional.silu(x @ torch.tensor(self.weight) + torch.tensor(self.bias))
        return hidden @ torch.tensor(self.out) + torch.tensor(self.out_bias)


@dataclass(frozen=True)
class LatentMap:
    """Latent channels to RGB: ``rgb = latent @ factors + bias`` (plus a `masked` part and a `head`), in -1..1."""

    factors: tuple[Row, ...]
    bias: Row = (0.0, 0.0, 0.0)
    masked: Masked | None = None
    head: Head | None = None

    @classmethod
    def from_notes(cls, notes: Mapping[str, Any]) -> LatentMap:
        """A map from a model folder's ``latent_rgb`` entry (the shape `as_notes` writes)."""
        masked = notes.get("masked")
        return cls(
            _rows(notes["factors"]),
            tuple(notes.get("bias", (0.0, 0.0, 0.0))),
            Masked(
                int(masked["channel"]),
                float(masked["slope"]),
                float(masked["offset"]),
                _rows(masked["factors"]),
                tuple(masked["bias"]),
            )
            if masked
            else None,
            Head(
                tuple(tuple(float(v) for v in row) for row in notes["head"]["weight"]),
                tuple(float(v) for v in notes["head"]["bias"]),
                _rows(notes["head"]["out"]),
                tuple(notes["head"]["out_bias"]),
            )
            if notes.get("head")
            else None,
        )

    def as_notes(self) -> dict[str, Any]:
        """The map as a model folder's ``latent_rgb`` entry (JSON)."""
        notes: dict[str, Any] = {"factors": [list(r) for r in self.factors], "bias": list(self.bias)}
        if self.masked is not None:
            notes["masked"] = {
                "channel": self.masked.channel,
                "slope": self.masked.slope,
                "offset": self.masked.offset,
                "factors": [list(r) for r in self.masked.factors],
                "bias": list(self.masked.bias),
            }
        if self.head is not None:
            notes["head"] = {
                "weight": [list(r) for r in self.head.weight],
                "bias": list(self.head.bias),
                "out": [list(r) for r in self.head.out],
                "out_bias": list(self.head.out_bias),
            }
        return notes

    def rgb(self, latents: Any) -> Any:
        """RGB in -1..1 (unclamped), B x h x w x 3, for latents B x C x h x w."""
        import torch

        x = latents.detach().float().cpu().permute(0, 2, 3, 1)
        rgb = x @ torch.tensor(self.factors) + torch.tensor(self.bias)
        if self.masked is not None:
            part = self.masked
            weight = torch.sigmoid(part.slope * x[..., part.channel : part.channel + 1] + part.offset)
            rgb = rgb + weight * (x @ torch.tensor(part.factors) + torch.tensor(part.bias))
        if self.head is not None:
            rgb = rgb + self.head.rgb(x)
        return rgb

    def images(self, latents: Any, size: tuple[int, int] | None = None) -> list[Image.Image]:
        """One RGB picture per latent of the batch `latents` (B x C x h x w), resized to `size` if given."""
        import torch
        from PIL import Image

        with torch.no_grad():
            pixels = ((self.rgb(latents).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        pictures = [Image.fromarray(p) for p in pixels]
        if size is not None:
            pictures = [p.resize(size, Image.Resampling.BILINEAR) for p in pictures]
        return pictures


def fit_latent_map(latents: Any, pictures: Any, mask: int | None = None) -> LatentMap:
    """The least-squares map from `latents` (B x C x h x w) to `pictures` (B x 3 x H x W in -1..1, averaged to h x w).

    How a model with latents of its own gets preview factors: fit on its VAE's decodes.
    With a `mask` channel the map gets a masked part (see `Masked`); its slope and offset
    are the best of a small grid, the factors least squares for each.
    """
    import torch
    import torch.nn.functional as F

    target = F.interpolate(pictures.float(), size=latents.shape[-2:], mode="area")
    x = latents.float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    inputs = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    outputs = target.permute(0, 2, 3, 1).reshape(-1, 3)
    if mask is None:
        rows = _rounded(torch.linalg.lstsq(inputs, outputs).solution)
        return LatentMap(rows[:-1], rows[-1])
    best: tuple[float, LatentMap] | None = None
    for slope in (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0):
        for offset in (-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0):
            weight = torch.sigmoid(slope * x[:, mask : mask + 1] + offset)
            solution = torch.linalg.lstsq(torch.cat([inputs, weight * inputs], dim=1), outputs).solution
            rows = _rounded(solution)
            width = len(inputs[0])
            fitted = LatentMap(
                rows[: width - 1],
                rows[width - 1],
                Masked(mask, slope, offset, rows[width:-1], rows[-1]),
            )
            error = float((fitted.rgb(latents).reshape(-1, 3).clamp(-1, 1) - outputs).abs().mean())
            if best is None or error < best[0]:
                best = (error, fitted)
    assert best is not None
    return best[1]


def fit_head(mapping: LatentMap, latents: Any, pictures: Any, hidden: int = 16, steps: int = 1500) -> LatentMap:
    """`mapping` with a `Head` fitted (Adam, fixed seed: deterministic) on what it gets wrong of `pictures`.

    The loss is the clamped picture's mean absolute error per latent pixel, so the head
    learns where guidance pushed the latent past the palette and where the shape's edge is.
    """
    import torch
    import torch.nn.functional as F

    target = F.interpolate(pictures.float(), size=latents.shape[-2:], mode="area").permute(0, 2, 3, 1)
    x = latents.float().permute(0, 2, 3, 1)
    base = mapping.rgb(latents).detach()
    generator = torch.Generator().manual_seed(0)
    first = torch.nn.Linear(x.shape[-1], hidden)
    second = torch.nn.Linear(hidden, 3)
    with torch.no_grad():
        for layer in (first, second):
            bound = 1 / layer.in_features**0.5
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
    optimiser = torch.optim.Adam([*first.parameters(), *second.parameters()], lr=1e-2)
    for _ in range(steps):
        loss = ((base + second(F.silu(first(x)))).clamp(-1, 1) - target).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    head = Head(
        _rounded(first.weight.detach().T),
        tuple(round(float(v), 5) for v in first.bias.detach()),
        _rounded(second.weight.detach().T),
        tuple(round(float(v), 5) for v in second.bias.detach()),
    )
    return dataclasses.replace(mapping, head=head)


def _rounded(solution: Any) -> tuple[Row, ...]:
    return tuple(tuple(round(float(v), 5) for v in row) for row in solution)


def _rows(values: Sequence[Sequence[float]]) -> tuple[Row, ...]:
    return tuple((float(r[0]), float(r[1]), float(r[2])) for r in values)


def latent_map(pipe: Any, folder: Mapping[str, Any]) -> LatentMap | None:
    """The map for `pipe`'s latents: its folder's ``latent_rgb`` (None when that says null), else by its VAE."""
    if "latent_rgb" in folder:
        given = folder["latent_rgb"]
        return LatentMap.from_notes(given) if given else None
    config = getattr(getattr(pipe, "vae", None), "config", None)
    if config is None or config.get("latent_channels") != 4:
        return None
    kind = _SCALING.get(round(float(config.get("scaling_factor", 0)), 5))
    if kind == "sd":
        return LatentMap(SD_FACTORS)
    if kind == "sdxl":
        return LatentMap(SDXL_FACTORS, SDXL_BIAS)
    return None


@dataclass(frozen=True)
class Preview:
    """Pictures of the images in flight: their positions in the batch (job order), and the step they show."""

    positions: tuple[int, ...]
    step: int
    steps: int
    images: tuple[Image.Image, ...]


class StepPreviewer:
    """Makes previews during pipeline calls (of a VAE that scales by `scale`), at most one every `every` seconds."""

    every = 0.25
    """Seconds between previews: four a second at most, so previews cost little of the run."""

    def __init__(self, mapping: LatentMap, scale: int = 8) -> None:
        self.mapping = mapping
        self.scale = scale
        self._clean: Any = None
        self._last = float("-inf")

    @contextlib.contextmanager
    def capturing(self, scheduler: Any) -> Iterator[None]:
        """While a call runs, keep the scheduler's prediction of the clean latent after each of its steps."""
        step = scheduler.step

        def keeping(*args: Any, **kwargs: Any) -> Any:
            output = step(*args, **kwargs)
            self._clean = _clean_latent(scheduler, output)
            return output

        scheduler.step = keeping  # an instance attribute over the method, removed after the call
        self._clean = None
        try:
            yield
        finally:
            del scheduler.step
            self._clean = None

    def due(self) -> bool:
        """Whether a preview is due now (and count it as made)."""
        now = time.monotonic()
        if now - self._last < self.every:
            return False
        self._last = now
        return True

    def pictures(self, latents: Any) -> tuple[Image.Image, ...]:
        """The previews of the chunk: from the clean-latent prediction when the scheduler gave one."""
        source = self._clean if self._clean is not None and self._clean.shape == latents.shape else latents
        height, width = latents.shape[-2:]
        return tuple(self.mapping.images(source, _fit((width * self.scale, height * self.scale))))


def _clean_latent(scheduler: Any, output: Any) -> Any:
    if isinstance(output, tuple):
        if len(output) > 1:
            return output[1]
    elif getattr(output, "pred_original_sample", None) is not None:
        return output.pred_original_sample
    config = scheduler.config
    x0_outputs = str(config.get("algorithm_type", "")).endswith("++") or config.get("predict_x0", False)
    outputs = getattr(scheduler, "model_outputs", None)
    if x0_outputs and outputs and outputs[-1] is not None:
        return outputs[-1]
    return None


def _fit(size: Sequence[int]) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, PREVIEW_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))
