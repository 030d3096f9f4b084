"""Step previews: each image in flight as a small RGB picture, from its latent by a fixed map.

No extra model and no download: a latent's channels map to R, G and B by fixed factors
(ComfyUI's published ones for SD 1.x/2.x, SDXL, SD3, FLUX.1, FLUX.2 and Wan 2.1 latents, the
last for Qwen-Image's VAE, which is Wan 2.1's; read from
``comfy/latent_formats.py``), applied to the scheduler's prediction of the clean latent
where it gives one (Euler, DDIM, LMS, Heun: ``pred_original_sample``; DPM++ and UniPC keep
it as their last model output; flow matching implies it from its velocity), else to the
noisy latent. Packed latents (FLUX.1, Chroma, Qwen-Image) are unpacked first; FLUX.2's, tokens of
2x2 patches in 128 channels, become 32 channels at twice the size. A model folder can bring its
own factors in its ``nbbatch.json`` (``"latent_rgb"``), or say ``null`` for latents with no
known colours: such a pipeline gets no preview rather than a wrong one.

The built-in ``nbbatch:shapes`` has a designed latent space (a shape mask, the shape's and
the background's colours as constant fields), where a pixel's colour is a product of the
mask and a colour, and its decoder draws palette colours only, whatever guidance does to
the fields: no linear map draws that (its best fit is 25 levels off in mean colour). Its
map is a `Palette` of its own, fitted on its VAE's decodes at several step counts and
guidance values (``python -m nbbatch.models.shapes.preview_factors``): on unseen pictures
the last preview's mean colour is 3.5 levels from the finished image's (median; p90 12).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
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
SD3_FACTORS = (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
)
SD3_BIAS = (0.2394, 0.2135, 0.1925)
FLUX_FACTORS = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX_BIAS = (-0.0329, -0.0718, -0.0851)

WAN21_FACTORS = (
    (-0.1299, -0.1692, 0.2932),
    (0.0671, 0.0406, 0.0442),
    (0.3568, 0.2548, 0.1747),
    (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328),
    (0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925),
    (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364),
    (-0.1293, 0.0740, 0.1636),
    (0.0680, 0.3019, 0.1128),
    (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699),
    (0.0060, -0.0633, 0.0005),
    (0.3477, 0.2275, 0.2950),
    (0.1984, 0.0913, 0.1861),
)
WAN21_BIAS = (-0.1835, -0.0868, -0.3360)
FLUX2_FACTORS = (  # ComfyUI's Flux2: 32 channels, each the 2x2 patch its 128 model channels hold
    (0.0058, 0.0113, 0.0073), (0.0495, 0.0443, 0.0836), (-0.0099, 0.0096, 0.0644), (0.2144, 0.3009, 0.3652),
    (0.0166, -0.0039, -0.0054), (0.0157, 0.0103, -0.0160), (-0.0398, 0.0902, -0.0235), (-0.0052, 0.0095, 0.0109),
    (-0.3527, -0.2712, -0.1666), (-0.0301, -0.0356, -0.0180), (-0.0107, 0.0078, 0.0013), (0.0746, 0.0090, -0.0941),
    (0.0156, 0.0169, 0.0070), (-0.0034, -0.0040, -0.0114), (0.0032, 0.0181, 0.0080), (-0.0939, -0.0008, 0.0186),
    (0.0018, 0.0043, 0.0104), (0.0284, 0.0056, -0.0127), (-0.0024, -0.0022, -0.0030), (0.1207, -0.0026, 0.0065),
    (0.0128, 0.0101, 0.0142), (0.0137, -0.0072, -0.0007), (0.0095, 0.0092, -0.0059), (0.0000, -0.0077, -0.0049),
    (-0.0465, -0.0204, -0.0312), (0.0095, 0.0012, -0.0066), (0.0290, -0.0034, 0.0025), (0.0220, 0.0169, -0.0048),
    (-0.0332, -0.0457, -0.0468), (-0.0085, 0.0389, 0.0609), (-0.0076, 0.0003, -0.0043), (-0.0111, -0.0460, -0.0614),
)  # fmt: skip
FLUX2_BIAS = (-0.0329, -0.0718, -0.0851)

_SCALING = {(4, 0.18215): "sd", (4, 0.13025): "sdxl", (16, 1.5305): "sd3", (16, 0.3611): "flux"}
"""Latent channels and VAE scaling factors of the latent spaces with published colours, which tell them apart.

SD3's 16-channel space (SD3, SD3.5) and FLUX.1's (FLUX.1, Chroma, which share its VAE) have
ComfyUI's factors too; others (CogView4's, and any space nbbatch does not know) get no preview.
"""

PREVIEW_SIDE = 256
"""The longest side of a preview picture, in pixels (the latent is 1/8 of the image)."""


Row = tuple[float, float, float]


@dataclass(frozen=True)
class Palette:
    """A map for latents that hold a shape mask and two colours (the built-in model's), ``(C + 1)``-row weights.

    The picture's mean latent ``m`` (with a 1 appended) gives softmax weights over the
    model's `colours` for the shape (``m @ shape``) and for the background
    (``m @ background``); each latent pixel ``x`` gives the odds that it is inside the shape
    (``x @ mask``, through a sigmoid): ``rgb = bg + sigmoid(x @ mask) * (fg - bg)``. Its
    decoder draws palette colours only, whatever guidance does to the colour fields, and
    reads them over many pixels (they are constant by design): a linear map, or one colour
    per pixel, cannot do that (white read pixel by pixel is flecked with yellow).
    """

    colours: tuple[Row, ...]
    shape: tuple[tuple[float, ...], ...]
    background: tuple[tuple[float, ...], ...]
    mask: tuple[float, ...]

    def rgb(self, x: Any) -> Any:
        """The colours of the latent pixels `x` (B x h x w x C), B x h x w x 3, in -1..1."""
        import torch

        x = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)
        weights = (torch.tensor(w) for w in (self.colours, self.shape, self.background, self.mask))
        return _palette_rgb(x, x.mean(dim=(1, 2), keepdim=True), *weights)


def _palette_rgb(x: Any, mean: Any, colours: Any, shape: Any, background: Any, mask: Any) -> Any:
    """`Palette`'s formula on tensors: pixels `x` and their picture's `mean` (both with a 1 appended), ... x 3.

    One place for it, so the fit (`fit_palette`, through these tensors) and the previews agree.
    """
    import torch

    fg = torch.softmax(mean @ shape, dim=-1) @ colours
    bg = torch.softmax(mean @ background, dim=-1) @ colours
    return bg + torch.sigmoid(x @ mask)[..., None] * (fg - bg)


@dataclass(frozen=True)
class LatentMap:
    """Latent channels to RGB: ``rgb = latent @ factors + bias`` (plus a `palette` part), in -1..1."""

    factors: tuple[Row, ...]
    bias: Row = (0.0, 0.0, 0.0)
    palette: Palette | None = None

    @classmethod
    def from_notes(cls, notes: Mapping[str, Any]) -> LatentMap:
        """A map from a model folder's ``latent_rgb`` entry (the shape `as_notes` writes)."""
        palette = notes.get("palette")
        return cls(
            _rows(notes["factors"]),
            tuple(notes.get("bias", (0.0, 0.0, 0.0))),
            Palette(
                _rows(palette["colours"]),
                _table(palette["shape"]),
                _table(palette["background"]),
                tuple(float(v) for v in palette["mask"]),
            )
            if palette
            else None,
        )

    def as_notes(self) -> dict[str, Any]:
        """The map as a model folder's ``latent_rgb`` entry (JSON)."""
        notes: dict[str, Any] = {"factors": [list(r) for r in self.factors], "bias": list(self.bias)}
        if self.palette is not None:
            notes["palette"] = {
                "colours": [list(r) for r in self.palette.colours],
                "shape": [list(r) for r in self.palette.shape],
                "background": [list(r) for r in self.palette.background],
                "mask": list(self.palette.mask),
            }
        return notes

    def rgb(self, latents: Any) -> Any:
        """RGB in -1..1 (unclamped), B x h x w x 3, for latents B x C x h x w."""
        import torch

        x = latents.detach().float().cpu().permute(0, 2, 3, 1)
        rgb = x @ torch.tensor(self.factors) + torch.tensor(self.bias)
        if self.palette is not None:
            rgb = rgb + self.palette.rgb(x)
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


def fit_latent_map(latents: Any, pictures: Any) -> LatentMap:
    """The least-squares linear map from `latents` (B x C x h x w) to `pictures` (B x 3 x H x W in -1..1).

    How a model with latents of its own gets preview factors: fit on its VAE's decodes
    (the pictures are averaged down to the latents' size).
    """
    import torch

    x, target = _pixels(latents, pictures)
    solution = torch.linalg.lstsq(torch.cat([x, torch.ones(len(x), 1)], dim=1), target).solution
    rows = _rows(_rounded(solution))
    return LatentMap(rows[:-1], rows[-1])


def fit_palette(
    latents: Any,
    pictures: Any,
    colours: Sequence[Row],
    mask: int,
    shape: Sequence[int],
    background: Sequence[int],
    steps: int = 1500,
) -> LatentMap:
    """A `Palette` map fitted to a model's decodes `pictures` of `latents` (Adam from a fixed start: deterministic).

    It starts as "the nearest of `colours` to the shape's colour channels `shape` (and to
    the background's, `background`), inside where channel `mask` is above 0", and learns
    how the decoder really picks (guidance pushes the fields past the palette). The loss
    is the mean absolute error per latent pixel plus that of each picture's mean colour,
    which the acceptance of a preview is judged by.
    """
    import torch

    x, target = _pixels(latents, pictures)
    inputs = torch.cat([x, torch.ones(len(x), 1)], dim=1).view(len(latents), -1, x.shape[1] + 1)
    target = target.view(len(latents), -1, 3)
    means = inputs.mean(dim=1, keepdim=True)
    palette = torch.tensor(colours, dtype=torch.float32)
    sharpness = 10.0  # softmax(-|field - colour|^2 * sharpness): nearly the nearest colour

    def nearest(channels: Sequence[int]) -> Any:
        weights = torch.zeros(inputs.shape[-1], len(palette))
        weights[list(channels)] = 2 * sharpness * palette.T
        weights[-1] = -sharpness * (palette**2).sum(dim=1)
        return weights.requires_grad_()

    fg, bg = nearest(shape), nearest(background)
    inside = torch.zeros(inputs.shape[-1])
    inside[mask] = 4.0
    inside.requires_grad_()
    optimiser = torch.optim.Adam([fg, bg, inside], lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    for _ in range(steps):
        error = _palette_rgb(inputs, means, palette, fg, bg, inside) - target
        loss = error.abs().mean() + error.mean(dim=1).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    fitted = Palette(
        _rows(_rounded(palette)), _rounded(fg.detach()), _rounded(bg.detach()), _rounded([inside.detach()])[0]
    )
    return LatentMap(((0.0, 0.0, 0.0),) * x.shape[1], palette=fitted)


def _pixels(latents: Any, pictures: Any) -> tuple[Any, Any]:
    """Latent pixels (N x C) and the pictures' colours averaged over each (N x 3)."""
    import torch.nn.functional as F

    target = F.interpolate(pictures.float(), size=latents.shape[-2:], mode="area")
    x = latents.float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    return x, target.permute(0, 2, 3, 1).reshape(-1, 3)


def _rounded(solution: Any) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(round(float(v), 5) for v in row) for row in solution)


def _table(values: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in values)


def _rows(values: Sequence[Sequence[float]]) -> tuple[Row, ...]:
    return tuple((float(r[0]), float(r[1]), float(r[2])) for r in values)


def latent_map(pipe: Any, folder: Mapping[str, Any]) -> LatentMap | None:
    """The map for `pipe`'s latents: its folder's ``latent_rgb`` (None when that says null), else by its VAE."""
    if "latent_rgb" in folder:
        given = folder["latent_rgb"]
        return LatentMap.from_notes(given) if given else None
    config = getattr(getattr(pipe, "vae", None), "config", None)
    if config is None:
        return None
    kind = _SCALING.get((config.get("latent_channels"), round(float(config.get("scaling_factor") or 0), 5)))
    if type(pipe.vae).__name__ == "AutoencoderKLQwenImage" and config.get("z_dim") == 16:
        kind = "wan21"  # normalised by its own mean and std, as ComfyUI's factors take it
    if type(pipe.vae).__name__ == "AutoencoderKLFlux2" and config.get("latent_channels") == 32:
        kind = "flux2"  # the model's normalised 2x2 patches, as ComfyUI's factors take them once unpatched
    maps = {
        "wan21": LatentMap(WAN21_FACTORS, WAN21_BIAS),
        "sd": LatentMap(SD_FACTORS),
        "sdxl": LatentMap(SDXL_FACTORS, SDXL_BIAS),
        "sd3": LatentMap(SD3_FACTORS, SD3_BIAS),
        "flux": LatentMap(FLUX_FACTORS, FLUX_BIAS),
        "flux2": LatentMap(FLUX2_FACTORS, FLUX2_BIAS),
    }
    return maps.get(kind) if kind is not None else None


class StepPreviewer:
    """Makes previews during pipeline calls, of a VAE that scales by `scale` (the engine says when one is due)."""

    def __init__(self, mapping: LatentMap, scale: int = 8, unpack: Callable[[Any], Any] | None = None) -> None:
        self.mapping = mapping
        self.scale = scale
        self.unpack = unpack
        """Turns a packed family's latents (tokens of 2x2 patches) back into channels x height x width."""
        self._clean: Any = None

    @contextlib.contextmanager
    def capturing(self, scheduler: Any) -> Iterator[None]:
        """While a call runs, keep the scheduler's prediction of the clean latent after each of its steps."""
        step = scheduler.step

        def keeping(*args: Any, **kwargs: Any) -> Any:
            output = step(*args, **kwargs)
            self._clean = _clean_latent(scheduler, output, args, kwargs)
            return output

        scheduler.step = keeping  # an instance attribute over the method, removed after the call
        self._clean = None
        try:
            yield
        finally:
            del scheduler.step
            self._clean = None

    def pictures(self, latents: Any) -> tuple[Image.Image, ...]:
        """The previews of the chunk: from the clean-latent prediction when the scheduler gave one."""
        source = self._clean if self._clean is not None and self._clean.shape == latents.shape else latents
        if self.unpack is not None:
            source = self.unpack(source)
        height, width = source.shape[-2:]
        return tuple(self.mapping.images(source, _fit((width * self.scale, height * self.scale))))


def _clean_latent(
    scheduler: Any, output: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
) -> Any:
    """The step's prediction of the clean latent, where the scheduler gives or implies one, else None.

    A flow-matching scheduler predicts a velocity ``v``: the clean latent is ``x - sigma * v``.
    """
    kwargs = kwargs or {}
    if type(scheduler).__name__.startswith("FlowMatch") and getattr(scheduler, "step_index", None):
        velocity = kwargs.get("model_output", args[0] if args else None)
        sample = kwargs.get("sample", args[2] if len(args) > 2 else None)
        if velocity is not None and sample is not None:
            sigma = scheduler.sigmas[scheduler.step_index - 1]  # the step has moved on: the sigma it started from
            return sample - sigma.to(sample.device, sample.dtype) * velocity
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
