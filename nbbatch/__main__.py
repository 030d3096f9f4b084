"""The command line: ``nbbatch run SPEC.toml --out FOLDER [--workers N]`` (also ``python -m nbbatch run ...``).

A thin layer over `nbbatch.scale.sweep`: reads the sweep file, shows a progress bar on
the terminal and says in one line how it ended. Exit status: 0 when every image is in
the folder, 1 when the sweep stopped on an error, 2 for bad input (nothing run), 130
after Ctrl-C (run the same command again to go on).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbbatch.core.item import Item

EXAMPLE = """\
example sweep.toml (the names are those nbbatch.generate takes):

  model = "nbbatch:shapes"
  prompts = ["a red circle on a white background", "a {blue|green} square on a black background"]
  seeds = "0-99"
  steps = 20
  batch_size = 8
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: the process's arguments); returns the exit status."""
    parser = argparse.ArgumentParser(prog="nbbatch", description="Reproducible batch image generation with diffusers.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="make a sweep into a folder, image by image; run it again to resume",
        description="Make every image of a sweep file into FOLDER, each saved (PNG with parameters, index.jsonl) "
        "as soon as its chunk is finished. Run the same command again to make only what is missing.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("spec", metavar="SPEC.toml", help="the sweep file: prompts, seeds and settings")
    run.add_argument("--out", "-o", required=True, metavar="FOLDER", help="where the images and index.jsonl go")
    run.add_argument("--workers", type=int, metavar="N", help="spread the sweep over N Ray workers (nbbatch[ray])")
    run.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster (default: $RAY_ADDRESS, else a local one)")
    args = parser.parse_args(argv)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from nbbatch.scale.sweep import SweepObserver, read_spec, run_sweep

    class Bar(SweepObserver):
        """The sweep as a progress bar of images saved."""

        bar = None

        def started(self, total: int, found: int) -> None:
            if found:
                print(f"{found} of {total} images are in {args.out} already: making the other {total - found}")
            self.bar = tqdm(total=total, initial=found, unit="image", dynamic_ncols=True)

        def made(self, items: list[Item], start: int) -> None:
            if self.bar is not None:
                self.bar.update(len(items))

    bar = Bar()

    try:
        if args.ray_address is not None and args.workers is None:
            raise ValueError("--ray-address goes with --workers")
        spec = read_spec(args.spec)
        sweep = run_sweep(spec, args.out, workers=args.workers, ray_address=args.ray_address, observer=bar)
    except ValueError as error:
        print(f"nbbatch: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the sweep started, or while the pool starts
        print("nbbatch: interrupted; run the same command again to go on", file=sys.stderr)
        return 130
    finally:
        if bar.bar is not None:
            bar.bar.close()
    print(sweep.summary())
    return {"complete": 0, "failed": 1}.get(sweep.status, 130)


if __name__ == "__main__":
    sys.exit(main())
