"""The one table of settings: each row is what a front end needs to offer one `Settings` field.

`nbbatch.core.spec.Settings` holds and checks the values; this table says how each is
asked for: the magic's flag, its help (``%batchgen?``), the kind of value it takes, whether
an X/Y/Z grid can vary it, and the panel's control for it (or why the panel has none).
The magic's options and the grid axes are made from it, so a new setting is one row here
plus its field and its use. Pure data: no front end and no model code is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nbbatch.core.spec import DEFAULT_MODEL, DTYPES

Kind = Literal["int", "float", "text", "switch", "repeat"]
"""How the value is typed: a whole number, a number, text, an on switch, or a repeatable ``PATH[:X]``."""


@dataclass(frozen=True)
class Setting:
    """One setting: its `Settings` field `name`, `help` and how each front end asks for it.

    `flags` are the magic's options (default ``--name-with-dashes``); `axis` is the kind of
    value an X/Y/Z grid axis over it takes (None: not an axis) and `plot` the ``X Type`` A1111's
    X/Y/Z plot writes for it; `panel` names the panel's control, or says why the panel has
    none (text with a space).
    """

    name: str
    help: str
    kind: Kind = "text"
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    axis: Literal["int", "float", "text"] | None = None
    plot: str = ""
    panel: str = ""

    @property
    def flag(self) -> str:
        """The magic's long option: ``--true-cfg`` for ``true_cfg``."""
        return next((flag for flag in self.flags if flag.startswith("--")), "--" + self.name.replace("_", "-"))

    @property
    def option_strings(self) -> tuple[str, ...]:
        """Every option the magic takes for it (short ones included)."""
        return self.flags or (self.flag,)

    def argparse_options(self) -> dict[str, object]:
        """The keyword arguments of IPython's ``@argument`` (argparse's ``add_argument``) for this row."""
        options: dict[str, object] = {"help": self.help, "dest": self.name}
        if self.kind == "switch":
            options.update(action="store_true", default=None)
        elif self.kind == "repeat":
            options.update(action="append")
        elif self.kind in ("int", "float"):
            options["type"] = int if self.kind == "int" else float
        if self.choices:
            options["choices"] = self.choices
        if self.metavar:
            options["metavar"] = self.metavar
        return options


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "model",
        f"model id, local folder or built-in name (default {DEFAULT_MODEL} or $NBBATCH_MODEL)",
        flags=("--model", "-m"),
        panel="model",
    ),
    Setting("steps", "denoising steps (default 30)", "int", axis="int", plot="Steps", panel="steps"),
    Setting(
        "guidance",
        "guidance scale as the model card uses it (default: the pipeline's)",
        "float",
        flags=("--guidance", "-g"),
        axis="float",
        plot="CFG Scale",
        panel="guidance",
    ),
    Setting(
        "true_cfg",
        "FLUX.1: real CFG beside its distilled guidance (above 1)",
        "float",
        metavar="SCALE",
        panel="true_cfg",
    ),
    Setting(
        "width", "image width, a multiple of 8 (default: the model's)", "int", axis="int", plot="Width", panel="width"
    ),
    Setting(
        "height",
        "image height, a multiple of 8 (default: the model's)",
        "int",
        axis="int",
        plot="Height",
        panel="height",
    ),
    Setting(
        "strength",
        "image-to-image strength, above 0 to 1 (default 0.8; 0.3 with --vary)",
        "float",
        axis="float",
        plot="Denoising",
        panel="strength",
    ),
    Setting(
        "scheduler",
        "euler, euler-a, ddim, dpm++2m, dpm++2m-sde, unipc, heun, pndm, lms or a diffusers class name; "
        "add -karras, -exponential or -beta for the schedule (dpm++2m-karras)",
        axis="text",
        plot="Sampler",
        panel="scheduler",
    ),
    Setting(
        "dtype",
        "auto: fp16 on CUDA, fp32 on CPU",
        choices=DTYPES,
        panel="not in the panel: auto picks the GPU's half precision; the magic and API choose another",
    ),
    Setting(
        "device",
        "auto, cpu, cuda, cuda:N or mps (default auto)",
        panel="not in the panel: auto places the model on the GPU where there is one",
    ),
    Setting(
        "generator_device",
        "where the per-image generators live: cpu (default) or cuda",
        panel="not in the panel: CPU generators make the same images on any machine",
    ),
    Setting(
        "batch_size",
        "images per pipeline call, or auto (halves on out-of-memory; default: all)",
        panel="batch_size",
    ),
    Setting(
        "offload",
        "model CPU offload (needs CUDA; saves GPU memory)",
        "switch",
        panel="not in the panel yet: a GPU memory option, in the magic and API",
    ),
    Setting(
        "vae_tiling",
        "decode in tiles: less memory for large images",
        "switch",
        panel="not in the panel yet: a GPU memory option, in the magic and API",
    ),
    Setting(
        "variant",
        "weight files to load, e.g. fp16 (half the download, where the model has them)",
        panel="not in the panel yet: a download option, in the magic and API",
    ),
    Setting(
        "variation_seed",
        "blend each image's noise towards this seed's",
        "int",
        metavar="SEED",
        axis="int",
        plot="Var. seed",
        panel="variation_seed",
    ),
    Setting(
        "variation_strength",
        "how far: 0 (the seed's image) to 1 (default 0)",
        "float",
        metavar="W",
        axis="float",
        plot="Var. strength",
        panel="variation_strength",
    ),
    Setting(
        "clip_skip",
        "as A1111 counts: 1 the last CLIP layer (default), 2 the one before",
        "int",
        metavar="N",
        panel="clip_skip",
    ),
    Setting(
        "max_sequence_length",
        "tokens a T5 or LLM text encoder reads of each prompt (FLUX.1: up to 512)",
        "int",
        metavar="N",
        panel="max_sequence_length",
    ),
    Setting(
        "refiner",
        "SDXL: the refiner model that takes the latents over at --refiner-at of the steps",
        metavar="MODEL",
        panel="not in the panel yet: an SDXL two-model option, in the magic and API",
    ),
    Setting(
        "refiner_at",
        "SDXL: when the refiner takes over, a fraction of the steps (default 0.8)",
        "float",
        metavar="F",
        axis="float",
        plot="Refiner switch at",
        panel="not in the panel yet: an SDXL two-model option, in the magic and API",
    ),
    Setting(
        "loras",
        "a LoRA file or hub id, weight 1 unless given (repeat for more)",
        "repeat",
        flags=("--lora",),
        metavar="PATH[:WEIGHT]",
        panel="lora",
    ),
    Setting(
        "embeddings",
        "a textual-inversion file; prompts use it by its token (default: the file's name); repeatable",
        "repeat",
        flags=("--embedding",),
        metavar="PATH[:TOKEN]",
        panel="not in the panel yet: textual-inversion files, in the magic and API",
    ),
    Setting(
        "compile",
        "regional torch.compile of the denoiser (slow first)",
        "switch",
        panel="not in the panel yet: GPU speedups, in the magic and API",
    ),
    Setting(
        "channels_last",
        "the UNet in channels-last memory format",
        "switch",
        panel="not in the panel yet: GPU speedups, in the magic and API",
    ),
    Setting(
        "fuse_qkv",
        "fused query/key/value projections (diffusers)",
        "switch",
        panel="not in the panel yet: GPU speedups, in the magic and API",
    ),
)
"""Every setting, in the order the magic's help lists them."""

AXIS_KINDS = {setting.name: setting.axis for setting in SETTINGS if setting.axis is not None}
"""The settings an X/Y/Z grid can vary, and the kind of their values."""

PLOT_TYPES = {setting.name: setting.plot for setting in SETTINGS if setting.axis is not None}
"""The settings an X/Y/Z grid can vary, and the ``X Type`` A1111's plot writes for each."""
