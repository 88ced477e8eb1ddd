"""Detection-quality benchmark: anomon beside IsolationForest and River HalfSpaceTrees on every set.

The protocol of ``../shared/data/README.md``, on the 23 sets of ``benchmark/`` plus NSL-KDD:

- train on 60% of the normal rows (random, seed 0; at most 20,000), test on every other normal row
  plus every anomaly (more than 20,000 test rows: a random 20,000 keeping the anomaly ratio);
  NSL-KDD keeps its own files (normal rows of KDDTrain+_20Percent, all of KDDTest+);
- anomon goes through the product's own path with default settings: `schema infer` on the
  training records, the proposed config, `fit`, `Bundle.score`;
- the baselines as the README measured them, on the same splits, in this run:
  IsolationForest(random_state=0) on sign(x)·log1p(|x|) standardised numerics plus a one-hot of
  the 50 most common values of each categorical field and an "other" column; River
  ``MinMaxScaler() | HalfSpaceTrees(seed=42)``, window_size=min(250, n_train), learning each
  training record once, on the raw numerics plus the same one-hot columns.

A test record that anomon cannot score (an invalid value) is counted per set and ranked
against anomon: an unscored anomaly last, an unscored normal record first.  A set anomon cannot
train on is reported as ``FAIL`` and counted at chance level (ROC-AUC 0.5) in the means.

    .venv/bin/python bench/quality.py [--sets glass,wine] [--seeds 3] [--out bench/quality.json]

Prints one row per set (ROC-AUC and PR-AUC of each detector, anomon's ROC-AUC over the better
baseline's, the verdict: ``win`` at or above the better baseline minus 0.005, else ``LOSS``, and
the ROC-AUC of each of anomon's score components alone: reconstruction, neighbours, range excess),
then the means, and writes the same figures to ``bench/quality.json``.  With ``--seeds N`` anomon
trains seeds 0..N-1 on each set and the row shows the mean (the minimum goes to the JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trainer.bundle import COMPONENTS
from trainer.config import config_from_dict
from trainer.drift import REFERENCE_KEY
from trainer.datasets import SHARED_DATA, read_adbench, read_arff, read_nsl_kdd
from trainer.errors import AnomonError
from trainer.evaluation import pr_auc, roc_auc
from trainer.fit import fit
from trainer.schema import infer_fields, render_config

MAX_TRAIN = 20_000
MAX_TEST = 20_000
TOLERANCE = 0.005
TOP_CATEGORIES = 50
BENCHMARK = SHARED_DATA / "benchmark"


@dataclass(frozen=True)
class Source:
    """One benchmark set: where it is and which label value is the anomaly (ARFF sets)."""

    name: str
    file: str
    label: str | None = None  # ARFF: the class attribute
    anomaly: str | None = None  # ARFF: its anomalous value


SOURCES = [
    *(Source(name, f"adbench/{file}") for name, file in [
        ("ALOI", "1_ALOI.npz"), ("fault", "12_fault.npz"), ("glass", "14_glass.npz"),
        ("Hepatitis", "15_Hepatitis.npz"), ("InternetAds", "17_InternetAds.npz"), ("letter", "20_letter.npz"),
        ("Lymphography", "21_Lymphography.npz"), ("magic.gamma", "22_magic.gamma.npz"), ("musk", "25_musk.npz"),
        ("PageBlocks", "27_PageBlocks.npz"), ("Pima", "29_Pima.npz"), ("SpamBase", "35_SpamBase.npz"),
        ("Stamps", "37_Stamps.npz"), ("vertebral", "39_vertebral.npz"), ("vowels", "40_vowels.npz"),
        ("Waveform", "41_Waveform.npz"), ("Wilt", "44_Wilt.npz"), ("wine", "45_wine.npz"), ("yeast", "47_yeast.npz"),
    ]),
    Source("AID362", "pang/AID362red_train_allpossiblenominal.arff", "Outcome", "Active"),
    Source("apascal", "pang/apascal_entire_trainvsall.arff", "class", "1"),
    Source("Reuters-corn", "pang/Reuters-corn-100.arff", "corn", "yes"),
    Source("w7a", "pang/w7a-libsvm-nonsparse.tar.xz", "class", "1"),
]
NSL_KDD = "NSL-KDD"


@dataclass
class Split:
    """A set's training records (normal only) and test records with their labels."""

    name: str
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    y: np.ndarray  # True = anomaly, one per test record


def load(source: Source) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Records as JSON values (numbers for the npz sets, strings for the ARFF sets) and labels."""
    path = BENCHMARK / source.file
    if source.label is None:
        return read_adbench(path)
    names, rows = read_arff(path)
    column = names.index(source.label)
    features = [n for n in names if n != source.label]
    records = [{n: v for n, v in zip(names, row) if n != source.label} for row in rows]
    assert all(len(r) == len(features) for r in records)
    return records, np.array([row[column] == source.anomaly for row in rows])


def protocol_split(name: str, records: list[dict[str, Any]], y: np.ndarray, seed: int = 0) -> Split:
    """The README's split: 60% of the normal rows (at most 20,000) train; the rest, capped, test.

    >>> split = protocol_split("toy", [{"x": i} for i in range(10)], np.array([False] * 8 + [True] * 2))
    >>> len(split.train), len(split.test), int(split.y.sum())
    (4, 6, 2)
    """
    rng = np.random.default_rng(seed)
    normal, anomalous = np.flatnonzero(~y), np.flatnonzero(y)
    order = rng.permutation(normal)
    n_train = min(round(0.6 * len(normal)), MAX_TRAIN)
    test = np.concatenate([order[n_train:], anomalous])
    if len(test) > MAX_TEST:  # keep the anomaly ratio: sample each class in proportion
        n_anomalous = int(round(MAX_TEST * len(anomalous) / len(test)))
        test = np.concatenate([rng.choice(order[n_train:], MAX_TEST - n_anomalous, replace=False),
                               rng.choice(anomalous, n_anomalous, replace=False)])
    test = np.sort(test)
    return Split(name, [records[i] for i in order[:n_train]], [records[i] for i in test], y[test])


def nsl_kdd_split() -> Split:
    """NSL-KDD's own protocol: normal rows of the training file, every row of the test file."""
    label_fields = ("attack", "difficulty")
    train = read_nsl_kdd(SHARED_DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt")
    test = read_nsl_kdd(SHARED_DATA / "nsl-kdd" / "KDDTest+.txt")
    strip = lambda r: {k: v for k, v in r.items() if k not in label_fields}  # noqa: E731
    return Split(NSL_KDD, [strip(r) for r in train if r["attack"] == "normal"], [strip(r) for r in test],
                 np.array([r["attack"] != "normal" for r in test]))


def anomon(split: Split, seed: int) -> dict[str, Any]:
    """schema infer → default config → fit → score, as a new user would run it."""
    started = time.perf_counter()
    proposal = render_config(infer_fields(split.train), source=split.name)
    raw = yaml.safe_load(proposal)
    raw["model"] = {"seed": seed}
    try:
        bundle = fit(split.train, config_from_dict(raw, environ={}), verbose=False)
    except AnomonError as exc:  # counted at chance level, and the verdict says it failed
        return {"error": str(exc), "roc_auc": 0.5, "pr_auc": float(split.y.mean()), "unscored": len(split.test),
                "fit_seconds": round(time.perf_counter() - started, 2)}
    fit_seconds = time.perf_counter() - started
    scored = bundle.score(split.test)
    scores = np.asarray(scored.scores, dtype=float)
    unscored = ~np.isfinite(scores)
    ranked = np.where(unscored, np.where(split.y, -np.inf, np.inf), scores)  # the worst case for anomon
    finite = ranked[np.isfinite(ranked)]
    low, high = (finite.min() - 1, finite.max() + 1) if finite.size else (0.0, 1.0)
    ranked = np.clip(ranked, low, high)
    types = Counter(spec.type for spec in bundle.config.fields)
    # Each component alone, on the scored records: which part of the score separates this set.
    components = {name: roc_auc(split.y[~unscored], scored.components[~unscored, j])
                  for j, name in enumerate(COMPONENTS)}
    return {"roc_auc": roc_auc(split.y, ranked), "pr_auc": pr_auc(split.y, ranked), "components": components,
            "unscored": int(unscored.sum()), "fit_seconds": round(fit_seconds, 2),
            "fields": dict(sorted(types.items())), "training": _training_summary(bundle.training)}


def _training_summary(training: dict[str, Any]) -> dict[str, Any]:
    """The bundle's training summary without its per-epoch history and drift reference (sizes, not figures)."""
    return {k: v for k, v in training.items() if k not in ("history", REFERENCE_KEY)}


@dataclass
class Features:
    """The baselines' inputs: raw numerics and one-hot columns, with their column names."""

    names: list[str]  # numeric fields first, then one "field=value" column per kept value and field
    n_numeric: int
    train: np.ndarray
    test: np.ndarray


def baseline_features(split: Split) -> Features:
    """Numbers and booleans are numeric; strings categorical: a one-hot of the 50 most common
    training values plus an "other" column."""
    fields = list(dict.fromkeys(k for r in split.train for k in r))
    numeric = [n for n in fields if all(isinstance(r.get(n), (int, float, bool)) for r in split.train)]
    vocabularies = {n: [v for v, _ in Counter(str(r.get(n)) for r in split.train).most_common(TOP_CATEGORIES)]
                    for n in fields if n not in numeric}
    names = [*numeric, *(f"{n}={v}" for n, top in vocabularies.items() for v in [*top, "<other>"])]

    def matrix(records: list[dict[str, Any]]) -> np.ndarray:
        X = np.zeros((len(records), len(names)))
        X[:, : len(numeric)] = np.array([[float(r.get(n, 0.0)) for n in numeric] for r in records]).reshape(len(records), -1)
        start = len(numeric)
        for n, top in vocabularies.items():
            index = {v: i for i, v in enumerate(top)}
            X[np.arange(len(records)), [start + index.get(str(r.get(n)), len(top)) for r in records]] = 1.0
            start += len(top) + 1
        return X

    return Features(names, len(numeric), matrix(split.train), matrix(split.test))


def isolation_forest(features: Features, y: np.ndarray) -> dict[str, Any]:
    from sklearn.ensemble import IsolationForest

    k = features.n_numeric
    signed_log = lambda x: np.sign(x) * np.log1p(np.abs(x))  # noqa: E731
    train, test = signed_log(features.train[:, :k]), signed_log(features.test[:, :k])
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    X_train = np.hstack([(train - mean) / std, features.train[:, k:]])
    X_test = np.hstack([(test - mean) / std, features.test[:, k:]])
    started = time.perf_counter()
    forest = IsolationForest(random_state=0).fit(X_train)
    scores = -forest.score_samples(X_test)
    return {"roc_auc": roc_auc(y, scores), "pr_auc": pr_auc(y, scores), "seconds": round(time.perf_counter() - started, 2)}


def half_space_trees(features: Features, y: np.ndarray) -> dict[str, Any]:
    """Records as dicts keyed by column name (HST draws its split features in key order)."""
    from river import anomaly, compose, preprocessing

    model = compose.Pipeline(preprocessing.MinMaxScaler(),
                             anomaly.HalfSpaceTrees(seed=42, window_size=min(250, len(features.train))))
    started = time.perf_counter()
    for row in features.train.tolist():
        model.learn_one(dict(zip(features.names, row)))
    scores = np.array([model.score_one(dict(zip(features.names, row))) for row in features.test.tolist()])
    return {"roc_auc": roc_auc(y, scores), "pr_auc": pr_auc(y, scores), "seconds": round(time.perf_counter() - started, 2)}


def verdict(ours: float, best_baseline: float) -> str:
    return "win" if ours >= best_baseline - TOLERANCE else "LOSS"


def run_set(split: Split, seeds: int) -> dict[str, Any]:
    runs = [anomon(split, seed) for seed in range(seeds)]
    features = baseline_features(split)
    forest, hst = isolation_forest(features, split.y), half_space_trees(features, split.y)
    roc = [r["roc_auc"] for r in runs]
    best = max(forest["roc_auc"], hst["roc_auc"])
    return {
        "set": split.name, "n_train": len(split.train), "n_test": len(split.test),
        "anomaly_rate": round(float(split.y.mean()), 4),
        "anomon": {"roc_auc": statistics.mean(roc), "roc_auc_min": min(roc),
                   "pr_auc": statistics.mean(r["pr_auc"] for r in runs),
                   "unscored": max(r["unscored"] for r in runs),
                   "fit_seconds": statistics.mean(r["fit_seconds"] for r in runs), "runs": runs,
                   "components": {name: statistics.mean(r["components"][name] for r in runs)
                                  for name in COMPONENTS if all("components" in r for r in runs)}},
        "iforest": forest, "hst": hst,
        "ratio": statistics.mean(roc) / best if best > 0 else float("nan"),
        "verdict": "FAIL" if any("error" in r for r in runs) else verdict(min(roc), best),
    }


def format_row(row: dict[str, Any]) -> str:
    a = row["anomon"]
    return (f"{row['set']:<13} {row['n_train']:>6} {row['n_test']:>6} {a['unscored']:>5}  "
            f"{a['roc_auc']:>7.3f} {a['pr_auc']:>6.3f}  {row['iforest']['roc_auc']:>7.3f} {row['iforest']['pr_auc']:>6.3f}  "
            f"{row['hst']['roc_auc']:>7.3f} {row['hst']['pr_auc']:>6.3f}  {row['ratio']:>6.3f} {row['verdict']:>5} "
            f"{a['fit_seconds']:>6.1f}  " + " ".join(f"{a['components'].get(name, float('nan')):>6.3f}"
                                                     for name in COMPONENTS))


HEADER = (f"{'set':<13} {'train':>6} {'test':>6} {'unsc.':>5}  {'anomon':>7} {'PR':>6}  {'IForest':>7} {'PR':>6}  "
          f"{'HST':>7} {'PR':>6}  {'ratio':>6} {'verd.':>5} {'fit s':>6}  {'recon.':>6} {'neigh.':>6} {'range':>6}")


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the benchmark sets (NSL-KDD apart), wins and unscored records."""
    sets = [r for r in rows if r["set"] != NSL_KDD]
    mean = lambda key, metric: statistics.mean(r[key][metric] for r in sets) if sets else float("nan")  # noqa: E731
    return {
        "sets": len(sets),
        "wins": sum(r["verdict"] == "win" for r in sets),
        "losses": [r["set"] for r in sets if r["verdict"] != "win"],
        "mean_roc_auc": {k: mean(k, "roc_auc") for k in ("anomon", "iforest", "hst")},
        "mean_pr_auc": {k: mean(k, "pr_auc") for k in ("anomon", "iforest", "hst")},
        "unscored": sum(r["anomon"]["unscored"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", help="comma-separated set names (default: all, NSL-KDD included)")
    parser.add_argument("--seeds", type=int, default=1, help="anomon seeds 0..N-1 per set")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("quality.json"))
    args = parser.parse_args(argv)
    wanted = {s.lower() for s in args.sets.split(",")} if args.sets else None
    names = [s.name for s in SOURCES] + [NSL_KDD]
    unknown = wanted - {n.lower() for n in names} if wanted else set()
    if unknown:
        parser.error(f"unknown set {sorted(unknown)[0]!r} (sets: {', '.join(names)})")

    started = time.perf_counter()
    print(HEADER, flush=True)
    rows = []
    for name in names:
        if wanted and name.lower() not in wanted:
            continue
        if name == NSL_KDD:
            split = nsl_kdd_split()
        else:
            source = next(s for s in SOURCES if s.name == name)
            split = protocol_split(name, *load(source))
        rows.append(run_set(split, args.seeds))
        print(format_row(rows[-1]), flush=True)
    totals = summary(rows)
    m = totals["mean_roc_auc"]
    print(f"\nmean ROC-AUC over {totals['sets']} benchmark sets: anomon {m['anomon']:.4f}, "
          f"IForest {m['iforest']:.4f}, HST {m['hst']:.4f}; anomon at or above max(IForest, HST) - {TOLERANCE} "
          f"on {totals['wins']}/{totals['sets']}"
          + (f" (losses: {', '.join(totals['losses'])})" if totals["losses"] else ""))
    p = totals["mean_pr_auc"]
    print(f"mean PR-AUC: anomon {p['anomon']:.4f}, IForest {p['iforest']:.4f}, HST {p['hst']:.4f}; "
          f"unscored test records: {totals['unscored']}")
    seconds = time.perf_counter() - started
    print(f"benchmark took {seconds:.0f} s")
    args.out.write_text(json.dumps({"seeds": args.seeds, "seconds": round(seconds, 1), "python": platform.python_version(),
                                    "summary": totals, "sets": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
