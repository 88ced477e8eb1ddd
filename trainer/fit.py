"""Fitting a bundle: encode, train the autoencoder with early stopping, fit the neighbour reference,
weigh the score's components and calibrate the threshold, all on held-out normal records.

Two ways to hold records out, chosen by `model.cross_fit_below`:

- **held-out split** (the default from 1,000 records): 80% train the encoder, the autoencoder and
  the neighbour reference; 10% stop the training early; 10% calibrate.
- **cross-fitting** (fewer records, down to `MIN_RECORDS`): with ``model.folds`` folds, each fold
  is scored by a model fitted without it (the encoder, the autoencoder stopped early on the next
  fold, the neighbour reference), and those out-of-fold scores weigh the components and calibrate
  the threshold.  The bundle's model is then fitted on every record, for the folds' median
  number of epochs.  It has seen more data than any fold's model, so its scores of new normal
  records are if anything lower than the calibration scores: the threshold errs on the side of
  fewer false alarms.  The manifest and the log say which way a bundle was calibrated.

>>> import numpy as np
>>> from trainer.config import config_from_dict
>>> rng = np.random.default_rng(0)
>>> records = [{"x": float(v), "c": "ab"[i % 2]} for i, v in enumerate(rng.normal(size=300))]
>>> cfg = config_from_dict({"fields": {"x": "numeric", "c": "categorical"},
...                         "model": {"epochs": 3}, "threshold": {"method": "max"}}, environ={})
>>> bundle = fit(records, cfg, verbose=False)
>>> bundle.training["calibration"]
'cross-fitted (5 folds)'
>>> scores, contributions = bundle.score(records[:2])
>>> np.allclose(contributions.sum(axis=1), scores)
True
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from trainer.autoencoder import FieldLoss, build_autoencoder, default_layers
from trainer.bundle import Bundle, ScoreWeights, range_adjusted
from trainer.config import Config
from trainer.drift import REFERENCE_KEY, Reference
from trainer.encoding import Encoded, Encoder, EncodingError
from trainer.neighbours import NeighbourDistance
from trainer.progress import log, progress
from trainer.threshold import calibrate

#: Fewest records a bundle trains and calibrates on (cross-fitted: 6 per fold).
MIN_RECORDS = 30


@dataclass
class _Fitted:
    """One fit of the parts that learn from records: encoder, autoencoder, neighbour reference."""

    encoder: Encoder
    model: torch.nn.Module
    loss: FieldLoss
    neighbours: NeighbourDistance | None
    history: list[dict[str, float]]

    def components(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Reconstruction error and neighbour distance of encoded records `X` (unweighted)."""
        tensor = torch.from_numpy(X)
        with torch.inference_mode():
            reconstruction = self.loss.scores(self.model(tensor), tensor).numpy().astype(np.float64)
        distance = self.neighbours.field_errors(X).sum(axis=1) if self.neighbours else None
        return reconstruction, distance


def fit(records: list[dict[str, Any]], config: Config, verbose: bool = True) -> Bundle:
    """Train a bundle on normal `records`; the training summary lands in `bundle.training`."""
    started = time.perf_counter()
    if len(records) < MIN_RECORDS:
        raise EncodingError(f"training: {len(records)} records are too few (need at least {MIN_RECORDS})")
    order = np.random.default_rng(config.model.seed).permutation(len(records))
    with single_thread():
        if len(records) < config.model.cross_fit_below:
            fitted, calibration, training = _cross_fitted(records, order, config, verbose)
        else:
            fitted, calibration, training = _held_out(records, order, config, verbose)
    reconstruction, distance, excess, rows = calibration
    weights = ScoreWeights.from_medians(reconstruction, distance)
    scores = weights.reconstruction * reconstruction + (weights.neighbours * distance if distance is not None else 0)
    scores = range_adjusted(scores, excess.sum(axis=1))
    t = config.threshold
    threshold = calibrate(scores, t.method, t.target_rate, t.margin, t.tail_fraction)
    encoded = fitted.encoder.transform(records)
    # What drift detection compares live traffic with (trainer.drift): every valid record, and the
    # held-out scores (training records' scores are lower, and not by the same amount at every hour).
    reference = Reference.fit(fitted.encoder, encoded.X[encoded.valid], (encoded.X[rows], scores))
    training.update({
        "records": len(records),
        "rejected": int((~encoded.valid).sum()),
        "encoded_width": fitted.encoder.width,
        "epochs_run": len(fitted.history),
        "history": fitted.history,
        "score_weights": asdict(weights),
        "neighbour_reference": len(fitted.neighbours.reference_) if fitted.neighbours else 0,
        "threshold": threshold.value,
        "seconds": round(time.perf_counter() - started, 3),
        REFERENCE_KEY: reference.to_dict(),
    })
    log(f"trained in {training['seconds']:.1f} s, {training['calibration']}: {len(fitted.history)} epochs, "
        f"threshold {threshold.value:.4g}", verbose)
    return Bundle(config, fitted.encoder, fitted.model, threshold, training=training,
                  neighbours=fitted.neighbours, weights=weights)


def _held_out(records: list[dict[str, Any]], order: np.ndarray, config: Config, verbose: bool):
    """Train on 80%, stop early on 10%, calibrate on 10% (see the module docstring)."""
    n_holdout = int(round(len(records) * config.model.holdout_fraction))
    n_validation = n_holdout // 2
    if len(records) - n_holdout < 10 or n_holdout - n_validation < 10:
        raise EncodingError(f"training: {len(records)} records leave fewer than 10 per split "
                            f"(model.holdout_fraction {config.model.holdout_fraction}); lower model.cross_fit_below "
                            f"no further than the record count to cross-fit instead")
    train, validation, held_out = np.split(order, [len(records) - n_holdout, len(records) - n_validation])
    fitted, encoded = _fit_parts(records, train, validation, config, verbose, scored=held_out)
    reconstruction, distance = fitted.components(encoded.X[encoded.valid])
    excess = encoded.excess[encoded.valid]
    training = {"calibration": "held-out split",
                "split": {"train": len(train), "validation": len(validation), "calibration": len(excess)},
                "best_validation_loss": min(h["validation_loss"] for h in fitted.history)}
    return fitted, (reconstruction, distance, excess, held_out[encoded.valid]), training


def _cross_fitted(records: list[dict[str, Any]], order: np.ndarray, config: Config, verbose: bool):
    """Out-of-fold scores for calibration, then the parts refitted on every record."""
    folds = np.array_split(order, config.model.folds)
    parts: list[tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]] = []
    epochs = []
    for k, scored in enumerate(progress(folds, desc="cross-fitting", unit="fold", enabled=verbose)):
        stopping = folds[(k + 1) % len(folds)]
        train = np.concatenate([f for j, f in enumerate(folds) if j not in (k, (k + 1) % len(folds))])
        fitted, encoded = _fit_parts(records, train, stopping, config, verbose=False, scored=scored)
        parts.append((*fitted.components(encoded.X[encoded.valid]), encoded.excess[encoded.valid],
                      scored[encoded.valid]))
        epochs.append(int(np.argmin([h["validation_loss"] for h in fitted.history])) + 1)
    fixed = int(np.median(epochs))
    fitted, _ = _fit_parts(records, np.sort(order), None, config, verbose, scored=order[:0], epochs=fixed)
    reconstruction, distance, excess, rows = (np.concatenate(p) if p[0] is not None else None for p in zip(*parts))
    log(f"training: {len(records)} records, fewer than model.cross_fit_below {config.model.cross_fit_below}: "
        f"calibrated on out-of-fold scores of {len(folds)} folds, final model {fixed} epochs on every record",
        verbose)
    training = {"calibration": f"cross-fitted ({len(folds)} folds)",
                "split": {"train": len(records), "calibration": len(reconstruction)},
                "fold_epochs": epochs}
    return fitted, (reconstruction, distance, excess, rows), training


def _fit_parts(records: list[dict[str, Any]], train: np.ndarray, validation: np.ndarray | None, config: Config,
               verbose: bool, scored: np.ndarray, epochs: int | None = None) -> tuple[_Fitted, Encoded]:
    """Encoder, autoencoder and neighbour reference fitted on `records[train]`, with the encoding
    of `records[scored]`.  `validation` stops the training early; without it, `epochs` epochs."""
    cfg = config.model
    encoder = Encoder(config.fields, config.encoding).fit(_take(records, train))

    def encode(rows: np.ndarray) -> np.ndarray:
        encoded = encoder.transform(_take(records, rows))
        return encoded.X[encoded.valid]

    X_train = encode(train)
    X_validation = torch.from_numpy(encode(validation)) if validation is not None else None
    model = build_autoencoder(encoder.width, cfg.layers or default_layers(encoder.width), cfg.activation, cfg.seed)
    loss = FieldLoss(encoder.blocks, encoder.column_weights())
    history = _train(model, loss, torch.from_numpy(X_train), X_validation, config, verbose, epochs)
    neighbours = None
    if cfg.neighbours:
        neighbours = NeighbourDistance(k=cfg.neighbours, seed=cfg.seed).fit(X_train, encoder.blocks,
                                                                             encoder.column_weights())
    return _Fitted(encoder, model, loss, neighbours, history), encoder.transform(_take(records, scored))


def _take(records: list[dict[str, Any]], rows: np.ndarray) -> list[dict[str, Any]]:
    return [records[i] for i in rows]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: small dense layers gain nothing from more, and lose to contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(model: torch.nn.Module, loss: FieldLoss, train: torch.Tensor, validation: torch.Tensor | None,
           config: Config, verbose: bool, epochs: int | None = None) -> list[dict[str, float]]:
    """Adam on mean record score; stops after `patience` epochs without a relative validation
    improvement of `min_improvement` (the last fractions of a percent only sharpen the identity map)
    and keeps the best epoch's weights.  Without `validation`, runs `epochs` epochs."""
    cfg = config.model
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    best, best_state, stale, history = float("inf"), None, 0, []
    bar = progress(range(epochs or cfg.epochs), desc="training", unit="epoch", enabled=verbose)
    for epoch in bar:
        model.train()
        total = 0.0
        for batch in torch.randperm(len(train), generator=generator).split(cfg.batch_size):
            x = train[batch]
            batch_loss = loss.scores(model(x), x).mean()
            optimiser.zero_grad()
            batch_loss.backward()
            optimiser.step()
            total += batch_loss.item() * len(batch)
        model.eval()
        entry = {"epoch": epoch + 1, "train_loss": total / len(train)}
        if validation is not None:
            with torch.inference_mode():
                entry["validation_loss"] = float(loss.scores(model(validation), validation).mean())
        history.append(entry)
        bar.set_postfix({name: f"{value:.4f}" for name, value in entry.items() if name != "epoch"})
        if bar.disable:
            log(", ".join([f"epoch {epoch + 1}"] + [f"{name.replace('_', ' ')} {value:.4f}"
                                                     for name, value in entry.items() if name != "epoch"]), verbose)
        if validation is None:
            continue
        if entry["validation_loss"] < best * (1 - cfg.min_improvement):
            best, best_state, stale = entry["validation_loss"], copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
