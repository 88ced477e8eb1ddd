"""Helpers shared by the examples: output folder, the `anomon` CLI in-process, MNIST subsets.

The data sets are read from the shared data folder (`trainer.datasets.SHARED_DATA`) and written
as JSON Lines into the example's output folder, never into the repository.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from monitor.cli import main as anomon_main
from trainer.bundle import Bundle
from trainer.data import iter_records
from trainer.datasets import SHARED_DATA, mnist_records, read_mnist_idx, write_jsonl
from trainer.report import plot_image_grid

REPO = Path(__file__).resolve().parents[1]


def parse_args(name: str, description: str, argv: list[str] | None = None) -> Path:
    """The example's output folder (``--out``, default ``out/examples/NAME``, ignored by git), created."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "examples" / name,
                        help="where data, model, scores and report go")
    out = parser.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    return out


def anomon(*args: Any) -> None:
    """Run one `anomon` command in this process, echoed like a shell line; exit if it fails."""
    argv = [str(a) for a in args]
    print(f"\n$ anomon {shlex.join(argv)}", flush=True)
    status = anomon_main(argv)
    if status:
        sys.exit(status)


def mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images (n, 28, 28) uint8 and their digit labels."""
    folder = SHARED_DATA / "mnist"
    return read_mnist_idx(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")


def per_digit(labels: np.ndarray, digits: list[int], count: int, skip: int = 0) -> np.ndarray:
    """Indices of `count` images of each digit in `digits`, after the first `skip` of that digit."""
    return np.concatenate([np.flatnonzero(labels == d)[skip : skip + count] for d in digits])


def image_records(images: np.ndarray, labels: np.ndarray, **fields: Any) -> list[dict[str, Any]]:
    """Records of ``label``, a 784-long ``pixels`` vector scaled by 1/255, and `fields`."""
    return [{**record, **fields} for record in mnist_records(images, labels)]


def write_data(records: list[dict[str, Any]], path: Path) -> Path:
    """`records` as a JSON Lines file at `path`."""
    write_jsonl(records, path)
    return path


def top_indices(scores_path: Path, n: int) -> list[int]:
    """File indices of the `n` highest scores in an `anomon score --out` file."""
    lines = [json.loads(line) for line in scores_path.read_text().splitlines()]
    scored = [line for line in lines if "score" in line]
    return [line["index"] for line in sorted(scored, key=lambda line: -line["score"])[:n]]


def picture(model: Path, data: Path, indices: list[int], path: Path, field: str = "pixels") -> Path:
    """Images at `indices` of `data` above their reconstructions by `model`, titled label and score."""
    wanted = set(indices)
    chosen = {i: record for i, record in enumerate(iter_records(data)) if i in wanted}
    records = [chosen[i] for i in indices]
    bundle = Bundle.load(model)
    batch = bundle.score(records)
    reconstructions = bundle.reconstruct_vectors(field, batch, np.arange(len(records)))
    titles = [f"#{i} label {r['label']}\n{s:.3g}" for i, r, s in zip(indices, records, batch.scores)]
    path = plot_image_grid([r[field] for r in records], reconstructions, titles, path)
    print(f"wrote {path}")
    return path
