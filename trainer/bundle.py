"""The model bundle: everything needed to score events, in a versioned, hash-checked directory.

Layout of ``models/NAME`` (one directory per model, one sub-directory per trained version)::

    models/NAME/CURRENT                    # the version id the monitor loads
    models/NAME/versions/<version>/manifest.json
                                   config.json      # fields, encoding, model, threshold settings
                                   encoder.json     # fitted encoder state
                                   threshold.json   # threshold, bands, calibration summary
                                   weights.pt       # state_dict, loaded with weights_only=True

`Bundle.save` writes a version under a temporary name in ``models/NAME`` and renames it into
``versions/`` once complete, then replaces CURRENT atomically: a crash never leaves a partial
version or pointer.  `Bundle.load` accepts either directory, reads each file once and verifies
its sha256 against the manifest before using any of its bytes, and refuses a tampered bundle,
one of a newer format, or an incompatible one with a one-line `BundleError`.  Bundles are data:
JSON, and weights read with torch's ``weights_only`` unpickler, which loads tensors and nothing
that runs code.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.autoencoder import FieldLoss, bottleneck, build_autoencoder
from trainer.config import Config, ConfigError, config_from_dict
from trainer.encoding import Encoder, VectorEncoder, valid_mask
from trainer.files import atomic_directory, atomic_write_text
from trainer.neighbours import NeighbourDistance
from trainer.threshold import Threshold
from trainer.errors import AnomonError

FORMAT_VERSION = 1
#: The parts of a score, in `ScoredBatch.components` order (what an alert says drove it).
COMPONENTS = ("reconstruction", "neighbours", "range")
_FILES = ("config.json", "encoder.json", "threshold.json", "weights.pt")


class BundleError(AnomonError):
    """A missing, tampered or incompatible bundle."""


@dataclass
class ScoredBatch:
    """Scores of a batch; unpacks as ``scores, contributions = bundle.score(records)``.

    A score is the record's anomaly score: higher is more anomalous, ≥ 0, in units of the
    typical normal record (each component divided by its median on held-out normal records:
    reconstruction error, neighbour distance times `neighbour_emphasis`, plus threshold × range
    excess; see `Bundle.score`);
    it alerts at ``bundle.threshold.value``.  `contributions` holds each field's part (n,
    fields): a row sums to the record's score; `components` (n, 3) the parts by component, in
    `COMPONENTS` order, which also sum to the score.  Records in `invalid` (reason, detail) are
    refused and have NaN scores; `unreadable` lists, per row, the values scored as missing.
    """

    scores: np.ndarray
    contributions: np.ndarray
    output: np.ndarray  # raw decoder output; `Bundle.reconstruction` decodes the rows asked for
    invalid: list[tuple[str, str] | None]
    event_times: np.ndarray | None = None  # epoch seconds when the schema has a timestamp field
    unreadable: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    inputs: np.ndarray | None = None  # the encoded records (n, encoder width), float32
    components: np.ndarray | None = None  # (n, len(COMPONENTS)) reconstruction, neighbours, range excess

    def __iter__(self):
        return iter((self.scores, self.contributions))

    @property
    def valid(self) -> np.ndarray:
        return valid_mask(self.invalid)

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class ScoreWeights:
    """Each component's factor in the score: its emphasis / its median on held-out normal records.

    Dividing by the median puts both components in units of the typical normal record, so
    neither dominates by the scale of its numbers; a bundle without neighbours weighs the
    reconstruction error 1 (the training loss's own units).  The neighbour distance then counts
    `neighbour_emphasis` times (see there): the more direct density estimate, in few dimensions.
    """

    reconstruction: float = 1.0
    neighbours: float = 0.0

    @classmethod
    def from_medians(cls, reconstruction: np.ndarray, neighbours: np.ndarray | None, dimensions: int) -> ScoreWeights:
        """Weights from held-out normal records' component scores (`neighbours` None: no neighbours)
        and the number of `dimensions` the distance spans (`distance_dimensions`).

        >>> w = ScoreWeights.from_medians(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.5]), dimensions=8)
        >>> w.reconstruction, w.neighbours
        (0.5, 8.0)
        """
        inverse = lambda scores: 1.0 / max(float(np.median(scores)), 1e-12)  # noqa: E731
        return cls(inverse(reconstruction),
                   neighbour_emphasis(dimensions) * inverse(neighbours) if neighbours is not None else 0.0)


def distance_dimensions(encoder: Encoder) -> int:
    """The dimensions the neighbour distance spans: one per field (a category, a number with its
    missing indicator, a timestamp's cycles), and one per element of a vector field.

    >>> from trainer.config import FieldSpec
    >>> distance_dimensions(Encoder([FieldSpec("x", "numeric"), FieldSpec("c", "categorical"),
    ...                              FieldSpec("pixels", "vector", size=784), FieldSpec("id", "ignore")]))
    786
    """
    return sum(e.spec.size if e.spec.type == "vector" else 1 for e in encoder.encoders_)


def neighbour_emphasis(dimensions: int) -> float:
    """How many times the neighbour distance counts beside the reconstruction error, both in
    units of their medians: 4 up to 32 dimensions (`distance_dimensions`), falling as
    128 / dimensions to 1 from 128.

    In few dimensions the distance to the nearest normal records is the most direct density
    estimate; in many, distances concentrate (the nearest and the farthest records lie almost
    equally far: Beyer et al., "When is nearest neighbor meaningful?", 1999) while the
    autoencoder's low-dimensional code still separates.  On the benchmark (`bench/quality.py`,
    seed 0) the distance alone beat the reconstruction error on 15 of the 19 sets up to 64
    fields and on none of the 5 from 100 fields; over seeds 0-2, weighing both 1 lost Waveform
    (0.69 against IsolationForest's 0.76) and vertebral, 4 throughout lost AID362 (114 fields),
    this rule none (mean ROC-AUC 0.826 → 0.834).  A 784-pixel image counts 784 dimensions: on
    the MNIST examples 4 instead of 1 moved ROC-AUC by at most 0.0013 either way.

    >>> [neighbour_emphasis(n) for n in (8, 32, 64, 128, 500)]
    [4.0, 4.0, 2.0, 1.0, 1.0]
    """
    return float(np.clip(128 / max(dimensions, 1), 1.0, 4.0))


class Bundle:
    """A trained model: config, fitted encoder, autoencoder weights, neighbour reference and threshold."""

    def __init__(self, config: Config, encoder: Encoder, model: torch.nn.Module, threshold: Threshold,
                 training: dict[str, Any] | None = None, manifest: dict[str, Any] | None = None,
                 path: Path | None = None, neighbours: NeighbourDistance | None = None,
                 weights: ScoreWeights = ScoreWeights()):  # noqa: B008 - frozen: safe to share
        self.config = config
        self.encoder = encoder
        self.model = model.eval()
        self.neighbours = neighbours
        self.weights = weights
        self.threshold = threshold
        self.manifest = manifest or {}
        self.training = training if training is not None else self.manifest.get("training", {})
        self.path = path
        self.loss = FieldLoss(encoder.blocks, encoder.column_weights())

    def with_threshold(self, threshold: Threshold, manifest: dict[str, Any] | None = None) -> Bundle:
        """The same model (encoder, weights, neighbour reference, score weights) with another threshold."""
        return Bundle(self.config, self.encoder, self.model, threshold, training=self.training,
                      manifest=self.manifest if manifest is None else manifest, neighbours=self.neighbours,
                      weights=self.weights)

    @property
    def version(self) -> str:
        return self.manifest.get("version", "unsaved")

    @property
    def field_names(self) -> list[str]:
        return self.encoder.field_names

    def score(self, records: list[dict[str, Any]], strict: bool = False, batch_size: int = 8192,
              ignore: Sequence[str] = ()) -> ScoredBatch:
        """Anomaly scores of `records` (higher is more anomalous, ≥ 0), one forward pass per `batch_size`.

        A field's contribution is its weighted reconstruction error, plus its weighted part of
        the distance to the nearest training records (`trainer.neighbours`), plus threshold ×
        its range excess (`NumericEncoder.range_excess`): a value one whole training range
        outside what training saw, of a sign it never saw, or a category outside a vocabulary
        training saw whole (`CategoricalEncoder`), alerts by itself; nearer excursions add in
        proportion.  See `ScoredBatch`.  Fields in `ignore` are left out: they
        contribute 0, and the nearest training records are searched in the other fields.
        """
        encoded = self.encoder.transform(records, strict=strict)
        X = torch.from_numpy(encoded.X)
        errors, outputs = [], []
        with torch.inference_mode():
            for start in range(0, len(X), batch_size):
                chunk = X[start : start + batch_size]
                output = self.model(chunk)
                errors.append(self.loss.field_errors(output, chunk))
                outputs.append(output)
        width = len(self.field_names)
        reconstruction = torch.cat(errors).numpy() if errors else np.zeros((0, width), np.float32)
        output = torch.cat(outputs).numpy() if outputs else np.zeros((0, X.shape[1]), np.float32)
        ignored = np.isin(self.field_names, list(ignore)) if ignore else None
        parts = [self.weights.reconstruction * reconstruction.astype(np.float64),
                 self.weights.neighbours * self.neighbours.field_errors(encoded.X, ignored) if self.neighbours
                 else np.zeros((len(X), width)),
                 self.threshold.value * encoded.excess]
        for part in parts if ignored is not None else ():
            part[:, ignored] = 0.0
        contributions = parts[0] + parts[1] + parts[2]
        contributions[~encoded.valid] = np.nan
        components = np.stack([part.sum(axis=1) for part in parts], axis=1)
        components[~encoded.valid] = np.nan
        return ScoredBatch(contributions.sum(axis=1), contributions, output, encoded.invalid, encoded.event_times,
                           encoded.unreadable, encoded.X, components)

    def reconstruction(self, batch: ScoredBatch, rows: np.ndarray) -> np.ndarray:
        """Reconstructed inputs of `rows` (category slots as probabilities); only rows shown need it."""
        with torch.inference_mode():
            return self.loss.decoded(torch.from_numpy(batch.output[rows])).numpy()

    def codes(self, batch: ScoredBatch, rows: np.ndarray | None = None) -> np.ndarray:
        """Bottleneck codes (n, narrowest layer) of the scored records in `rows` (default: all)."""
        inputs = batch.inputs if rows is None else batch.inputs[rows]
        with torch.inference_mode():
            return bottleneck(self.model)(torch.from_numpy(inputs)).numpy()

    def anomaly_scores(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Anomaly scores only: higher is more anomalous (the opposite of scikit-learn's `score_samples`)."""
        return self.score(records).scores

    def explain(self, records: list[dict[str, Any]], batch: ScoredBatch, rows: list[int] | np.ndarray,
                top: int = 5) -> list[list[dict[str, Any]]]:
        """Top fields of each row in `rows`: field, share of the score, actual and expected value.

        Unreadable values (scored as missing) are always listed, with ``"invalid": true``.  The
        ranking, the shares and the expected values are computed for all rows at once: the
        monitor explains every alert of a batch in one call.
        """
        rows = np.asarray(rows, dtype=int)
        if rows.size == 0:
            return []
        blocks = self.encoder.blocks
        errors = batch.contributions[rows]
        order = np.argsort(-errors, axis=1, kind="stable")[:, :top]
        totals = errors.sum(axis=1, keepdims=True)
        shares = np.divide(np.take_along_axis(errors, order, axis=1), totals,
                           out=np.zeros(order.shape), where=totals > 0)
        orders, share_rows = order.tolist(), shares.tolist()
        unread: dict[int, set[str]] = {}
        if batch.unreadable:
            column = {name: j for j, name in enumerate(self.field_names)}
            for k, row in enumerate(rows.tolist()):
                listed = [name for name, _ in batch.unreadable.get(row, ())]
                if listed:
                    unread[k] = set(listed)
                    extra = [j for j in (column[name] for name in listed) if j not in orders[k]]
                    orders[k] += extra
                    share_rows[k] += [float(errors[k, j] / totals[k, 0]) if totals[k, 0] > 0 else 0.0 for j in extra]
        reconstruction = self.reconstruction(batch, rows)
        expected = {  # only for the fields shown: blocks and encoders are in the same order
            j: self.encoder.encoders_[j].expected(reconstruction[:, blocks[j].start : blocks[j].stop])
            for j in set(np.unique(order).tolist()).union(*(orders[k] for k in unread))
        }
        names = [block.field for block in blocks]
        explanations = []
        for k, row in enumerate(rows.tolist()):
            record = records[row]
            items = [{"field": names[j], "share": round(share, 4), "actual": _jsonable(record.get(names[j])),
                      "expected": expected[j][k]} for j, share in zip(orders[k], share_rows[k])]
            for item in items if k in unread else ():
                if item["field"] in unread[k]:
                    item["invalid"] = True
            explanations.append(items)
        return explanations

    def reconstruct_vectors(self, field: str, batch: ScoredBatch, rows: np.ndarray) -> np.ndarray:
        """Reconstructed values of a `vector` field (e.g. images) on the input's scale."""
        encoder = self.encoder.encoder_for(field)
        if not isinstance(encoder, VectorEncoder):
            raise BundleError(f"bundle: field '{field}' is not a vector field")
        block = next(b for b in self.encoder.blocks if b.field == field)
        return encoder.reconstruct(self.reconstruction(batch, rows)[:, block.start : block.stop])

    def save(self, directory: str | Path) -> Path:
        """Write a new version under `directory` and make it CURRENT; returns the version directory."""
        directory = Path(directory)
        created = datetime.now(timezone.utc)
        config_hash = self.config.schema_hash()
        version = f"{created:%Y%m%dT%H%M%S%fZ}-{config_hash[:8]}"
        target = directory / "versions" / version
        # Written under a temporary name and renamed once complete: a crash, a full disk or an
        # error half-way leaves no version directory, and CURRENT still names the previous one.
        with atomic_directory(target, staging=directory) as partial:
            # Unsorted: the field order is the order of the encoded columns the weights expect.
            _write_json(partial / "config.json", self.config.schema_dict(), sort_keys=False)
            _write_json(partial / "encoder.json", self.encoder.state())
            _write_json(partial / "threshold.json", self.threshold.to_dict())
            # A state dict of tensors only: `load` reads it with torch's weights_only unpickler,
            # which refuses anything but tensors and plain containers.
            weights = {"layers": _layer_sizes(self.model), "state_dict": self.model.state_dict(),
                       "score_weights": asdict(self.weights)}
            if self.neighbours is not None:
                weights["neighbours"] = self.neighbours.state()
            torch.save(weights, partial / "weights.pt")
            manifest = {
                "format_version": FORMAT_VERSION,
                "version": version,
                "created_at": created.isoformat(),
                "config_hash": config_hash,
                "fields": [{"name": f.name, "type": f.type} for f in self.config.fields],
                "libraries": {"python": platform.python_version(), "torch": torch.__version__,
                              "numpy": np.__version__, "anomon": anomon_version()},
                "training": self.training,
                "files": {name: _sha256((partial / name).read_bytes()) for name in _FILES},
            }
            _write_json(partial / "manifest.json", manifest)
        set_current(directory, version)
        self.manifest, self.path = manifest, target
        return target

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Load a bundle from a model directory (its CURRENT version) or a version directory."""
        target = resolve_version(path)
        manifest = _read_json(target / "manifest.json")
        if not isinstance(manifest, dict):
            raise BundleError(f"bundle: {target}/manifest.json is not a JSON object")
        _check_format(target, manifest.get("format_version"))
        # Each file is read once, its bytes checked against the manifest, and only those bytes are
        # parsed: no byte is used before its hash is verified, and a file swapped after the check
        # changes nothing.
        data = _verified_files(target, manifest.get("files"))
        try:
            config = config_from_dict(_parse_json(target / "config.json", data["config.json"]), environ={})
        except ConfigError as exc:
            raise BundleError(f"bundle: {target} has an incompatible config ({exc})") from None
        if config.schema_hash() != manifest.get("config_hash"):
            raise BundleError(f"bundle: {target} config does not match the manifest's config hash")
        encoder = Encoder(config.fields, config.encoding).load_state(
            _parse_json(target / "encoder.json", data["encoder.json"]))
        try:
            weights = torch.load(io.BytesIO(data["weights.pt"]), weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the unpickler refuses code and unknown types this way
            raise BundleError(f"bundle: {target}/weights.pt is not a plain state dict ({type(exc).__name__})") from None
        model = build_autoencoder(encoder.width, weights["layers"], config.model.activation, seed=0)
        try:
            model.load_state_dict(weights["state_dict"])
        except RuntimeError:
            raise BundleError(f"bundle: {target} weights do not fit the encoded width {encoder.width}") from None
        threshold = Threshold.from_dict(_parse_json(target / "threshold.json", data["threshold.json"]))
        # Bundles of earlier releases score by reconstruction error alone (weight 1, no neighbours).
        neighbours = weights.get("neighbours")
        if neighbours is not None:
            if neighbours["reference"].shape[1:] != (encoder.width,):
                raise BundleError(f"bundle: {target} neighbour reference does not fit the encoded width {encoder.width}")
            neighbours = NeighbourDistance.from_state(neighbours, encoder.blocks, encoder.column_weights(),
                                                      inputs=encoder.distance_inputs)
        return cls(config, encoder, model, threshold, manifest=manifest, path=target, neighbours=neighbours,
                   weights=ScoreWeights(**weights.get("score_weights", {})))


def range_adjusted(errors: np.ndarray, excess: np.ndarray) -> np.ndarray:
    """Calibration scores that account for the range excess the threshold itself scales.

    A record scores ``r + T·E`` (reconstruction error `errors`, total range excess `excess`),
    which reaches the threshold T exactly when ``r / (1 - E) ≥ T``; so T is calibrated on
    ``r / (1 - E)``.  A record with ``E ≥ 1`` alerts whatever T is: its value is inf, which
    calibration leaves out.

    >>> range_adjusted(np.array([1.0, 1.0, 1.0]), np.array([0.0, 0.5, 1.0])).tolist()
    [1.0, 2.0, inf]
    """
    with np.errstate(divide="ignore"):
        return np.where(excess < 1, errors / np.maximum(1 - excess, 0), np.inf)


def set_current(directory: str | Path, version: str) -> None:
    """Point ``directory/CURRENT`` at `version` atomically (temporary name, fsync, rename, see
    `trainer.files.atomic_write`): a monitor reading CURRENT never sees a half-written name, and
    after a crash CURRENT names either the old version or the new one."""
    atomic_write_text(Path(directory) / "CURRENT", version + "\n")


def resolve_version(path: str | Path) -> Path:
    """The version directory a path designates: itself, or the model directory's CURRENT."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path
    pointer = path / "CURRENT"
    if not pointer.is_file():
        raise BundleError(f"bundle: {path} is not a model bundle (no manifest.json or CURRENT)")
    target = path / "versions" / pointer.read_text().strip()
    if not (target / "manifest.json").is_file():
        raise BundleError(f"bundle: {path}/CURRENT names a version that does not exist: {target.name}")
    return target


def _layer_sizes(model: torch.nn.Module) -> list[int]:
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    return [m.out_features for m in linears[:-1]]


def anomon_version() -> str:
    """The installed anomon version ("unknown" when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("anomon")
    except PackageNotFoundError:
        return "unknown"


def _jsonable(value: Any) -> Any:
    if isinstance(value, list) and len(value) > 8:
        return f"[{len(value)} values]"
    return value


def _check_format(target: Path, format_version: Any) -> None:
    """Refuse a manifest of another format: a newer one may store what this version cannot read."""
    if format_version == FORMAT_VERSION:
        return
    if isinstance(format_version, int) and not isinstance(format_version, bool) and format_version > FORMAT_VERSION:
        raise BundleError(f"bundle: {target} has format version {format_version}, newer than the {FORMAT_VERSION} "
                          f"this anomon reads: upgrade anomon to load it")
    raise BundleError(f"bundle: {target} has format version {format_version!r}, this anomon reads {FORMAT_VERSION}")


def _verified_files(target: Path, files: Any) -> dict[str, bytes]:
    """The bytes of every bundle file, each checked against its sha256 in the manifest."""
    if not isinstance(files, dict):
        raise BundleError(f"bundle: {target} manifest has no 'files' mapping")
    data = {}
    for name in _FILES:
        if name not in files:
            raise BundleError(f"bundle: {target} manifest does not list {name}")
        try:
            data[name] = (target / name).read_bytes()
        except FileNotFoundError:
            raise BundleError(f"bundle: {target} is missing {name}") from None
        except OSError as exc:
            raise BundleError(f"bundle: cannot read {target / name}: {exc.strerror}") from None
        if _sha256(data[name]) != files[name]:
            raise BundleError(f"bundle: {target / name} does not match its sha256 in the manifest (tampered?)")
    return data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_json(path: Path, data: Any, sort_keys: bool = True) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def _read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"bundle: {path} does not exist") from None
    except OSError as exc:
        raise BundleError(f"bundle: cannot read {path}: {exc.strerror}") from None
    return _parse_json(path, data)


def _parse_json(path: Path, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BundleError(f"bundle: {path} is not valid JSON") from None
