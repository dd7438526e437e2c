"""`ol-ray bench NAME CONFIG [overrides] [options]`: one subcommand per benchmark module, each of which declares its
options (`add_arguments`), help texts and `main(cfg, args)`."""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any

from ol_ray.bench import (batching, chaos, forgetting, learner_scaling, memory, pipeline, scaling, selection, serving,
                          time_to_accuracy)
from ol_ray.config import load_config
from ol_ray.errors import ConfigError

BENCHMARKS: dict[str, ModuleType] = {
    "pipeline": pipeline, "memory": memory, "scaling": scaling, "selection": selection, "batching": batching,
    "forgetting": forgetting, "time-to-accuracy": time_to_accuracy, "chaos": chaos,
    "serve": serving, "learner-scaling": learner_scaling,
}


def add_bench_parser(commands: Any) -> None:
    """The `bench` command and a subcommand per benchmark, the config and its overrides first."""
    bench = commands.add_parser(
        "bench", help="run a benchmark and print its figures",
        description="Benchmarks print their figures and write CSV and markdown tables to --out; speed is reported "
                    "as a ratio against a baseline measured in the same run.")
    kinds = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, module in BENCHMARKS.items():
        parser = kinds.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        parser.add_argument("config", help="a YAML config, e.g. configs/sst2.yaml")
        parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="override config values")
        module.add_arguments(parser)


def bench_command(args: argparse.Namespace) -> int:
    """`ol-ray bench ...`: run the named benchmark."""
    cfg = load_config(args.config, list(args.overrides))
    if cfg.model.kind != "sequence_classification":  # their plain loops, tables and targets speak of accuracy
        raise ConfigError(f"ol-ray bench measures sequence classifiers; model.kind={cfg.model.kind} runs with "
                          f"ol-ray run and is drawn by ol-ray report")
    return BENCHMARKS[args.bench].main(cfg, args)
