"""The `anomon` command line.

Every user-facing failure derives from `AnomonError` (or is a missing file / broker problem) and
is printed as one line on stderr with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.errors import AnomonError

if TYPE_CHECKING:
    from trainer.config import Config

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.run(args) or 0
    except AnomonError as exc:
        print(f"anomon: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("anomon: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomon", description="Streaming anomaly monitor for JSON events.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int | None], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    schema = commands.add_parser("schema", help="propose a config from data").add_subparsers(metavar="ACTION")
    infer = schema.add_parser("infer", help="guess field types from a data sample")
    infer.add_argument("data", type=Path)
    infer.add_argument("--out", type=Path, help="write the proposal here instead of stdout")
    infer.add_argument("--sample", type=int, default=10_000, help="records to read (default 10000)")
    infer.set_defaults(run=_schema_infer)

    train = command("train", _train, "fit an autoencoder and threshold on normal data, write a model bundle")
    train.add_argument("--config", type=Path, required=True)
    train.add_argument("--data", type=Path, required=True)
    train.add_argument("--out", type=Path, required=True, help="model directory (a new version is added)")
    _max_records_option(train)
    train.add_argument("--quiet", action="store_true")

    score = command("score", _score, "score every record of a file")
    score.add_argument("--model", type=Path, required=True)
    score.add_argument("--data", type=Path, required=True)
    score.add_argument("--out", type=Path, help="scores as JSON Lines (default: none, use --top)")
    score.add_argument("--top", type=int, default=0, help="print the N most anomalous records")
    score.add_argument("--contributions", type=int, default=5, help="fields listed per record (default 5)")

    evaluate = command("evaluate", _evaluate, "measure detection quality on labelled data")
    evaluate.add_argument("--model", type=Path, required=True)
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--label-field", required=True)
    evaluate.add_argument("--normal-value", default="normal")
    evaluate.add_argument("--report", type=Path, help="write metrics.json and plots here")

    broker = command("broker", _broker, "run the embedded Kafka-protocol broker (tansu) on 127.0.0.1")
    broker.add_argument("--port", type=int)

    monitor = command("monitor", _monitor, "score events from Kafka, publish alerts, export metrics")
    monitor.add_argument("--config", type=Path, required=True)
    monitor.add_argument("--model", type=Path, required=True)

    drift = command("drift", _drift, "compare a file with a model's training reference, field by field")
    drift.add_argument("--model", type=Path, required=True)
    drift.add_argument("--data", type=Path, required=True)
    drift.add_argument("--report", type=Path, help="write drift.json and a PNG per drifted field here")

    retrain = command("retrain", _retrain, "train a new model version on records read back from the input topic")
    retrain.add_argument("--config", type=Path, required=True)
    retrain.add_argument("--model-dir", type=Path, required=True)
    retrain.add_argument("--from-offset", action="append", metavar="P:O", help="first offset of partition P (repeat)")
    retrain.add_argument("--to-offset", action="append", metavar="P:O", help="end offset of partition P, exclusive")
    retrain.add_argument("--since", type=_time, help="first record time (ISO 8601; Kafka offsets_for_times)")
    retrain.add_argument("--until", type=_time, help="end record time (ISO 8601)")
    retrain.add_argument("--ignore-field", action="append", default=[], metavar="FIELD",
                         help="leave this field out of the score that selects normal records (a drifted field)")
    _max_records_option(retrain)
    retrain.add_argument("--quiet", action="store_true")

    rollback = command("rollback", _rollback, "point CURRENT at an earlier model version")
    rollback.add_argument("--model-dir", type=Path, required=True)
    rollback.add_argument("--to", metavar="VERSION", help="default: the version before CURRENT")

    replay = command("replay", _replay, "produce a file's records into a Kafka topic")
    replay.add_argument("--config", type=Path, required=True)
    replay.add_argument("--data", type=Path, required=True)
    replay.add_argument("--topic", help="default: kafka.input_topic")
    replay.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    replay.add_argument("--loop", action="store_true", help="start over at the end of the file")

    demo = command("demo", _demo, "embedded broker + synthetic traffic + training + live monitor, "
                                  "then drift, retraining and the new model live")
    demo.add_argument("--seconds", type=float, default=120.0,
                      help="stop after this long (default 120; a retraining still running then is waited for)")
    demo.add_argument("--shift-after", type=float, default=15.0,
                      help="seconds of streaming before the scripted shift (default 15; negative: none)")
    demo.add_argument("--rate", type=float, default=500.0, help="events per second (default 500)")
    demo.add_argument("--workdir", type=Path, default=Path("demo-run"))

    generate = command("generate", _generate, "synthetic web traffic with injected anomalies: live into "
                       "Kafka, or a week of history into a file")
    generate.add_argument("--config", type=Path, help="Kafka settings (default: the demo config)")
    generate.add_argument("--rate", type=_positive(float), default=100.0, help="events per second (default 100)")
    generate.add_argument("--anomaly-rate", type=_fraction, default=0.01,
                          help="share of events turned into anomalies (default 0.01)")
    generate.add_argument("--topic", help="default: kafka.input_topic")
    generate.add_argument("--seconds", type=_positive(float), help="stop after this long (default: on Ctrl-C)")
    generate.add_argument("--count", type=_positive(int), help="stop after this many events (history: 40000)")
    generate.add_argument("--out", type=Path, help="write a week of history to this JSON Lines file instead")
    return parser


def _positive(kind: type) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid value" message
    return parse


def _max_records_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-records", type=_positive(int), metavar="N",
                        help="train on a uniform sample of at most N records (default: model.max_records)")


def _with_max_records(config: Config, max_records: int | None) -> Config:
    """`config` with --max-records, when given, as model.max_records (the bundle's config then says so)."""
    if max_records is None:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(config.model, max_records=max_records))


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _schema_infer(args: argparse.Namespace) -> int:
    from trainer.data import read_records
    from trainer.files import atomic_write_text
    from trainer.schema import infer_fields, render_config

    text = render_config(infer_fields(read_records(args.data, limit=args.sample)), source=args.data.name)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _train(args: argparse.Namespace) -> int:
    from trainer.config import load_config
    from trainer.data import RecordFile
    from trainer.fit import fit

    config = _with_max_records(load_config(args.config), args.max_records)
    bundle = fit(RecordFile(args.data), config, verbose=not args.quiet)
    target = bundle.save(args.out)
    print(f"wrote {target} (threshold {bundle.threshold.value:.6g})")
    return 0


def _score(args: argparse.Namespace) -> int:
    from trainer.scoring import score_file

    return score_file(args.model, args.data, out=args.out, top=args.top, contributions=args.contributions)


def _evaluate(args: argparse.Namespace) -> int:
    from trainer.scoring import evaluate_file

    return evaluate_file(args.model, args.data, label_field=args.label_field,
                         normal_value=args.normal_value, report=args.report)


def _broker(args: argparse.Namespace) -> int:
    from monitor.broker import serve_forever

    return serve_forever(args.port)


def _monitor(args: argparse.Namespace) -> int:
    from monitor.service import run_monitor

    return run_monitor(args.config, args.model)


def _time(text: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _drift(args: argparse.Namespace) -> int:
    from trainer.bundle import Bundle, BundleError
    from trainer.data import iter_chunks
    from trainer.drift import Reference, drift_report, format_report, write_drift_report

    bundle = Bundle.load(args.model)
    reference = Reference.of(bundle.training)
    if reference is None:
        raise BundleError(f"bundle: model {bundle.version} has no drift reference (trained before anomon stored one)")
    report = drift_report(bundle.encoder, reference, iter_chunks(args.data))
    report["model_version"] = bundle.version
    print(format_report(report))
    if args.report:
        written = write_drift_report(report, args.report)
        print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from monitor.retrain import Window, parse_offsets, retrain
    from trainer.config import load_config

    window = Window(parse_offsets(args.from_offset), parse_offsets(args.to_offset), args.since, args.until)
    bundle = retrain(_with_max_records(load_config(args.config), args.max_records), args.model_dir, window,
                     ignore_fields=args.ignore_field, verbose=not args.quiet)
    print(f"{args.model_dir}: CURRENT is {bundle.version} (threshold {bundle.threshold.value:.6g})")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from monitor.lifecycle import rollback

    print(f"{args.model_dir}: CURRENT is {rollback(args.model_dir, args.to)}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from monitor.replay import replay_file

    return replay_file(args.config, args.data, topic=args.topic, rate=args.rate, loop=args.loop)


def _demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo

    return run_demo(seconds=args.seconds, rate=args.rate, workdir=args.workdir,
                    shift_after=None if args.shift_after < 0 else args.shift_after)


def _generate(args: argparse.Namespace) -> int:
    from monitor.generate import run_generate

    return run_generate(config_path=args.config, rate=args.rate, anomaly_rate=args.anomaly_rate, topic=args.topic,
                        seconds=args.seconds, count=args.count, out=args.out)


if __name__ == "__main__":
    sys.exit(main())
