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
import sys
from typing import Any, Optional, Sequence

from ol_ray.config import load_config
from ol_ray.errors import ConfigError

DESCRIPTION = """\
ol_ray keeps a Hugging Face model learning from a live stream of labelled text, on Ray: Ray Data actors validate,
tokenize and score each window of the stream, a selection strategy picks the most useful samples, and one learner
actor applies weighted batched updates and publishes versioned weights back to the scorers."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `ol-ray`."""
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
    bench = commands.add_parser(
        "bench", help="run a benchmark and print its figures",
        description="Benchmarks print their figures and write CSV and markdown tables to --out; speed is reported "
                    "as a ratio against a baseline measured in the same run.")
    kinds = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    piped = bench_parser(
        kinds, "pipeline", help="the Ray pipeline against a plain single-process loop doing the same work",
        description="For each seed, a plain single-process loop (no Ray) and the Ray pipeline, both scoring pools "
                    "of --pool with the current weights and training on --batch chosen by --strategy, for --updates "
                    "updates, on the same cores: trained samples/s and their ratio, learner utilisation, staleness, "
                    "time to the first update.")
    piped.add_argument("--updates", type=int, default=200, help="updates per side (default 200)")
    piped.add_argument("--pool", type=int, default=32, help="candidates scored per update (default 32)")
    piped.add_argument("--batch", type=int, default=16, help="samples trained per update (default 16)")
    piped.add_argument("--strategy", default="entropy", help="the selection strategy (default entropy: the top "
                                                             "--batch of each pool by uncertainty)")
    piped.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    piped.add_argument("--plain-threads", type=int, default=0,
                       help="torch threads of the plain loop (default 0: as many as the pipeline has CPUs; the "
                            "pipeline's learner thread count makes both sides do the same arithmetic)")
    piped.add_argument("--out", default="runs/bench-pipeline", help="where the CSVs, markdown and runs go")
    memory = bench_parser(
        kinds, "memory", help="driver and learner memory over a long stream (a tiny model)",
        description="The configured pipeline with a tiny model over the configured stream file repeated to "
                    "--samples rows: resident memory of the driver and the learner and the checkpoint size against "
                    "samples read, and their slopes per 10,000 samples after the warm-up.")
    memory.add_argument("--samples", type=int, default=100_000, help="rows to stream (default 100000)")
    memory.add_argument("--every", type=float, default=2.0, help="seconds between memory readings (default 2)")
    memory.add_argument("--warmup", type=float, default=0.2, help="share of the stream before the slope is fitted "
                                                                  "(default 0.2)")
    memory.add_argument("--out", default="runs/bench-memory", help="where the CSVs, markdown, PNG and run go")
    scaling = bench_parser(
        kinds, "scaling", help="scoring samples/s with 1, 2, ... scorer nodes (a multi-node Ray on this machine)",
        description="Scoring throughput with each number of scorer nodes: for each, a fresh ray.cluster_utils "
                    "Cluster with a head and N nodes of --node-cpus CPUs carrying the resource `scorer`; scores "
                    "the first --samples rows of the config's stream with its model.")
    scaling.add_argument("--nodes", type=int, nargs="+", default=[1, 2], help="scorer node counts (default 1 2)")
    scaling.add_argument("--samples", type=int, default=2048, help="rows to score per count (default 2048)")
    scaling.add_argument("--node-cpus", type=int, default=1, help="CPUs of each scorer node (default 1)")
    scaling.add_argument("--out", default="runs/bench-scaling", help="where the CSV and markdown go")
    chooser = bench_parser(
        kinds, "selection", help="sample efficiency of selection strategies against random (a plain loop, no Ray)",
        description="For each strategy, pool size and seed: the same number of updates of --batch samples chosen "
                    "from pools of --pools candidates scored with the current weights; dev accuracy against "
                    "samples trained, updates and wall time, and the samples and time to reach --target, as ratios "
                    "to random.")
    chooser.add_argument("--strategies", nargs="+", default=["random", "entropy", "loss"],
                         help="strategies to compare (random is the baseline)")
    chooser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    chooser.add_argument("--updates", type=int, default=200, help="updates per run (default 200)")
    chooser.add_argument("--pools", type=int, nargs="+", default=[64], help="candidate pool sizes (default 64)")
    chooser.add_argument("--batch", type=int, default=16, help="samples per update (default 16)")
    chooser.add_argument("--eval-every", type=int, default=20, help="updates between evaluations (default 20)")
    chooser.add_argument("--target", type=float, default=0.85, help="dev accuracy to reach (default 0.85)")
    chooser.add_argument("--label-noise", type=float, default=0.0, help="share of stream labels flipped")
    chooser.add_argument("--mode", choices=["hard", "soft", "importance"], help="weighting mode (default: config)")
    chooser.add_argument("--dev-from-stream", type=int, default=0, metavar="N",
                         help="evaluate on N rows of the stream read after the training rows, not eval.path")
    chooser.add_argument("--out", default="runs/bench-selection", help="where the CSV, markdown and PNG go")
    chooser.add_argument("--from-csv", nargs="+", metavar="CSV",
                         help="run nothing: summarise and plot earlier runs' selection.csv files (seeds merge)")
    batch = bench_parser(
        kinds, "batching", help="batch-size policies on the same sample budget (a plain loop, no Ray)",
        description="For each policy and seed: the config's stream scored with the current weights in chunks, "
                    "trained until --samples samples; dev accuracy against samples and wall time, batch size over "
                    "time, updates made and peak memory, wall time as a ratio to fixed.")
    batch.add_argument("--policies", nargs="+", default=["fixed", "adaptive", "uncertainty", "resource", "periodic",
                                                         "min_of"], help="policies to compare (fixed is the baseline)")
    batch.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    batch.add_argument("--samples", type=int, default=3200, help="trained samples per run (default 3200)")
    batch.add_argument("--chunk", type=int, default=16, help="candidates scored per step of the stream (default 16)")
    batch.add_argument("--eval-every", type=int, default=400, help="trained samples between evaluations (400)")
    batch.add_argument("--out", default="runs/bench-batching", help="where the CSVs, markdown and PNG go")
    batch.add_argument("--from-dir", metavar="DIR",
                       help="run nothing: summarise and plot an earlier run's batching.csv and batching_updates.csv")
    forget = bench_parser(
        kinds, "forgetting", help="forgetting of earlier domains without replay, with replay, with replay and EWC",
        description="The config's stream.phases in order, each evaluated on the eval.sets entry of its name: for "
                    "each arm and seed the same number of updates per phase; final accuracy per domain, forgetting "
                    "of earlier ones, average accuracy, backward and forward transfer, samples trained (new and "
                    "replayed), against fine-tuning without replay.")
    forget.add_argument("--arms", nargs="+", default=["finetune", "replay", "replay_ewc"],
                        choices=["finetune", "replay", "replay_ewc"], help="arms to compare (finetune: baseline)")
    forget.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    forget.add_argument("--updates", type=int, nargs="+", default=[60, 180],
                        help="updates of each phase, or one number for all (default 60 180)")
    forget.add_argument("--ewc-lambda", type=float, default=0.0,
                        help="EWC strength of replay_ewc (default: continual.ewc_lambda, else 100)")
    forget.add_argument("--out", default="runs/bench-forgetting", help="where the CSVs, markdown and PNG go")
    timed = bench_parser(
        kinds, "time-to-accuracy", help="wall time and samples to dev-accuracy targets: fine-tuning vs the pipeline",
        description="Plain fine-tuning (random batches, no scoring, AdamW), the pipeline selecting at random and the "
                    "pipeline as configured, each seed from a cold start: wall time and trained samples until the "
                    "dev accuracy first reaches each target.")
    timed.add_argument("--targets", type=float, nargs="+", default=[0.80, 0.83, 0.85, 0.87], help="dev accuracies")
    timed.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    timed.add_argument("--arms", nargs="+", default=["finetune", "pipeline_random", "pipeline"],
                       choices=["finetune", "pipeline_random", "pipeline"], help="arms to run")
    timed.add_argument("--samples", type=int, default=12_800,
                       help="trained samples of finetune and pipeline_random (the pipeline keeps its config's budget)")
    timed.add_argument("--eval-every", type=int, default=800, help="evaluate every this many trained samples")
    timed.add_argument("--finetune-batch", type=int, default=32, help="fine-tuning's batch size (default 32)")
    timed.add_argument("--finetune-lr", type=float, default=5e-5, help="fine-tuning's AdamW learning rate")
    timed.add_argument("--out", default="runs/bench-time-to-accuracy", help="where the CSVs, markdown, PNG and runs go")
    chaos = bench_parser(
        kinds, "chaos", help="one run with every part killed at random points, against the same run without faults",
        description="Run the job twice as real drivers on a local Ray: without faults, and with the learner killed "
                    "twice and a scorer, the weight store, the monitor, the quarantine sink and the driver (then "
                    "resumed) killed once each, at seeded random points: how each recovered, the ledger, the "
                    "samples trained twice and the final dev accuracy of both.")
    chaos.add_argument("--seed", type=int, default=0, help="the fault schedule's seed (default 0)")
    chaos.add_argument("--out", default="runs/bench-chaos", help="where the tables and runs go")
    return parser


def bench_parser(kinds: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A benchmark's subcommand, with the config and its overrides as its first arguments."""
    parser = kinds.add_parser(name, **kwargs)
    parser.add_argument("config", help="a YAML config, e.g. configs/sst2.yaml")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="override config values")
    return parser


def bench_command(args: argparse.Namespace) -> int:
    """`ol-ray bench ...`: run the named benchmark."""
    cfg = load_config(args.config, list(args.overrides))
    if cfg.model.kind != "sequence_classification":  # their plain loops, tables and targets speak of accuracy
        raise ConfigError(f"ol-ray bench measures sequence classifiers; model.kind={cfg.model.kind} runs with "
                          f"ol-ray run and is drawn by ol-ray report")
    if args.bench == "pipeline":
        from ol_ray.bench.pipeline import pipeline

        pipeline(cfg, updates=args.updates, pool=args.pool, batch=args.batch, strategy=args.strategy,
                 seeds=args.seeds, out_dir=args.out, plain_threads=args.plain_threads)
        return 0
    if args.bench == "memory":
        from ol_ray.bench.memory import memory

        memory(cfg, samples=args.samples, every_s=args.every, warmup=args.warmup, out_dir=args.out)
        return 0
    if args.bench == "selection" and args.from_csv:
        from ol_ray.bench.selection import curves_from_csv, report

        report(curves_from_csv(args.from_csv), args.target, args.out, f"from {', '.join(args.from_csv)}")
        return 0
    if args.bench == "selection":
        from ol_ray.bench.selection import selection

        selection(cfg, args.strategies, seeds=args.seeds, updates=args.updates, pools=args.pools,
                  batch_size=args.batch, eval_every=args.eval_every, target=args.target,
                  label_noise=args.label_noise, out_dir=args.out, mode=args.mode,
                  dev_from_stream=args.dev_from_stream)
        return 0
    if args.bench == "batching" and args.from_dir:
        from ol_ray.bench.batching import report, runs_from_csv

        report(runs_from_csv(args.from_dir), args.out, f"from {args.from_dir}")
        return 0
    if args.bench == "batching":
        from ol_ray.bench.batching import batching

        batching(cfg, args.policies, seeds=args.seeds, samples=args.samples, chunk=args.chunk,
                 eval_every=args.eval_every, out_dir=args.out)
        return 0
    if args.bench == "forgetting":
        from ol_ray.bench.forgetting import forgetting

        forgetting(cfg, args.arms, seeds=args.seeds, updates=args.updates, ewc_lambda=args.ewc_lambda,
                   out_dir=args.out)
        return 0
    if args.bench == "time-to-accuracy":
        from ol_ray.bench.time_to_accuracy import time_to_accuracy

        time_to_accuracy(cfg, args.targets, seeds=args.seeds, arms=args.arms, samples=args.samples,
                         eval_every=args.eval_every, finetune_batch=args.finetune_batch,
                         finetune_lr=args.finetune_lr, out_dir=args.out)
        return 0
    if args.bench == "chaos":
        from ol_ray.bench.chaos import chaos

        chaos(cfg, args.config, args.overrides, seed=args.seed, out_dir=args.out)
        return 0
    from ol_ray.bench.scaling import scaling

    scaling(cfg, nodes=args.nodes, samples=args.samples, out_dir=args.out, node_cpus=args.node_cpus)
    return 0


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


def load_run_config(config: Optional[str], overrides: Sequence[str], resume: Optional[str]):
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
    saved = os.path.join(resume, "config.yaml")
    if not os.path.isfile(saved):
        raise ConfigError(f"--resume {resume}: no config.yaml there, so it is not an ol_ray run directory")
    return load_config(saved, [*overrides, f"output.run_dir={os.path.abspath(resume)}"])


def run_command(config: Optional[str], overrides: Sequence[str], resume: Optional[str] = None,
                or_start: bool = False) -> int:
    """`ol-ray run`: load and check the config (before Ray starts), run, print the summary. With `or_start`
    (--resume-or-start), resume the config's run directory when it holds a run."""
    if or_start and resume is None:
        resume = resume_or_start(config, overrides)
        if resume is not None:
            config = None  # the run's own config.yaml, with the overrides, as --resume takes it
    cfg = load_run_config(config, overrides, resume)
    from ol_ray.driver.pipeline import run_pipeline

    summary = run_pipeline(cfg, resume=resume is not None)
    print_summary(summary)
    return 0 if summary["accounting_ok"] else 1


def print_summary(summary: dict) -> None:
    """The run's figures, a line each."""
    accuracy = summary["dev_accuracy"]
    print(f"run directory: {summary['run_dir']}")
    print(f"samples read {summary['samples_read']}: trained {summary['samples_trained']}, not selected "
          f"{summary['samples_not_selected']}, quarantined {summary['samples_quarantined']}, skipped as non-finite "
          f"{summary['samples_nonfinite']} ({'accounted for' if summary['accounting_ok'] else 'ACCOUNTING MISMATCH'})")
    if summary["learner_restarts"] or summary["restored_from"] or summary["samples_trained_twice"]:
        print(f"resumed from {summary['restored_from']}, learner restarts {summary['learner_restarts']}, "
              f"samples trained twice {summary['samples_trained_twice']}")
    print(f"updates {summary['updates']}, weight versions published {summary['weight_publishes']}, pulled "
          f"{summary['weight_pulls']}, mean staleness {summary['staleness_mean']:.2f} updates")
    print(f"wall time {summary['wall_s']:.1f} s, {summary['trained_samples_per_s']:.1f} trained samples/s, "
          f"learner utilisation {summary['learner_utilisation']:.2f}")
    if accuracy is not None:
        print(f"final dev accuracy: {accuracy:.4f} (macro-F1 {summary['dev_macro_f1']:.4f})")
    if summary.get("dev_perplexity") is not None:
        print(f"final dev perplexity: {summary['dev_perplexity']:.3f} (token accuracy "
              f"{summary['dev_token_accuracy']:.4f}, mean token loss {summary['dev_loss']:.4f})")
    if summary.get("final_accuracy"):
        print("final accuracy per evaluation set: " + ", ".join(f"{name} {value:.4f}" for name, value
                                                               in summary["final_accuracy"].items()))
    if summary.get("continual_metrics"):
        metrics = summary["continual_metrics"]
        print(f"continual: average accuracy {metrics['average_accuracy']:.4f}, backward transfer "
              f"{metrics['backward_transfer']:.4f}, forgetting {[round(f, 4) for f in metrics['forgetting']]}")
    if summary.get("prequential_accuracy") is not None:
        balanced = summary.get("prequential_balanced_accuracy")  # a causal LM's (token accuracy) has none
        print(f"prequential accuracy {summary['prequential_accuracy']:.4f}"
              + (f" (balanced {balanced:.4f})" if balanced is not None else "")
              + f", samples replayed {summary.get('samples_replayed', 0)}, drifts detected "
              f"{len(summary.get('drift_events', []))}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `ol-ray` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from ol_ray.driver.feeding import one_line

    try:
        if args.command == "bench":
            return bench_command(args)
        if args.command == "produce":
            return produce_command(args)
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
