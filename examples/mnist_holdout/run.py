"""Held-out digit and out-of-distribution images (seed 003): train on every digit except 5 with the
threshold at the largest normal error, then measure detection of normal digits, 5s and images that
are not digits.  Run: ``python examples/mnist_holdout/run.py [--out DIR]``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import anomon, image_records, mnist, parse_args, per_digit, write_data  # noqa: E402

HELD_OUT = 5
NORMAL = [d for d in range(10) if d != HELD_OUT]
TRAIN_PER_DIGIT, TEST_PER_DIGIT, PER_KIND = 200, 50, 100


def not_digits(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Substitutes for Fashion-MNIST (not available here): three kinds of images that are not digits."""
    return {
        "not_digit_inverted": 255 - images,  # dark strokes on a white background
        "not_digit_rotated": np.rot90(images, axes=(1, 2)).copy(),  # strokes in an unseen orientation
        "not_digit_noise": np.random.default_rng(seed).integers(0, 256, images.shape, dtype=np.uint8),
    }


def main(argv: list[str] | None = None) -> None:
    out = parse_args(HERE.name, __doc__, argv)
    images, labels = mnist()
    train = per_digit(labels, NORMAL, TRAIN_PER_DIGIT)
    write_data(image_records(images[train], labels[train], kind="normal"), out / "train.jsonl")

    # Test images come after the training ones: none of them was seen in training.
    normal = per_digit(labels, NORMAL, TEST_PER_DIGIT, skip=TRAIN_PER_DIGIT)
    fives = per_digit(labels, [HELD_OUT], PER_KIND)
    sources = per_digit(labels, NORMAL, PER_KIND // len(NORMAL) + 1, skip=TRAIN_PER_DIGIT + TEST_PER_DIGIT)[:PER_KIND]
    test = [*image_records(images[normal], labels[normal], kind="normal"),
            *image_records(images[fives], labels[fives], kind=f"held_out_{HELD_OUT}")]
    for kind, transformed in not_digits(images[sources]).items():
        test += image_records(transformed, labels[sources], kind=kind)
    write_data(test, out / "test.jsonl")

    anomon("train", "--config", HERE / "anomon.yaml", "--data", out / "train.jsonl", "--out", out / "model", "--quiet")
    anomon("evaluate", "--model", out / "model", "--data", out / "test.jsonl", "--label-field", "kind",
           "--normal-value", "normal", "--report", out / "report")


if __name__ == "__main__":
    main()
