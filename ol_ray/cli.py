"""The `ol-ray` command line: run a configured pipeline.

    ol-ray run configs/sst2.yaml learner.lr=3e-5 stream.max_samples=2000
    ol-ray run --resume runs/sst2-20261128-151100
    ol-ray report runs/sst2-20261128-151100
    ol-ray bench pipeline configs/sst2.yaml --updates 200
    ol-ray bench memory configs/sst2.yaml --samples 100000
    ol-ray bench scaling configs/sst2.yaml --nodes 1 2
    ol-ray bench selection configs/sst2.yaml --strategies random entropy rho_loss --seeds 0 1 2
    ol-ray bench batching configs/sst2.yaml --policies fixed adaptive resource --seeds 0 1 2
    ol-ray bench forgetting configs/forgetting.yaml --updates 60 180 --seeds 0 1 2
    ol-ray bench time-to-accuracy configs/sst2.yaml --seeds 0 1 2
    ol-ray produce ../shared/data/sst2/train.tsv --servers localhost:9092 --topic sst2 --rate 200 --text-field sentence
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Optional, Sequence

from ol_ray.config import load_config, load_run_config
from ol_ray.errors import ConfigError
from ol_ray.records import RunSummary

DESCRIPTION = """\
ol_ray keeps a Hugging Face model learning from a live stream of labelled text, on Ray: Ray Data actors validate,
tokenize and score each window of the stream, a selection strategy picks the most useful samples, and one learner
actor applies weighted batched updates and publishes versioned weights back to the scorers."""


def build_parser(with_bench: bool = True) -> argparse.ArgumentParser:
    """The argument parser of `ol-ray`; without `with_bench` the benchmarks' subcommands are left out (their
    modules import Ray and torch, which `ol-ray report` or `--help` need not wait for)."""
    parser = argparse.ArgumentParser(prog="ol-ray", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run a pipeline from a YAML config",
        description="Run the pipeline a YAML config describes, to the end of its stream or sample budget. Writes "
                    "metrics.jsonl, quarantine.jsonl, monitor.jsonl, checkpoints/ and summary.json to the run "
                    "directory and prints the final dev-set figures.")
    run.add_argument("config", nargs="?", help="a YAML config, e.g. configs/sst2.yaml (not with --resume)")
    run.add_argument("overrides", nargs="*", metavar="section.key=value",
                     help="override config values, e.g. learner.lr=3e-5 stream.max_samples=2000")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue a stopped or killed run from its newest checkpoint, with the run's own config "
                          "(overrides still apply)")
    run.add_argument("--resume-or-start", action="store_true",
                     help="continue the run in the config's output.run_dir if one is there (as --resume does), "
                          "else start it: submitting the same job again keeps one run going (the default of "
                          "jobs/online_finetune.py; needs an output.run_dir without {time})")
    report = commands.add_parser(
        "report", help="write a markdown report with plots of a run",
        description="Write report.md and report/*.png into a run directory: dev accuracy against samples, updates "
                    "and wall time; loss; batch size; throughput; staleness; memory; the label mix of the selected "
                    "samples against the stream's. From the run's metrics.jsonl and summary.json.")
    report.add_argument("run_dir", help="a run directory, e.g. runs/sst2-20261128-151100")
    produce = commands.add_parser(
        "produce", help="replay a data file into a Kafka topic, at a given rate",
        description="Send every row of a data file (TSV, CSV, JSONL or Parquet) to a Kafka topic as a JSON message "
                    "{text field, label field}, keyed by the row's sample id, for demos and benchmarks. Rows that "
                    "do not parse are sent as they are, for the consumer's validation to quarantine.")
    produce.add_argument("path", help="the data file")
    produce.add_argument("--servers", required=True, help="bootstrap servers, host:port[,host:port]")
    produce.add_argument("--topic", required=True, help="the topic to write")
    produce.add_argument("--rate", type=float, default=0.0, help="messages per second (default 0: unpaced)")
    produce.add_argument("--limit", type=int, default=0, help="send at most this many (default 0: all)")
    produce.add_argument("--partitions", type=int, default=0,
                         help="create the topic with this many partitions first (an existing one is kept)")
    produce.add_argument("--text-field", default="text", help="the file's text column (default text)")
    produce.add_argument("--label-field", default="label", help="the file's label column (default label)")
    produce.add_argument("--shuffle-seed", type=int, help="send the rows in this seeded random order")
    produce.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="a librdkafka producer setting, e.g. security.protocol=SASL_SSL (repeatable)")
    served = commands.add_parser(
        "serve", help="serve a run's model over HTTP with Ray Serve, following the run while it is live",
        description="Deploy the run's model with Ray Serve on serve.host:serve.port: POST /predict (a classifier), "
                    "POST /generate (a causal LM), POST /feedback (appended to the run's feedback log, which a run "
                    "with stream.source=feedback learns from), GET /healthz. Replicas follow the live run's published "
                    "weights (join its Ray with ray.address or RAY_ADDRESS); with no run live they serve its newest "
                    "checkpoint. Runs until interrupted.")
    served.add_argument("run_dir", help="a run directory, e.g. runs/sst2-20261128-151100")
    served.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. serve.port=8080")
    if with_bench:
        from ol_ray.bench.cli import add_bench_parser  # the benchmarks sit above the CLI's other commands

        add_bench_parser(commands)
    else:
        commands.add_parser("bench", help="run a benchmark and print its figures (ol-ray bench --help lists them)")
    return parser


def serve_command(run_dir: str, overrides: Sequence[str]) -> int:
    """`ol-ray serve`: deploy the run's model on the Ray the config names (or a local one) until interrupted."""
    import time

    import ray
    from ray import serve

    from ol_ray.driver.cluster import start_ray
    from ol_ray.serve.app import APP_NAME, start

    cfg = load_run_config(run_dir, list(overrides))
    started_ray = start_ray(cfg)
    started_serve = not serve_is_running()
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # docker stop, systemd, kill: the same clean stop as Ctrl-C
    try:
        start(cfg, run_dir)
        print(f"ol-ray: serving {run_dir} on http://{cfg.serve.host}:{cfg.serve.port} (Ctrl-C stops)")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        # this command's application goes first (its replicas stop while nothing else is shutting down); Serve
        # itself only if this command started it: other applications on the cluster keep running
        serve.delete(APP_NAME)
        if started_serve:
            serve.shutdown()
        if started_ray:
            ray.shutdown()


def stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve_is_running() -> bool:
    """Whether Ray Serve already runs on the connected Ray (its controller actor exists)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def report_command(run_dir: str) -> int:
    """`ol-ray report`: write the run's report and say where."""
    from ol_ray.observe.report import write_report

    print(f"wrote {write_report(run_dir)}")
    return 0


def produce_command(args: argparse.Namespace) -> int:
    """`ol-ray produce`: replay a data file into a Kafka topic."""
    from ol_ray.data.config import StreamConfig
    from ol_ray.data.kafka import produce

    options = dict(option.split("=", 1) for option in args.option if "=" in option)
    if len(options) != len(args.option):
        raise ConfigError("--option takes KEY=VALUE")
    stream = StreamConfig(path=args.path, text_field=args.text_field, label_field=args.label_field,
                          shuffle_seed=args.shuffle_seed, kafka_servers=args.servers)
    sent = produce(args.path, stream, args.topic, rate=args.rate, limit=args.limit, partitions=args.partitions,
                   options=options)
    print(f"delivered {sent} messages to {args.topic} at {args.servers}")
    return 0


def resume_or_start(config: Optional[str], overrides: Sequence[str]) -> Optional[str]:
    """The run directory to resume for --resume-or-start: the config's output.run_dir when a run is there, else
    None (start it). A run directory named by the time cannot be found again: that starts a new run, said once."""
    import logging
    import os

    if config is None:
        raise ConfigError("--resume-or-start needs a config file")
    cfg = load_config(config, list(overrides))
    template = cfg.output.run_dir
    if "{time}" in template:
        logging.getLogger("ol_ray").info(
            "ol_ray: --resume-or-start: output.run_dir %r changes with the time, so this starts a new run; set a "
            "fixed output.run_dir to make a resubmitted job continue its run", template)
        return None
    run_dir = os.path.abspath(template.format(name=cfg.output.name))
    return run_dir if os.path.isfile(os.path.join(run_dir, "config.yaml")) else None


def job_arguments(arguments: Sequence[str]) -> list[str]:
    """`ol-ray` arguments of the job entry point (`jobs/online_finetune.py ARGS`): `run ARGS`, with
    `--resume-or-start` unless ARGS resume explicitly, so that a job submitted again continues its run."""
    arguments = list(arguments)
    if "--resume" not in arguments and "--resume-or-start" not in arguments:
        arguments = ["--resume-or-start", *arguments]
    return ["run", *arguments]


def run_config(config: Optional[str], overrides: Sequence[str], resume: Optional[str]):
    """The config of a new run, or of the run in `resume` (its config.yaml, with its run directory)."""
    import os

    if resume is None:
        if config is not None and "=" in config and not os.path.exists(config):  # overrides of the defaults only
            return load_config(None, [config, *overrides])
        if config is None:
            raise ConfigError("give a config file, or --resume RUN_DIR")
        return load_config(config, list(overrides))
    if config is not None and "=" in config:  # argparse takes the first override for the config
        overrides = [config, *overrides]
    elif config is not None:
        raise ConfigError("--resume takes the run's own config; give overrides only")
    return load_run_config(resume, list(overrides))


def run_command(config: Optional[str], overrides: Sequence[str], resume: Optional[str] = None,
                or_start: bool = False) -> int:
    """`ol-ray run`: load and check the config (before Ray starts), run, print the summary. With `or_start`
    (--resume-or-start), resume the config's run directory when it holds a run."""
    if or_start and resume is None:
        resume = resume_or_start(config, overrides)
        if resume is not None:
            config = None  # the run's own config.yaml, with the overrides, as --resume takes it
    cfg = run_config(config, overrides, resume)
    from ol_ray.driver.pipeline import run_pipeline

    summary = run_pipeline(cfg, resume=resume is not None)
    print_summary(summary)
    return 0 if summary.accounting_ok else 1


def print_summary(summary: RunSummary) -> None:
    """The run's figures, a line each."""
    s, dev, weights, continual = summary, summary.evaluation, summary.weights, summary.continual
    print(f"run directory: {s.run_dir}")
    print(f"samples read {s.samples_read}: trained {s.samples_trained}, not selected {s.samples_not_selected}, "
          f"quarantined {s.quarantine['samples_quarantined']}, skipped as non-finite {s.samples_nonfinite} "
          f"({'accounted for' if s.accounting_ok else 'ACCOUNTING MISMATCH'})")
    if s.learner_restarts or s.restored_from or s.samples_trained_twice:
        print(f"resumed from {s.restored_from}, learner restarts {s.learner_restarts}, samples trained twice "
              f"{s.samples_trained_twice}")
    print(f"updates {s.updates}, weight versions published {weights['weight_publishes']}, pulled "
          f"{weights['weight_pulls']}, mean staleness {s.staleness_mean:.2f} updates")
    print(f"wall time {s.wall_s:.1f} s, {s.trained_samples_per_s:.1f} trained samples/s, learner utilisation "
          f"{s.learner_utilisation:.2f}")
    if dev.get("dev_accuracy") is not None:
        print(f"final dev accuracy: {dev['dev_accuracy']:.4f} (macro-F1 {dev['dev_macro_f1']:.4f})")
    if dev.get("dev_perplexity") is not None:
        print(f"final dev perplexity: {dev['dev_perplexity']:.3f} (token accuracy {dev['dev_token_accuracy']:.4f}, "
              f"mean token loss {dev['dev_loss']:.4f})")
    if continual.get("final_accuracy"):
        print("final accuracy per evaluation set: " + ", ".join(f"{name} {value:.4f}" for name, value
                                                               in continual["final_accuracy"].items()))
    if continual.get("continual_metrics"):
        metrics = continual["continual_metrics"]
        print(f"continual: average accuracy {metrics['average_accuracy']:.4f}, backward transfer "
              f"{metrics['backward_transfer']:.4f}, forgetting {[round(f, 4) for f in metrics['forgetting']]}")
    if continual.get("prequential_accuracy") is not None:
        balanced = continual.get("prequential_balanced_accuracy")  # a causal LM's (token accuracy) has none
        print(f"prequential accuracy {continual['prequential_accuracy']:.4f}"
              + (f" (balanced {balanced:.4f})" if balanced is not None else "")
              + f", samples replayed {continual.get('samples_replayed', 0)}, drifts detected "
              f"{len(continual.get('drift_events', []))}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `ol-ray` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_bench=bool(argv) and argv[0] == "bench")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from ol_ray.driver.feeding import one_line

    try:
        if args.command == "bench":
            from ol_ray.bench.cli import bench_command

            return bench_command(args)
        if args.command == "produce":
            return produce_command(args)
        if args.command == "serve":
            return serve_command(args.run_dir, args.overrides)
        if args.command == "report":
            return report_command(args.run_dir)
        return run_command(args.config, args.overrides, args.resume, args.resume_or_start)
    except ConfigError as error:
        print(f"ol-ray: bad config: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a run fails once: say why in one line, and where the traceback went
        notes = [note for note in getattr(error, "__notes__", []) if note.startswith("traceback: ")]
        print(f"ol-ray: {one_line(error)}" + (f" ({notes[-1]})" if notes else ""), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
