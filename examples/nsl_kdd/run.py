"""NSL-KDD: train on the normal connections of the training file, evaluate on the test file with a
report, and list which fields explain the alerts of a few attack types.
Run: ``python examples/nsl_kdd/run.py [--out DIR]``."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import anomon, parse_args, write_data  # noqa: E402
from trainer.data import iter_records  # noqa: E402
from trainer.datasets import SHARED_DATA, read_nsl_kdd  # noqa: E402

ATTACKS = ("neptune", "satan", "portsweep", "mscan", "guess_passwd", "back")
FIELDS_SHOWN = 3


def attack_contributions(data: Path, scores: Path, attacks: tuple[str, ...] = ATTACKS) -> list[dict[str, Any]]:
    """Per attack type: alerts raised, the fields with the largest mean share, and a typical alert.

    The typical alert is the one with the median score among the type's alerts.
    """
    alerts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for record, line in zip(iter_records(data), iter_records(scores)):
        counts[record["attack"]] += 1
        if record["attack"] in attacks and line.get("anomaly"):
            alerts[record["attack"]].append(line)
    summary = []
    for attack in attacks:
        lines = sorted(alerts[attack], key=lambda line: line["score"])
        shares: dict[str, float] = defaultdict(float)
        for line in lines:
            for c in line["contributions"]:
                shares[c["field"]] += c["share"] / len(lines)
        summary.append({
            "attack": attack,
            "records": counts[attack],
            "alerts": len(lines),
            "mean_share": sorted(shares.items(), key=lambda item: -item[1])[:FIELDS_SHOWN],
            "typical": lines[len(lines) // 2]["contributions"][:FIELDS_SHOWN] if lines else [],
        })
    return summary


def format_summary(summary: list[dict[str, Any]]) -> str:
    """A Markdown table of `attack_contributions`."""
    rows = ["| attack | alerts / records | fields by mean share of the score | typical alert (actual, expected) |",
            "|---|---|---|---|"]
    for s in summary:
        shares = ", ".join(f"`{field}` {share:.0%}" for field, share in s["mean_share"])
        typical = ", ".join(f"`{c['field']}` {c['share']:.0%} ({c['actual']}, {_short(c['expected'])})"
                            for c in s["typical"])
        rows.append(f"| {s['attack']} | {s['alerts']} / {s['records']} | {shares} | {typical} |")
    return "\n".join(rows)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> None:
    out = parse_args(HERE.name, __doc__, argv)
    train = [r for r in read_nsl_kdd(SHARED_DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt") if r["attack"] == "normal"]
    write_data(train, out / "train_normal.jsonl")
    write_data(read_nsl_kdd(SHARED_DATA / "nsl-kdd" / "KDDTest+.txt"), out / "test.jsonl")

    anomon("train", "--config", HERE / "anomon.yaml", "--data", out / "train_normal.jsonl", "--out", out / "model",
           "--quiet")
    anomon("evaluate", "--model", out / "model", "--data", out / "test.jsonl", "--label-field", "attack",
           "--normal-value", "normal", "--report", out / "report")
    anomon("score", "--model", out / "model", "--data", out / "test.jsonl", "--out", out / "scores.jsonl",
           "--top", 5)
    print("\nWhich fields explain the alerts, by attack type:\n")
    print(format_summary(attack_contributions(out / "test.jsonl", out / "scores.jsonl")))


if __name__ == "__main__":
    main()
