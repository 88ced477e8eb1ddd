"""Fitting a bundle: encode, train the autoencoder with early stopping, fit the neighbour reference,
weigh the score's components and calibrate the threshold, all on held-out normal records.

Two ways to hold records out, chosen by `model.cross_fit_below`:

- **held-out split** (the default from 1,000 records): 80% train the encoder, the autoencoder and
  the neighbour reference; 10% stop the training early; 10% calibrate.
- **cross-fitting** (fewer records, down to `MIN_RECORDS`): with ``model.folds`` folds of
  consecutive records (by event time where the schema has a timestamp field, else in the order
  they came), each fold is scored by a model fitted without it (the encoder, the autoencoder
  stopped early on the next fold, the neighbour reference), and those out-of-fold scores weigh
  the components and calibrate the threshold.  The bundle's model is then fitted on every
  record, for the folds' median number of epochs.  It has seen more data than any fold's model,
  so its scores of new normal records are if anything lower than the calibration scores: the
  threshold errs on the side of fewer false alarms.  The manifest and the log say which way a bundle was calibrated.

Records are read chunk by chunk (`trainer.matrix.TrainingSample`, which says what is held in
memory): a list, a re-readable source such as `trainer.data.RecordFile`, or a one-shot
generator.  Past ``model.max_records`` records, a uniform sample of that many is trained on.
Only a window of fewer than ``model.cross_fit_below`` records is held as a list (to cross-fit).

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
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from trainer.autoencoder import FieldLoss, build_autoencoder, default_layers
from trainer.bundle import Bundle, ScoreWeights, distance_dimensions, range_adjusted
from trainer.config import Config
from trainer.drift import REFERENCE_KEY, Reference
from trainer.encoding import Encoder, EncodingError
from trainer.matrix import TrainingSample
from trainer.neighbours import NeighbourDistance
from trainer.progress import log, progress
from trainer.threshold import calibrate

#: Fewest records a bundle trains and calibrates on (cross-fitted: 6 per fold).
MIN_RECORDS = 30
#: Fewest calibration scores expected above a quantile threshold without a warning: the count above
#: it is about Poisson, so below 10 the false-alarm rate varies by a third or more between trainings.
MIN_EXPECTED_ABOVE = 10


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


def fit(records: Iterable[dict[str, Any]], config: Config, verbose: bool = True) -> Bundle:
    """Train a bundle on normal `records`; the training summary lands in `bundle.training`."""
    started = time.perf_counter()
    with single_thread():
        small, records = _small_window(records, config.model.cross_fit_below)
        if small is not None:
            fitted, calibration, inputs, training = _cross_fitted(small, config, verbose)
        else:
            fitted, calibration, inputs, training = _held_out(records, config, verbose)
    reconstruction, distance, excess = calibration
    weights = ScoreWeights.from_medians(reconstruction, distance, distance_dimensions(fitted.encoder))
    weighted = weights.reconstruction * reconstruction + (weights.neighbours * distance if distance is not None else 0)
    t = config.threshold
    threshold = calibrate(range_adjusted(weighted, excess.sum(axis=1)), t.method, t.target_rate, t.margin,
                          t.tail_fraction)
    expected = threshold.calibration["n"] * t.target_rate
    if t.method == "quantile" and expected < MIN_EXPECTED_ABOVE:
        log(f"threshold: {threshold.calibration['n']:,} calibration scores expect {expected:.2g} above the "
            f"threshold at target_rate {t.target_rate:g}, so the false-alarm rate will vary between trainings "
            f"(more records, or model.cross_fit_below to calibrate on all of them)", verbose)
    # What drift detection compares live traffic with (trainer.drift): every valid record, and the
    # held-out records' scores as `Bundle.score` gives them, range excess included (training
    # records' scores are lower, and not by the same amount at every hour).
    valid_inputs, calibration_inputs = inputs
    scores = weighted + threshold.value * excess.sum(axis=1)
    reference = Reference.fit(fitted.encoder, valid_inputs, (calibration_inputs, scores))
    training.update({
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


def _small_window(records: Iterable[dict[str, Any]], below: int) -> tuple[list[dict[str, Any]] | None,
                                                                          Iterable[dict[str, Any]]]:
    """(`records` as a list if there are fewer than `below`, else None; the records to read).

    A re-readable source is read again from its start; a one-shot iterator gets the records read
    ahead put back in front.
    """
    if isinstance(records, list):
        return (records if len(records) < below else None), records
    stream = iter(records)
    head = list(islice(stream, below))
    if len(head) < below:
        return head, head
    return None, (chain(head, stream) if stream is records else records)


def _held_out(records: Iterable[dict[str, Any]], config: Config, verbose: bool):
    """Train on 80%, stop early on 10%, calibrate on 10% (see the module docstring)."""
    cfg = config.model
    sample = TrainingSample(config.fields, config.encoding, cfg.holdout_fraction, cfg.max_records,
                            cfg.seed).fit(records)
    if sample.kept_ < sample.seen_:
        log(f"training on a uniform sample of {sample.kept_:,} of {sample.seen_:,} records (model.max_records)",
            verbose)
    encoded = sample.encoded_
    train, validation, held_out = (rows[encoded.valid[rows]] for rows in
                                   (sample.train_, sample.validation_, sample.calibration_))
    fitted = _fit_models(sample.encoder_, encoded.X[train], encoded.X[validation], config, verbose)
    reconstruction, distance = fitted.components(encoded.X[held_out])
    training = {"calibration": "held-out split", "records": sample.seen_, "kept": sample.kept_,
                "rejected": int((~encoded.valid).sum()),
                "split": {"train": len(train), "validation": len(validation), "calibration": len(held_out)},
                "best_validation_loss": min(h["validation_loss"] for h in fitted.history)}
    inputs = (encoded.X[encoded.valid], encoded.X[held_out])
    return fitted, (reconstruction, distance, encoded.excess[held_out]), inputs, training


def _cross_fitted(records: list[dict[str, Any]], config: Config, verbose: bool):
    """Out-of-fold scores for calibration, then the parts refitted on every record."""
    seen, limit = len(records), config.model.max_records
    kept = min(seen, limit) if limit is not None else seen
    if kept < MIN_RECORDS:
        sampled = f" of {seen} (model.max_records)" if kept < seen else ""
        raise EncodingError(f"training: {kept}{sampled} records are too few (need at least {MIN_RECORDS})")
    if kept < seen:
        keep = np.sort(np.random.default_rng(config.model.seed).choice(seen, kept, replace=False))
        records = _take(records, keep)
        log(f"training on a uniform sample of {kept:,} of {seen:,} records (model.max_records)", verbose)
    # The final model's encoder, fitted first: its event times (the first timestamp field's) order the folds.
    whole = Encoder(config.fields, config.encoding).fit(records)
    encoded = whole.transform(records)
    # Folds are stretches of time (blocked cross-validation), so that a fold is scored as a later
    # stretch of a stream is: random folds leave each record's neighbours minutes away in the
    # training folds, which a later record does not find.  Retraining on the drift test's stream
    # (tests/test_retrain.py), the new version's false-alarm rate on later traffic was 1.77% with
    # random folds and 0.52% with folds in time, against a 1% target.
    folds = np.array_split(_time_order(encoded.event_times, len(records)), config.model.folds)
    parts: list[tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]] = []
    epochs = []
    for k, scored in enumerate(progress(folds, desc="cross-fitting", unit="fold", enabled=verbose)):
        stopping = folds[(k + 1) % len(folds)]
        train = np.concatenate([f for j, f in enumerate(folds) if j not in (k, (k + 1) % len(folds))])
        encoder = Encoder(config.fields, config.encoding).fit(_take(records, train))
        fitted = _fit_models(encoder, _valid_inputs(encoder, records, train), _valid_inputs(encoder, records, stopping),
                             config, verbose=False)
        held_out = encoder.transform(_take(records, scored))
        parts.append((*fitted.components(held_out.X[held_out.valid]), held_out.excess[held_out.valid],
                      scored[held_out.valid]))
        epochs.append(int(np.argmin([h["validation_loss"] for h in fitted.history])) + 1)
    fixed = int(np.median(epochs))
    fitted = _fit_models(whole, encoded.X[encoded.valid], None, config, verbose, epochs=fixed)
    reconstruction, distance, excess, rows = (np.concatenate(p) if p[0] is not None else None for p in zip(*parts))
    log(f"training: {len(records)} records, fewer than model.cross_fit_below {config.model.cross_fit_below}: "
        f"calibrated on out-of-fold scores of {len(folds)} folds, final model {fixed} epochs on every record",
        verbose)
    training = {"calibration": f"cross-fitted ({len(folds)} folds)", "records": seen, "kept": len(records),
                "rejected": int((~encoded.valid).sum()),
                "split": {"train": len(records), "calibration": len(reconstruction)}, "fold_epochs": epochs}
    inputs = (encoded.X[encoded.valid], encoded.X[rows])
    return fitted, (reconstruction, distance, excess), inputs, training


def _fit_models(encoder: Encoder, X_train: np.ndarray, X_validation: np.ndarray | None, config: Config,
                verbose: bool, epochs: int | None = None) -> _Fitted:
    """Autoencoder and neighbour reference on encoded training rows.  `X_validation` stops the
    training early; without it, `epochs` epochs."""
    cfg = config.model
    model = build_autoencoder(encoder.width, cfg.layers or default_layers(encoder.width), cfg.activation, cfg.seed)
    loss = FieldLoss(encoder.blocks, encoder.column_weights())
    validation = torch.from_numpy(X_validation) if X_validation is not None else None
    history = _train(model, loss, torch.from_numpy(X_train), validation, config, verbose, epochs)
    neighbours = None
    if cfg.neighbours:
        neighbours = NeighbourDistance(k=cfg.neighbours, seed=cfg.seed).fit(
            X_train, encoder.blocks, encoder.column_weights(), inputs=encoder.distance_inputs)
    return _Fitted(encoder, model, loss, neighbours, history)


def _time_order(event_times: np.ndarray | None, n: int) -> np.ndarray:
    """Indices of `n` records by event time (`Encoded.event_times`; stable, records without one
    last), or in their own order when the schema has no timestamp field (a topic's partitions come
    one after another, so their order is not time's)."""
    if event_times is None:
        return np.arange(n)
    return np.argsort(np.where(np.isnan(event_times), np.inf, event_times), kind="stable")


def _valid_inputs(encoder: Encoder, records: list[dict[str, Any]], rows: np.ndarray) -> np.ndarray:
    encoded = encoder.transform(_take(records, rows))
    return encoded.X[encoded.valid]


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
