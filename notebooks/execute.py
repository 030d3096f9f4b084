"""Execute notebooks headless (nbclient) and keep the executed copies and what they write in one folder.

Usage: python notebooks/execute.py notebooks/quickstart.ipynb [more.ipynb ...] --out out [--update]
The kernel runs inside the output folder, so the files a notebook saves land beside its executed copy.
``--update`` also writes the outputs back into the notebooks themselves (``make notebooks``), so the
repository's copies show their pictures to a reader on the web.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(notebook: Path, out: Path, timeout: int = 600, then: Sequence[str] = ()) -> Path:
    """Run every cell of `notebook` with the kernel in `out`; write the executed notebook there and return its path.

    `then` are code cells run after the notebook's own, on its objects (the tests' checks of what it shows).
    """
    out.mkdir(parents=True, exist_ok=True)
    document = nbformat.read(notebook, as_version=4)
    document.cells += [nbformat.v4.new_code_cell(source) for source in then]
    NotebookClient(
        document,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(out)}},
        store_widget_state=True,
    ).execute()
    target = out / notebook.name
    nbformat.write(document, target)
    return target


def _empty(output: dict) -> bool:
    """Whether `output` shows nothing: a display whose only content is empty text."""
    data = output.get("data", {})
    return output.get("output_type") == "display_data" and set(data) == {"text/plain"} and not data["text/plain"]


def main() -> None:
    """Execute the notebooks named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--update", action="store_true", help="write the outputs back into the notebooks too")
    args = parser.parse_args()
    for notebook in args.notebooks:
        target = execute(notebook, args.out)
        if args.update:
            document = nbformat.read(target, as_version=4)
            document.metadata.pop("widgets", None)  # live widgets' state: nothing a static page can show
            for cell in document.cells:  # and the emptied displays a finished progress bar leaves behind
                if cell.cell_type == "code":
                    cell.outputs = [output for output in cell.outputs if not _empty(output)]
            nbformat.write(document, notebook)
        written = sorted(p.name for p in args.out.iterdir() if p.suffix == ".png")
        print(f"executed {notebook} -> {target}; images in {args.out}/: {', '.join(written)}")


if __name__ == "__main__":
    main()
