"""The `ol-ray` command line: run a configured pipeline.

    ol-ray run configs/sst2.yaml learner.lr=3e-5 stream.max_samples=2000
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ol_ray.config import ConfigError, load_config

DESCRIPTION = """\
ol_ray keeps a Hugging Face model learning from a live stream of labelled text, on Ray: Ray Data actors validate,
tokenize and score each window of the stream, a selection strategy picks the most useful samples, and one learner
actor applies weighted batched updates and publishes versioned weights back to the scorers."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ol-ray", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run a pipeline from a YAML config",
        description="Run the pipeline a YAML config describes, to the end of its stream or sample budget. Writes "
                    "metrics.jsonl, quarantine.jsonl, monitor.jsonl, checkpoints/ and summary.json to the run "
                    "directory and prints the final dev-set figures.")
    run.add_argument("config", help="a YAML config, e.g. configs/sst2.yaml")
    run.add_argument("overrides", nargs="*", metavar="section.key=value",
                     help="override config values, e.g. learner.lr=3e-5 stream.max_samples=2000")
    return parser


def run_command(config: str, overrides: Sequence[str]) -> int:
    cfg = load_config(config, list(overrides))  # bad configs fail here, before Ray starts
    from ol_ray.pipeline import run_pipeline

    summary = run_pipeline(cfg)
    print_summary(summary)
    return 0 if summary["accounting_ok"] else 1


def print_summary(summary: dict) -> None:
    accuracy = summary["dev_accuracy"]
    print(f"run directory: {summary['run_dir']}")
    print(f"samples read {summary['samples_read']}: trained {summary['samples_trained']}, not selected "
          f"{summary['samples_not_selected']}, quarantined {summary['samples_quarantined']} "
          f"({'accounted for' if summary['accounting_ok'] else 'ACCOUNTING MISMATCH'})")
    print(f"updates {summary['updates']}, weight versions published {summary['weight_publishes']}, pulled "
          f"{summary['weight_pulls']}, mean staleness {summary['staleness_mean']:.2f} updates")
    print(f"wall time {summary['wall_s']:.1f} s, {summary['trained_samples_per_s']:.1f} trained samples/s, "
          f"learner utilisation {summary['learner_utilisation']:.2f}")
    if accuracy is not None:
        print(f"final dev accuracy: {accuracy:.4f} (macro-F1 {summary['dev_macro_f1']:.4f})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from ol_ray.models import ModelError
    from ol_ray.pipeline import PipelineError
    from ol_ray.stream import SourceError

    try:
        return run_command(args.config, args.overrides)
    except ConfigError as error:
        print(f"ol-ray: bad config: {error}", file=sys.stderr)
        return 2
    except (SourceError, ModelError, PipelineError) as error:
        print(f"ol-ray: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
