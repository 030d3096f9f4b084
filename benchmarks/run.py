"""nbbatch side by side with raw diffusers, and how cost grows with the batch.

Usage: python benchmarks/run.py [--repeats 5] [--gpu-model ID]
Writes benchmarks/results.json and benchmarks/results.md. Timings are medians of
interleaved runs (A, B, A, B, ...) and compared as ratios measured in the same run, so
they hold on a noisy machine. The GPU section runs only where CUDA is available.
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

import torch

import nbbatch
from nbbatch.core.spec import Settings
from nbbatch.models.pipelines import get_pipeline
from nbbatch.testing import picture_result, synthetic_picture

HERE = Path(__file__).resolve().parent
PROMPTS = [f"test prompt number {i}, a small house by a lake" for i in range(8)]


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(functions: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turn so that machine noise hits all alike."""
    for function in functions.values():
        function()  # warm up
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def raw_call(pipe, prompts, seeds, **kwargs):
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    return pipe(prompt=prompts, generator=generators, **kwargs).images


def overhead(model: str, repeats: int) -> dict:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    pipe = get_pipeline(Settings(model=model)).pipe
    prompts = [p for p in PROMPTS for _ in range(8)]
    seeds = [s for _ in PROMPTS for s in range(8)]
    shell = InteractiveShell.instance()
    shell.display_formatter.active_types = shell.display_formatter.format_types
    if shell.find_cell_magic("batchgen") is None:
        shell.run_line_magic("load_ext", "nbbatch")
    cell = "\n".join(PROMPTS)

    def magic(display: bool = True):
        with capture_output():
            shell.run_cell_magic(
                "batchgen", f"-m {model} --seeds 0-7 --steps 4{'' if display else ' --no-display'}", cell
            )

    medians = interleaved(
        {
            "diffusers": lambda: raw_call(pipe, prompts, seeds, num_inference_steps=4),
            "nbbatch.generate": lambda: nbbatch.generate(PROMPTS, "0-7", model=model, steps=4),
            "%%batchgen --no-display": lambda: magic(display=False),
            "%%batchgen (display on)": magic,
        },
        repeats,
    )
    base = medians["diffusers"]
    return {name: {"seconds": value, "ratio": value / base} for name, value in medians.items()}


def batching(repeats: int) -> dict:
    pipe = get_pipeline(Settings()).pipe
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


def cache(repeats: int) -> dict:
    first, second = [], []
    for _ in range(repeats):
        nbbatch.clear_cache()
        start = time.perf_counter()
        get_pipeline(Settings())
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        get_pipeline(Settings())
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


def gpu(model: str | None, repeats: int) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine"}
    if model is None:
        return {"skipped": "pass --gpu-model (e.g. stabilityai/stable-diffusion-xl-base-1.0)"}
    pipe = get_pipeline(Settings(model=model, device="cuda", dtype="fp16")).pipe
    rows = {}
    for size in (1, 4, 8):
        medians = interleaved(
            {
                "diffusers": lambda size=size: raw_call(
                    pipe, [PROMPTS[0]] * size, range(size), width=1024, height=1024, num_inference_steps=30
                ),
                "nbbatch": lambda size=size: nbbatch.generate(
                    PROMPTS[0], f"0-{size - 1}", model=model, device="cuda", dtype="fp16", width=1024, height=1024
                ),
            },
            repeats,
        )
        rows[size] = {name: {"images per second": size / value} for name, value in medians.items()}
    return rows


def markdown(results: dict) -> str:
    lines = [f"Measured {results['date']} on {results['machine']}; medians of {results['repeats']} runs.", ""]
    lines += [
        "**Overhead** (8 prompts x seeds 0-7 = 64 images of 32x32, 4 steps, one call; ratio to diffusers)",
        "",
        "| pipeline | way | seconds | ratio |",
        "| --- | --- | ---: | ---: |",
    ]
    for model, rows in results["overhead"].items():
        for name, row in rows.items():
            lines.append(f"| {model} | {name} | {row['seconds']:.3f} | {row['ratio']:.3f} |")
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
    lines += ["", f"**GPU**: {json.dumps(results['gpu'])}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu-model", help="a model id or folder for the GPU section (SDXL at 1024x1024)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        "repeats": args.repeats,
        "overhead": {model: overhead(model, args.repeats) for model in ("nbbatch:tiny-sd", "nbbatch:tiny-sdxl")},
        "batching": batching(args.repeats),
        "preview": preview(args.repeats),
        "cache": cache(args.repeats),
        "growth": growth(args.repeats),
        "gpu": gpu(args.gpu_model, args.repeats),
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (HERE / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
