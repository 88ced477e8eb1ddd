"""The `anomon` command line.

Every user-facing failure derives from `AnomonError` (or is a missing file / broker problem) and
is printed as one line on stderr with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from trainer.errors import AnomonError

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

    replay = command("replay", _replay, "produce a file's records into a Kafka topic")
    replay.add_argument("--config", type=Path, required=True)
    replay.add_argument("--data", type=Path, required=True)
    replay.add_argument("--topic", help="default: kafka.input_topic")
    replay.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    replay.add_argument("--loop", action="store_true", help="start over at the end of the file")

    demo = command("demo", _demo, "embedded broker + synthetic traffic + training + live monitor")
    demo.add_argument("--seconds", type=float, default=60.0, help="stop after this long (default 60)")
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


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _schema_infer(args: argparse.Namespace) -> int:
    from trainer.data import read_records
    from trainer.schema import infer_fields, render_config

    text = render_config(infer_fields(read_records(args.data, limit=args.sample)), source=args.data.name)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _train(args: argparse.Namespace) -> int:
    from trainer.config import load_config
    from trainer.data import read_records
    from trainer.fit import fit

    config = load_config(args.config)
    records = read_records(args.data)
    bundle = fit(records, config, verbose=not args.quiet)
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


def _replay(args: argparse.Namespace) -> int:
    from monitor.replay import replay_file

    return replay_file(args.config, args.data, topic=args.topic, rate=args.rate, loop=args.loop)


def _demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo

    return run_demo(seconds=args.seconds, rate=args.rate, workdir=args.workdir)


def _generate(args: argparse.Namespace) -> int:
    from monitor.generate import run_generate

    return run_generate(config_path=args.config, rate=args.rate, anomaly_rate=args.anomaly_rate, topic=args.topic,
                        seconds=args.seconds, count=args.count, out=args.out)


if __name__ == "__main__":
    sys.exit(main())
