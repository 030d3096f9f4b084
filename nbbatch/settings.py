"""The one table of settings: each row is what a front end needs to offer one `Settings` field.

`nbbatch.core.spec.Settings` holds and checks the values; this table says how each is
asked for: the magic's flag, its help (``%batchgen?``), the kind of value it takes, whether
an X/Y/Z grid can vary it, and the panel's control for it (its label, its section, a slider's
range, the names it suggests). The magic's options, the panel's controls and the grid axes
are made from it, so a new setting is one row here plus its field and its use. Pure data: no
front end and no model code is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from nbbatch.core.spec import DEFAULT_MODEL, DTYPES

Kind = Literal["int", "float", "text", "switch", "repeat"]
"""How the value is typed: a whole number, a number, text, an on switch, or a repeatable ``PATH[:X]``."""


Section = Literal[
    "", "guidance and text", "image-to-image", "variation", "LoRAs and embeddings", "SDXL refiner", "hardware"
]
"""Where the panel puts a setting's control: "" on the panel's face, else under that heading of its "more" list."""

SECTIONS: tuple[str, ...] = get_args(Section)
"""The panel's sections, in the order it shows them."""


@dataclass(frozen=True)
class Setting:
    """One setting: its `Settings` field `name`, `help` and how each front end asks for it.

    `flags` are the magic's options (default ``--name-with-dashes``); `axis` is the kind of
    value an X/Y/Z grid axis over it takes (None: not an axis) and `plot` the ``X Type`` A1111's
    X/Y/Z plot writes for it. The panel shows it as `label` in `section`: a slider over
    `slider` (low, high, step) where one is given, a list to pick from for `choices`, a box
    that suggests `suggestions`, a tick box for a switch, one line per value for a repeatable
    one, else a text box whose `placeholder` says what empty means (`wide` for a model id or path).
    """

    name: str
    help: str
    kind: Kind = "text"
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    axis: Literal["int", "float", "text"] | None = None
    plot: str = ""
    section: Section = ""
    label: str = ""
    placeholder: str = "model default"
    slider: tuple[float, float, float] | None = None
    suggestions: tuple[str, ...] = ()
    wide: bool = False

    @property
    def title(self) -> str:
        """The panel's label for it: `label`, else its name in words (``true cfg``)."""
        return self.label or self.name.replace("_", " ")

    def read(self, value: Any) -> Any:
        """What a panel control holding `value` gives `Settings`, or None when it is left empty.

        Text is read as the magic reads its option (a number for a number, one value per
        line for a repeatable setting); bad text is a one-line error naming the control.
        """
        if self.kind == "switch":
            return True if value else None
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return None
        if self.kind == "repeat":
            return [line.strip() for line in text.splitlines() if line.strip()]
        if self.kind in ("int", "float"):
            try:
                return int(text) if self.kind == "int" else float(text)
            except ValueError:
                what = "a whole number" if self.kind == "int" else "a number"
                raise ValueError(f"{self.title} must be {what}, not {text!r}") from None
        return text

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
        placeholder=f"{DEFAULT_MODEL} or $NBBATCH_MODEL",
        wide=True,
    ),
    Setting("steps", "denoising steps (default 30)", "int", axis="int", plot="Steps", placeholder="30"),
    Setting(
        "guidance",
        "guidance scale as the model card uses it (default: the pipeline's)",
        "float",
        flags=("--guidance", "-g"),
        axis="float",
        plot="CFG Scale",
    ),
    Setting(
        "true_cfg",
        "FLUX.1: real CFG beside its distilled guidance (above 1)",
        "float",
        metavar="SCALE",
        section="guidance and text",
        label="true CFG",
        placeholder="off (FLUX.1, Chroma: above 1)",
    ),
    Setting(
        "guidance_rescale",
        "SD 1.x/2.x, SDXL: rescale CFG towards the unguided prediction, 0 (off) to 1 (0.7 for zero-terminal SNR)",
        "float",
        metavar="PHI",
        axis="float",
        plot="CFG Rescale",
        section="guidance and text",
        placeholder="off",
    ),
    Setting("width", "image width, a multiple of 8 (default: the model's)", "int", axis="int", plot="Width"),
    Setting("height", "image height, a multiple of 8 (default: the model's)", "int", axis="int", plot="Height"),
    Setting(
        "strength",
        "image-to-image strength, above 0 to 1 (default 0.8; 0.3 with --vary)",
        "float",
        axis="float",
        plot="Denoising",
        section="image-to-image",
        slider=(0.05, 1.0, 0.05),
    ),
    Setting(
        "scheduler",
        "euler, euler-a, ddim, dpm++2m, dpm++2m-sde, unipc, heun, pndm, lms or a diffusers class name; "
        "add -karras, -exponential or -beta for the schedule (dpm++2m-karras)",
        axis="text",
        plot="Sampler",
        suggestions=(
            "euler",
            "euler-a",
            "ddim",
            "dpm++2m",
            "dpm++2m-sde",
            "unipc",
            "heun",
            "pndm",
            "lms",
            "dpm++2m-karras",
            "euler-karras",
            "dpm++2m-sde-karras",
        ),
    ),
    Setting("dtype", "auto: fp16 on CUDA, fp32 on CPU", choices=DTYPES, section="hardware"),
    Setting("device", "auto, cpu, cuda, cuda:N or mps (default auto)", section="hardware", placeholder="auto"),
    Setting(
        "generator_device",
        "where the per-image generators live: cpu (default) or cuda",
        section="hardware",
        label="generators on",
        placeholder="cpu",
    ),
    Setting(
        "batch_size",
        "images per pipeline call, or auto (halves on out-of-memory; default: all)",
        placeholder="all, auto or N",
    ),
    Setting("offload", "model CPU offload (needs CUDA; saves GPU memory)", "switch", section="hardware"),
    Setting(
        "vae_tiling", "decode in tiles: less memory for large images", "switch", section="hardware", label="VAE tiling"
    ),
    Setting(
        "variant",
        "weight files to load, e.g. fp16 (half the download, where the model has them)",
        section="hardware",
        placeholder="fp16, ... (optional)",
    ),
    Setting(
        "variation_seed",
        "blend each image's noise towards this seed's",
        "int",
        metavar="SEED",
        axis="int",
        plot="Var. seed",
        section="variation",
        placeholder="none",
    ),
    Setting(
        "variation_strength",
        "how far: 0 (the seed's image) to 1 (default 0)",
        "float",
        metavar="W",
        axis="float",
        plot="Var. strength",
        section="variation",
        slider=(0.0, 1.0, 0.05),
    ),
    Setting(
        "clip_skip",
        "as A1111 counts: 1 the last CLIP layer (default), 2 the one before",
        "int",
        metavar="N",
        section="guidance and text",
        label="CLIP skip",
        placeholder="1",
    ),
    Setting(
        "max_sequence_length",
        "tokens a T5 or LLM text encoder reads of each prompt (FLUX.1: up to 512)",
        "int",
        metavar="N",
        section="guidance and text",
        label="max tokens",
    ),
    Setting(
        "refiner",
        "SDXL: the refiner model that takes the latents over at --refiner-at of the steps",
        metavar="MODEL",
        section="SDXL refiner",
        placeholder="none",
        wide=True,
    ),
    Setting(
        "refiner_at",
        "SDXL: when the refiner takes over, a fraction of the steps (default 0.8)",
        "float",
        metavar="F",
        axis="float",
        plot="Refiner switch at",
        section="SDXL refiner",
        label="refiner at",
        placeholder="0.8",
    ),
    Setting(
        "loras",
        "a LoRA file or hub id, weight 1 unless given (repeat for more)",
        "repeat",
        flags=("--lora",),
        metavar="PATH[:WEIGHT]",
        section="LoRAs and embeddings",
        label="LoRAs",
        placeholder="file or hub id[:weight], one per line",
    ),
    Setting(
        "embeddings",
        "a textual-inversion file; prompts use it by its token (default: the file's name); repeatable",
        "repeat",
        flags=("--embedding",),
        metavar="PATH[:TOKEN]",
        section="LoRAs and embeddings",
        placeholder="file[:token], one per line",
    ),
    Setting("compile", "regional torch.compile of the denoiser (slow first)", "switch", section="hardware"),
    Setting(
        "channels_last", "the UNet in channels-last memory format", "switch", section="hardware", label="channels last"
    ),
    Setting(
        "fuse_qkv", "fused query/key/value projections (diffusers)", "switch", section="hardware", label="fused QKV"
    ),
)
"""Every setting, in the order the magic's help lists them."""

AXIS_KINDS = {setting.name: setting.axis for setting in SETTINGS if setting.axis is not None}
"""The settings an X/Y/Z grid can vary, and the kind of their values."""

PLOT_TYPES = {setting.name: setting.plot for setting in SETTINGS if setting.axis is not None}
"""The settings an X/Y/Z grid can vary, and the ``X Type`` A1111's plot writes for each."""
