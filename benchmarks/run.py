"""nbbatch side by side with raw diffusers, and how cost grows with the batch.

Usage: python benchmarks/run.py [--repeats 5] [--only SECTION ...] [--gpu-device cuda]
Writes benchmarks/results.json and benchmarks/results.md (``--only`` reruns some sections
and keeps the others' figures). Timings are medians of
interleaved runs (A, B, A, B, ...) and compared as ratios measured in the same run, so
they hold on a noisy machine. The GPU section measures the full-size stand-ins where CUDA
is available, and counts their parameters and FLOPs on the meta device everywhere.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "NBBATCH_HOME" not in os.environ:  # built-in pipelines built afresh, and removed after
    os.environ["NBBATCH_HOME"] = tempfile.mkdtemp(prefix="nbbatch-bench-")
    atexit.register(shutil.rmtree, os.environ["NBBATCH_HOME"], ignore_errors=True)
os.environ.setdefault("NBBATCH_MODEL", "nbbatch:tiny-sd")  # the mechanical figures are of the tiny pipelines

import scale
import torch

import nbbatch
from nbbatch.core.spec import Settings
from nbbatch.session import default_session
from nbbatch.testing import picture_result, synthetic_picture

HERE = Path(__file__).resolve().parent
TINY_MODELS = ("nbbatch:tiny-sd", "nbbatch:tiny-sdxl")
PROMPTS = [f"test prompt number {i}, a small house by a lake" for i in range(8)]


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(functions: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turn so that machine noise hits all alike.

    Each round starts with the next function, so no place in the order (first after the last
    one's garbage, say) favours one of them.
    """
    for function in functions.values():
        function()  # warm up
    times = {name: [] for name in functions}
    names = list(functions)
    for round_ in range(repeats):
        first = round_ % len(names)
        for name in names[first:] + names[:first]:
            function = functions[name]
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def raw_call(pipe, prompts, seeds, **kwargs):
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    return pipe(prompt=prompts, generator=generators, **kwargs).images


def magic_shell():
    """An IPython shell with nbbatch loaded, showing HTML as a notebook does."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.display_formatter.active_types = shell.display_formatter.format_types
    if shell.find_cell_magic("batchgen") is None:
        shell.run_line_magic("load_ext", "nbbatch")
    return shell


SIDES = {
    model: 64
    for model in ("flux", "qwen-image", "sd3", "z-image", "chroma", "cogview4")
    for model in [f"nbbatch:tiny-{model}"]
}
"""Image sides of the transformer families' runs (their pipelines default to 1024 px); SD's own default is 32."""

EMPTY_NEGATIVE = {"nbbatch:tiny-qwen-image"}
"""Families whose CFG runs in diffusers only with a negative prompt, which nbbatch passes empty when none is given."""


def overhead(model: str, repeats: int) -> dict:
    from IPython.utils.capture import capture_output

    pipe = default_session().pipelines.get(Settings(model=model)).pipe
    prompts = [p for p in PROMPTS for _ in range(8)]
    seeds = [s for _ in PROMPTS for s in range(8)]
    shell = magic_shell()
    cell = "\n".join(PROMPTS)
    side = SIDES.get(model)
    size = {"width": side, "height": side} if side else {}
    raw = {"negative_prompt": [""] * len(prompts)} if model in EMPTY_NEGATIVE else {}
    flags = f" --width {side} --height {side}" if side else ""

    def magic(display: bool = True):
        with capture_output():
            shell.run_cell_magic(
                "batchgen", f"-m {model} --seeds 0-7 --steps 4{flags}{'' if display else ' --no-display'}", cell
            )

    medians = interleaved(
        {
            "diffusers": lambda: raw_call(pipe, prompts, seeds, num_inference_steps=4, **size, **raw),
            "nbbatch.generate": lambda: nbbatch.generate(PROMPTS, "0-7", model=model, steps=4, **size),
            "%%batchgen --no-display": lambda: magic(display=False),
            "%%batchgen (display on)": magic,
        },
        repeats,
    )
    base = medians["diffusers"]
    return {name: {"seconds": value, "ratio": value / base} for name, value in medians.items()}


def batching(repeats: int) -> dict:
    pipe = default_session().pipelines.get(Settings()).pipe
    prompt = PROMPTS[0]
    medians = interleaved(
        {
            "diffusers, one call of 8": lambda: raw_call(pipe, [prompt] * 8, range(8), num_inference_steps=4),
            "diffusers, 8 calls of 1": lambda: [raw_call(pipe, [prompt], [s], num_inference_steps=4) for s in range(8)],
            "nbbatch, one call of 8": lambda: nbbatch.generate(prompt, "0-7", steps=4),
            "nbbatch, 8 calls of 1": lambda: nbbatch.generate(prompt, "0-7", steps=4, batch_size=1),
        },
        repeats,
    )
    base = medians["diffusers, one call of 8"]
    return {name: {"seconds": value, "ratio": value / base} for name, value in medians.items()}


def preview(repeats: int) -> dict:
    from diffusers.utils import make_image_grid

    images = [synthetic_picture(i) for i in range(64)]
    rows = {}
    for count in (16, 64):
        result = picture_result(images[:count])
        html = result._repr_html_()

        def plain(count=count):
            buffer = io.BytesIO()
            make_image_grid(images[:count], rows=count // 8, cols=8).save(buffer, format="PNG")
            return buffer.getvalue()

        plain_bytes = len(plain())
        rows[count] = {
            "nbbatch seconds": median_time(result._repr_html_, repeats),
            "nbbatch bytes": len(html.encode()),
            "nbbatch bytes per image": len(html.encode()) / count,
            "plain seconds": median_time(plain, repeats),
            "plain bytes": plain_bytes,
        }
    return rows


def live(repeats: int) -> dict:
    """Step previews' cost (on the built-in model, whose previews are drawn), and the saved notebook's size."""
    from nbbatch.models.previews import StepPreviewer

    prompts = ["a red circle on a blue background", "a yellow square on a black background"]
    options = {"model": "nbbatch:shapes", "steps": 20, "batch_size": 4}
    counted = []

    def every_step():
        StepPreviewer.every, default = 0.0, StepPreviewer.every
        try:
            nbbatch.generate(prompts, "0-7", observer=nbbatch.Observer(preview=counted.append), **options)
        finally:
            StepPreviewer.every = default

    shell = magic_shell()
    cell = "\n".join(prompts)

    def magic(flag: str = "") -> None:
        from IPython.utils.capture import capture_output

        shell.kernel = True  # displays update in place, as in Jupyter (the live grid is drawn)
        try:
            with capture_output():
                shell.run_cell_magic("batchgen", f"-m nbbatch:shapes --seeds 0-7 --steps 20 --batch-size 4{flag}", cell)
        finally:
            del shell.kernel

    medians = interleaved(
        {
            "no previews": lambda: nbbatch.generate(prompts, "0-7", **options),
            "previews (at most 4 a second)": lambda: nbbatch.generate(
                prompts, "0-7", observer=nbbatch.Observer(preview=counted.append), **options
            ),
            "previews at every step": every_step,
            "%%batchgen --no-preview": lambda: magic(" --no-preview"),
            "%%batchgen (live grid)": magic,
        },
        repeats,
    )
    base = medians["no previews"]
    rows = {name: {"seconds": value, "ratio": value / base} for name, value in medians.items()}
    notebooks = {name: notebook_size(flag) for name, flag in (("live grid", ""), ("--no-preview", " --no-preview"))}
    return {"repeats": repeats, "previews": rows, "own time": own_time(magic), "notebooks": notebooks}


def own_time(run) -> dict:
    """The seconds a run spends making previews and drawing the live grid, timed inside those functions.

    More exact than a difference of two noisy run times: the share of the run they take.
    """
    from nbbatch.models.previews import StepPreviewer
    from nbbatch.notebook.live import ProgressDisplay

    spent = {"previews": 0.0, "live grid": 0.0}
    originals = [(StepPreviewer, "pictures", "previews"), (ProgressDisplay, "add", "live grid")]
    originals.append((ProgressDisplay, "preview", "live grid"))

    def timed(function, key):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start

        return wrapper

    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in originals]
    for owner, name, key in originals:
        setattr(owner, name, timed(getattr(owner, name), key))
    try:
        start = time.perf_counter()
        run()
        total = time.perf_counter() - start
    finally:
        for owner, name, function in saved:
            setattr(owner, name, function)
    return {"run seconds": total, **{f"{key} seconds": value for key, value in spent.items()}}


def notebook_size(flag: str) -> dict:
    """Run a two-cell notebook (16 images in 4 chunks) in a real kernel; the saved file's size and its time."""
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    cell = (
        f"%%batchgen --model nbbatch:shapes --seeds 0-7 --steps 20 --batch-size 4{flag}\n"
        "a red circle on a blue background\na yellow square on a black background"
    )
    notebook = new_notebook(cells=[new_code_cell("%load_ext nbbatch"), new_code_cell(cell)])
    start = time.perf_counter()
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    seconds = time.perf_counter() - start
    return {"bytes": len(nbformat.writes(notebook).encode()), "seconds": seconds}


def cache(repeats: int) -> dict:
    first, second = [], []
    for _ in range(repeats):
        nbbatch.clear_cache()
        start = time.perf_counter()
        default_session().pipelines.get(Settings())
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        default_session().pipelines.get(Settings())
        second.append(time.perf_counter() - start)
    return {"first load seconds": statistics.median(first), "second load seconds": statistics.median(second)}


MEMORY_PROBE = """
import json, sys, threading, time
import nbbatch, psutil

size = int(sys.argv[1])
nbbatch.generate("warm up", [0], steps=4)  # the pipeline loaded and run once: the baseline
process = psutil.Process()
before = peak = process.memory_info().rss
done = threading.Event()


def sample():
    global peak
    while not done.is_set():
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.001)


sampler = threading.Thread(target=sample)
sampler.start()
result = nbbatch.generate("a small house by a lake", f"0-{size - 1}", steps=4)
done.set()
sampler.join()
print(json.dumps({"peak": peak, "before": before, "kept": len(result)}))
"""


def growth(repeats: int) -> dict:
    """Time (median in this process) and peak memory (a fresh process per size, loaded pipeline as baseline)."""
    import subprocess

    rows = {}
    for size in (1, 2, 4, 8, 16, 32, 64):
        nbbatch.generate(PROMPTS[0], f"0-{size - 1}", steps=4)  # warm up this shape
        seconds = median_time(lambda size=size: nbbatch.generate(PROMPTS[0], f"0-{size - 1}", steps=4), repeats)
        probe = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(size)], capture_output=True, text=True, check=True, env=os.environ
        )
        memory = json.loads(probe.stdout.strip().splitlines()[-1])
        rows[size] = {
            "seconds": seconds,
            "seconds per image": seconds / size,
            "peak RSS above the loaded pipeline MiB": (memory["peak"] - memory["before"]) / 2**20,
        }
    return rows


PEAK_FP16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}
"""Dense fp16 tensor-core peaks (FLOP/s, no sparsity) from the vendors' data sheets, by device name."""


def gpu(repeats: int, device: str = "cuda", side_scale: float = 1.0, steps: int = 30) -> dict:
    """The stand-ins on a GPU (SD in fp16, FLUX.1-dev and Qwen-Image in bf16): images per second, speedups,
    compile time, peak memory and MFU.

    Without CUDA it says so and counts the stand-ins' parameters and FLOPs on the meta device.
    `device`, `side_scale` and `steps` let the same code run small on a CPU, as a check of it
    (the UNet stand-ins only: the transformer ones do not fit a CPU's memory).
    MFU = images per second x steps x denoiser forwards per step (2 for SD's CFG, 1 for FLUX.1-dev
    and for Qwen-Image without a negative prompt) x denoiser FLOPs per latent / the GPU's dense
    16-bit peak; the text encoders and the VAE are left out.
    """
    from nbbatch.models.standins import (
        IMAGE_SIDE,
        STANDINS,
        TRANSFORMERS,
        build_pipeline,
        denoiser_flops,
        parameter_count,
    )

    counted = {}
    for name, kind in STANDINS.items():
        meta = build_pipeline(name, device="meta")
        denoiser = meta.transformer if kind in TRANSFORMERS else meta.unet
        counted[name] = {
            "denoiser parameters": parameter_count(denoiser),
            "denoiser TFLOP per latent at its size": denoiser_flops(meta, IMAGE_SIDE[kind]) / 1e12,
            "side": IMAGE_SIDE[kind],
        }
    if device == "cuda" and not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine", "stand-ins on the meta device": counted}
    gpu_name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    peak = next((value for key, value in PEAK_FP16.items() if key in gpu_name), None)
    rows = {}
    for name, kind in STANDINS.items():
        if kind in TRANSFORMERS and device != "cuda":
            continue
        side = int(IMAGE_SIDE[kind] * side_scale) // 16 * 16
        rows.update(gpu_rows(name, side, device, steps, repeats, peak))
        nbbatch.clear_cache()
    return {"device": gpu_name, "dense fp16 peak TFLOP/s": peak and peak / 1e12, "rows": rows, "counted": counted}


def model_rows(section: dict) -> list[str]:
    """Table rows of an overhead section: each pipeline, each way, seconds and ratio to diffusers."""
    return [
        f"| {model} | {name} | {row['seconds']:.3f} | {row['ratio']:.3f} |"
        for model, rows in section.items()
        for name, row in rows.items()
    ]


def markdown(results: dict) -> str:
    dates: dict[str, list[str]] = {}
    for section, day in results.get("measured", {}).items():
        dates.setdefault(day, []).append(section)
    when = "; ".join(f"{', '.join(sections)} on {day}" for day, sections in sorted(dates.items()))
    lines = [f"Measured on {results['machine']} ({when or results['date']}); medians of {results['repeats']} runs.", ""]
    lines += [
        "**Overhead** (8 prompts x seeds 0-7 = 64 images of 32x32, 4 steps, one call; ratio to diffusers)",
        "",
        "| pipeline | way | seconds | ratio |",
        "| --- | --- | ---: | ---: |",
    ]
    lines += model_rows(results["overhead"])
    if "families" in results:
        lines += [
            "",
            "**Model families** (the same 64 images at 64x64, 4 steps, one call; ratio to diffusers; the 8 prompts",
            "have one token length, so CogView4, which nbbatch runs one token length per call, is one call too;",
            "Qwen-Image's diffusers call is given the empty negative prompts that nbbatch passes to run its CFG)",
            "",
            "| pipeline | way | seconds | ratio |",
            "| --- | --- | ---: | ---: |",
            *model_rows(results["families"]),
        ]
    lines += [
        "",
        "**Batching** (tiny SD, 8 images, 4 steps; ratio to one raw call of 8)",
        "",
        "| way | seconds | ratio |",
        "| --- | ---: | ---: |",
    ]
    for name, row in results["batching"].items():
        lines.append(f"| {name} | {row['seconds']:.3f} | {row['ratio']:.2f} |")
    lines += [
        "",
        "**Inline preview** (synthetic 1024x1024 images) against `make_image_grid` + a full PNG",
        "",
        "| images | nbbatch s | nbbatch KB | KB per image | plain s | plain MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for count, row in results["preview"].items():
        lines.append(
            f"| {count} | {row['nbbatch seconds']:.3f} | {row['nbbatch bytes'] / 1e3:.0f} | "
            f"{row['nbbatch bytes per image'] / 1e3:.1f} | {row['plain seconds']:.2f} | "
            f"{row['plain bytes'] / 1e6:.1f} |"
        )
    c = results["cache"]
    lines += [
        "",
        f"**Cache**: first load {c['first load seconds']:.3f} s, second cell {c['second load seconds'] * 1e6:.0f} µs.",
        "",
        "**Growth** (tiny SD, one call, 32x32, 4 steps)",
        "",
        "| batch | seconds | s per image | peak RSS above the loaded pipeline, MiB |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for size, row in results["growth"].items():
        memory = row["peak RSS above the loaded pipeline MiB"]
        lines.append(f"| {size} | {row['seconds']:.3f} | {row['seconds per image']:.4f} | {memory:.1f} |")
    if "live" in results:
        lines += [
            "",
            f"**Step previews** (nbbatch:shapes, 16 images of 64x64 in 4 chunks, 20 steps; medians of "
            f"{results['live'].get('repeats', results['repeats'])} runs; ratio to no previews)",
            "",
            "| way | seconds | ratio |",
            "| --- | ---: | ---: |",
        ]
        for name, row in results["live"]["previews"].items():
            lines.append(f"| {name} | {row['seconds']:.3f} | {row['ratio']:.3f} |")
        own = results["live"]["own time"]
        share = (own["previews seconds"] + own["live grid seconds"]) / own["run seconds"]
        lines += [
            "",
            f"Timed inside them, one `%%batchgen` run of {own['run seconds']:.2f} s spent "
            f"{own['previews seconds'] * 1e3:.0f} ms making previews and {own['live grid seconds'] * 1e3:.0f} ms "
            f"drawing the live grid: {100 * share:.1f}% of the run.",
        ]
        lines += ["", "**Saved notebook** (the same 16 images by `%%batchgen` in a kernel, saved)", ""]
        lines += ["| output while running | notebook bytes | seconds (with kernel start) |", "| --- | ---: | ---: |"]
        for name, row in results["live"]["notebooks"].items():
            lines.append(f"| {name} | {row['bytes']} | {row['seconds']:.1f} |")
    lines += gpu_lines(results["gpu"])
    if "ray" in results:
        lines += scale.lines(results["ray"])
    return "\n".join(lines)


def gpu_rows(name: str, side: int, device: str, steps: int, repeats: int, peak: float | None) -> dict:
    """One stand-in at batch 1, 4 and 8: raw diffusers and nbbatch, and each speedup at batch 4 (UNets only)."""
    from nbbatch.models.standins import FORWARDS_PER_STEP, STANDINS, TRANSFORMERS, build_pipeline, denoiser_flops

    kind = STANDINS[name]
    dtype = ("bf16" if kind in TRANSFORMERS else "fp16") if device == "cuda" else "fp32"
    options = {"model": name, "device": device, "dtype": dtype, "width": side, "height": side, "steps": steps}
    pipe = default_session().pipelines.get(Settings(model=name, device=device, dtype=dtype)).pipe
    flops = denoiser_flops(build_pipeline(name, device="meta"), side) * FORWARDS_PER_STEP[kind]
    rows = {}
    for size in (1, 4, 8):
        seeds = f"0-{size - 1}"
        ways = {
            "diffusers": lambda size=size: raw_call(
                pipe, [PROMPTS[0]] * size, range(size), width=side, height=side, num_inference_steps=steps
            ),
            "nbbatch": lambda seeds=seeds: nbbatch.generate(PROMPTS[0], seeds, **options),
        }
        if size == 4 and kind not in TRANSFORMERS:  # the speedups are the UNet's
            for speedup in ("channels_last", "fuse_qkv", "compile"):
                ways[f"nbbatch --{speedup.replace('_', '-')}"] = lambda speedup=speedup, seeds=seeds: nbbatch.generate(
                    PROMPTS[0], seeds, **options, **{speedup: True}
                )
        for way, function in ways.items():
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            function()  # the first call: it pays the compile time of --compile
            first = time.perf_counter() - start
            seconds = median_time(function, repeats)
            per_second = size / seconds
            rows[f"{name} {side}px batch {size} {way}"] = {
                "images per second": per_second,
                "first call extra seconds": max(0.0, first - seconds),
                "peak GiB": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
                "MFU": per_second * steps * flops / peak if peak else None,
            }
    return rows


def gpu_lines(section: dict) -> list[str]:
    counted = section.get("counted") or section.get("stand-ins on the meta device", {})
    lines = ["", "**Stand-ins** (random weights, the real architectures; counted on the meta device)", ""]
    lines += ["| stand-in | denoiser parameters | denoiser TFLOP per latent | at |", "| --- | ---: | ---: | ---: |"]
    for name, row in counted.items():
        lines.append(
            f"| {name} | {row['denoiser parameters']:,} | {row['denoiser TFLOP per latent at its size']:.2f} | "
            f"{row['side']}px |"
        )
    if "skipped" in section:
        return [*lines, "", f"**GPU**: skipped: {section['skipped']}.", ""]
    lines += ["", f"**GPU**: {section['device']} (dense fp16 peak {section['dense fp16 peak TFLOP/s']} TFLOP/s)", ""]
    lines += ["| run | images/s | first call extra s | peak GiB | MFU |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in section["rows"].items():
        peak = f"{row['peak GiB']:.1f}" if row["peak GiB"] is not None else "-"
        mfu = f"{100 * row['MFU']:.0f}%" if row["MFU"] is not None else "-"
        lines.append(
            f"| {name} | {row['images per second']:.2f} | {row['first call extra seconds']:.1f} | {peak} | {mfu} |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu-device", default="cuda", help="where the GPU section runs (cpu: a small check of it)")
    parser.add_argument("--gpu-scale", type=float, default=1.0, help="image side as a share of the trained size")
    parser.add_argument("--gpu-steps", type=int, default=30, help="denoising steps of the GPU section")
    sections = {
        "overhead": lambda: {model: overhead(model, args.repeats) for model in TINY_MODELS},
        "families": lambda: {model: overhead(model, args.repeats) for model in SIDES},
        "batching": lambda: batching(args.repeats),
        "preview": lambda: preview(args.repeats),
        "live": lambda: live(args.repeats),
        "cache": lambda: cache(args.repeats),
        "growth": lambda: growth(args.repeats),
        "gpu": lambda: gpu(args.repeats, args.gpu_device, args.gpu_scale, args.gpu_steps),
        "ray": lambda: scale.measure(),
    }
    parser.add_argument("--only", nargs="+", choices=sections, help="run these sections; keep the others' figures")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    results = json.loads((HERE / "results.json").read_text()) if args.only else {}
    results.update(
        {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}",
            "repeats": args.repeats,
        }
    )
    for name in args.only or sections:
        results[name] = sections[name]()
        results.setdefault("measured", {})[name] = results["date"]
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (HERE / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
