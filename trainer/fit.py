"""Fitting a bundle: encode, split, train the autoencoder with early stopping, calibrate the threshold.

>>> import numpy as np
>>> from trainer.config import config_from_dict
>>> rng = np.random.default_rng(0)
>>> records = [{"x": float(v), "c": "ab"[i % 2]} for i, v in enumerate(rng.normal(size=300))]
>>> cfg = config_from_dict({"fields": {"x": "numeric", "c": "categorical"},
...                         "model": {"epochs": 3}, "threshold": {"method": "max"}}, environ={})
>>> bundle = fit(records, cfg, verbose=False)
>>> scores, contributions = bundle.score(records[:2])
>>> np.allclose(contributions.sum(axis=1), scores)
True
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from trainer.autoencoder import FieldLoss, build_autoencoder, default_layers
from trainer.bundle import Bundle, range_adjusted
from trainer.config import Config
from trainer.drift import REFERENCE_KEY, Reference
from trainer.matrix import TrainingSample
from trainer.progress import log, progress
from trainer.threshold import calibrate


def fit(records: Iterable[dict[str, Any]], config: Config, verbose: bool = True) -> Bundle:
    """Train a bundle on normal `records`; the training summary lands in `bundle.training`.

    `records` is read chunk by chunk (`TrainingSample`, which says what is held in memory): a
    list, a re-readable source such as `trainer.data.RecordFile`, or a one-shot generator.  Past
    ``model.max_records`` records, a uniform sample of that many is trained on.
    """
    started = time.perf_counter()
    model_cfg = config.model
    sample = TrainingSample(config.fields, config.encoding, model_cfg.holdout_fraction, model_cfg.max_records,
                            model_cfg.seed).fit(records)
    if sample.kept_ < sample.seen_:
        log(f"training on a uniform sample of {sample.kept_:,} of {sample.seen_:,} records (model.max_records)",
            verbose)
    encoder, encoded = sample.encoder_, sample.encoded_
    valid = encoded.valid
    X = torch.from_numpy(encoded.X)
    split = {name: torch.from_numpy(idx[valid[idx]]) for name, idx in
             (("train", sample.train_), ("validation", sample.validation_), ("calibration", sample.calibration_))}

    layers = model_cfg.layers or default_layers(encoder.width)
    model = build_autoencoder(encoder.width, layers, model_cfg.activation, model_cfg.seed)
    loss = FieldLoss(encoder.blocks, encoder.column_weights())
    with single_thread():
        history = _train(model, loss, X[split["train"]], X[split["validation"]], config, verbose)

    with torch.inference_mode():
        calibration = loss.scores(model(X[split["calibration"]]), X[split["calibration"]]).numpy()
    calibration = range_adjusted(calibration, encoded.excess[split["calibration"].numpy()].sum(axis=1))
    t = config.threshold
    threshold = calibrate(calibration, t.method, t.target_rate, t.margin, t.tail_fraction)
    # What drift detection compares live traffic with (trainer.drift): every valid record, and the
    # held-out scores (training records' scores are lower, and not by the same amount at every hour).
    reference = Reference.fit(encoder, encoded.X[valid], (encoded.X[split["calibration"].numpy()], calibration))
    training = {
        "records": sample.seen_,
        "kept": sample.kept_,
        "rejected": int((~valid).sum()),
        "split": {name: int(len(idx)) for name, idx in split.items()},
        "layers": layers,
        "encoded_width": encoder.width,
        "epochs_run": len(history),
        "best_validation_loss": min(h["validation_loss"] for h in history),
        "history": history,
        "threshold": threshold.value,
        "seconds": round(time.perf_counter() - started, 3),
        REFERENCE_KEY: reference.to_dict(),
    }
    log(f"trained in {training['seconds']:.1f} s: {len(history)} epochs, "
        f"validation loss {training['best_validation_loss']:.4f}, threshold {threshold.value:.4g}", verbose)
    return Bundle(config, encoder, model, threshold, training=training)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: small dense layers gain nothing from more, and lose to contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(model: torch.nn.Module, loss: FieldLoss, train: torch.Tensor, validation: torch.Tensor,
           config: Config, verbose: bool) -> list[dict[str, float]]:
    """Adam on mean record score; stops after `patience` epochs without a relative validation
    improvement of `min_improvement` (the last fractions of a percent only sharpen the identity map)."""
    cfg = config.model
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    best, best_state, stale, history = float("inf"), None, 0, []
    bar = progress(range(cfg.epochs), desc="training", unit="epoch", enabled=verbose)
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
        with torch.inference_mode():
            val_loss = float(loss.scores(model(validation), validation).mean())
        history.append({"epoch": epoch + 1, "train_loss": total / len(train), "validation_loss": val_loss})
        bar.set_postfix(train=f"{total / len(train):.4f}", validation=f"{val_loss:.4f}")
        if bar.disable:
            log(f"epoch {epoch + 1}: train loss {total / len(train):.4f}, validation loss {val_loss:.4f}", verbose)
        if val_loss < best * (1 - cfg.min_improvement):
            best, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return history
