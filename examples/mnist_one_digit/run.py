"""One digit as normal (seed 004): train on zeros, score unseen zeros and ones, plot the score
histogram with the quantile threshold.  Run: ``python examples/mnist_one_digit/run.py [--out DIR]``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import anomon, image_records, mnist, parse_args, per_digit, write_data  # noqa: E402

NORMAL, ANOMALY = 0, 1
TRAIN, TEST = 500, 400  # images per digit; MNIST's test set holds 980 zeros


def main(argv: list[str] | None = None) -> None:
    out = parse_args(HERE.name, __doc__, argv)
    images, labels = mnist()
    # A random split of the zeros: MNIST's test set is easier in its first half than in its second.
    zeros = np.random.default_rng(0).permutation(np.flatnonzero(labels == NORMAL))
    train = zeros[:TRAIN]
    test = np.concatenate([zeros[TRAIN : TRAIN + TEST], per_digit(labels, [ANOMALY], TEST)])
    write_data(image_records(images[train], labels[train]), out / "zeros.jsonl")
    write_data(image_records(images[test], labels[test]), out / "test.jsonl")

    anomon("train", "--config", HERE / "anomon.yaml", "--data", out / "zeros.jsonl", "--out", out / "model", "--quiet")
    anomon("evaluate", "--model", out / "model", "--data", out / "test.jsonl", "--label-field", "label",
           "--normal-value", NORMAL, "--report", out / "report")
    print(f"score histogram: {out / 'report' / 'score_histogram.png'}")


if __name__ == "__main__":
    main()
