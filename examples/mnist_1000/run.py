"""MNIST-1000 (seeds 000/002): train a 784-100-50-100-784 autoencoder on 100 images of each digit and
show the most anomalous ones.  Run: ``python examples/mnist_1000/run.py [--out DIR]``."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import anomon, image_records, mnist, parse_args, per_digit, picture, top_indices, write_data  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    out = parse_args(HERE.name, __doc__, argv)
    images, labels = mnist()
    chosen = per_digit(labels, list(range(10)), 100)
    data = write_data(image_records(images[chosen], labels[chosen]), out / "mnist_1000.jsonl")
    anomon("train", "--config", HERE / "anomon.yaml", "--data", data, "--out", out / "model", "--quiet")
    anomon("score", "--model", out / "model", "--data", data, "--out", out / "scores.jsonl", "--top", 10)
    picture(out / "model", data, top_indices(out / "scores.jsonl", 10), out / "top10.png")


if __name__ == "__main__":
    main()
