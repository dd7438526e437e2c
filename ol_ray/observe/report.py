"""`ol-ray report RUN_DIR`: a markdown report of one run, with PNG plots, written next to the run.

    ol-ray report runs/sst2-20261128-151100      # writes report.md and report/*.png into the run directory

Everything comes from the run's own files: `metrics.jsonl` (updates, evaluations, checkpoints and the resource
monitor's readings, which the driver writes every `output.monitor_every_s`) and `summary.json` (absent while a run is
going or after a crash: the report then says so and uses what metrics.jsonl has).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

import numpy as np

from ol_ray.jsonl import read_jsonl
from ol_ray.observe.evaluation import headline
from ol_ray.observe.plots import Panel, markdown_table, plot_panels


class ReportError(RuntimeError):
    """A directory that holds no ol_ray run."""


def read_run(run_dir: str) -> tuple[list[dict[str, Any]], Optional[dict[str, Any]]]:
    """The records of metrics.jsonl (a torn last line is skipped; another bad line is an error) and summary.json
    (None when absent)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise ReportError(f"{run_dir} has no metrics.jsonl, so it is not an ol_ray run directory")
    records = read_jsonl(path)
    summary = None
    if os.path.isfile(os.path.join(run_dir, "summary.json")):
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as handle:
            summary = json.load(handle)
    return records, summary


def smoothed(values: list[float], span: int = 20) -> np.ndarray:
    """An exponential moving average over about `span` points (what a noisy per-update series trends to)."""
    decay, average, out = 1 - 2 / (span + 1), None, []
    for value in values:
        average = value if average is None else decay * average + (1 - decay) * value
        out.append(average)
    return np.asarray(out)


def column(records: list[dict[str, Any]], key: str) -> list[Any]:
    return [record.get(key) for record in records]


def label_shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [count / total for count in counts] if total else [0.0] * len(counts)


def learning_section(evals: list[dict[str, Any]], since: Callable, figure: Callable) -> None:
    """Dev figure against samples trained, updates and wall time."""
    if evals and headline(evals[-1])[1] is not None:
        key, _ = headline(evals[-1])
        name = key.removeprefix("dev_")
        figure_values = column(evals, key)
        axis = f"dev {name}"
        figure(name, [Panel("samples trained", axis).add("dev", column(evals, "samples_trained"),
                                                               figure_values),
                            Panel("updates", axis).add("dev", column(evals, "update"), figure_values),
                            Panel("wall time (s)", axis).add("dev", since(evals), figure_values)],
               f"## Learning\n\nDev {name} at each evaluation, against samples trained, updates and wall time.")


def training_sections(updates: list[dict[str, Any]], evals: list[dict[str, Any]], since: Callable,
                      figure: Callable) -> None:
    """Loss and batch size; speed and staleness."""
    if updates:
        steps = column(updates, "update")
        loss = Panel("updates", "training loss (batch mean)").add("per update", steps,
                                                                  column(updates, "sample_loss_mean"))
        loss.add("smoothed", steps, smoothed(column(updates, "sample_loss_mean")))
        dev_loss = Panel("samples trained", "dev loss")
        if evals:
            dev_loss.add("dev", column(evals, "samples_trained"), column(evals, "dev_loss"))
        batch = Panel("updates", "batch size", step=True).add("batch size", steps, column(updates, "batch_size"))
        figure("training", [loss, dev_loss, batch],
               "## Training\n\nThe mean per-sample loss of each update's batch, the dev loss, and the batch size the "
               "batch policy chose.")
        trained = np.asarray(column(updates, "samples_trained"), dtype=float)
        figure("speed", [
            Panel("wall time (s)", "trained samples / s").add("per update step", since(updates),
                                                              column(updates, "samples_per_s"))
            .add("whole run so far", since(updates), trained / np.maximum(since(updates), 1e-9)),
            Panel("updates", "weight staleness (updates)").add("mean of the batch", steps,
                                                               column(updates, "staleness_mean"))
            .add("max of the batch", steps, column(updates, "staleness_max"))],
            "## Speed and staleness\n\nTrained samples per second of each update step and of the whole run so far "
            "(waiting included); how many updates old the weights were that scored each trained sample.")


def memory_section(readings: list[dict[str, Any]], since: Callable, figure: Callable) -> None:
    """Resident and GPU memory from the monitor's readings."""
    if readings:
        memory = Panel("wall time (s)", "resident memory (MiB)")
        for key, label in (("driver_rss_mb", "driver"), ("learner_rss_mb", "learner"), ("monitor_rss_mb", "monitor")):
            if any(r.get(key) for r in readings):
                memory.add(label, since(readings), [r.get(key) or np.nan for r in readings])
        gpu = Panel("wall time (s)", "learner GPU memory (MiB)")
        for key in ("learner_gpu_allocated_mb", "learner_gpu_reserved_mb", "learner_gpu_peak_mb"):
            if any(r.get(key) for r in readings):
                gpu.add(key.removeprefix("learner_gpu_").removesuffix("_mb"), since(readings),
                        [r.get(key) or np.nan for r in readings])
        figure("memory", [memory, gpu], "## Memory\n\nResident memory of the driver, the learner and the monitor "
                                        "(and the learner's GPU memory, on a GPU), from the resource monitor.")


def labels_section(summary: Optional[dict[str, Any]], figure: Callable) -> None:
    """The label mix selected against the stream's."""
    received = (summary or {}).get("labels_received") or []
    if received:
        labels = list(range(len(received)))
        figure("labels", [Panel("label", "share of samples", kind="bar")
                          .add("stream (received)", labels, label_shares(received))
                          .add("selected (trained)", labels, label_shares(summary["labels_trained"]))],
               "## Labels\n\nThe label mix of the samples selected for training against the stream's.")


def write_report(run_dir: str) -> str:
    """Write `report.md` and `report/*.png` into `run_dir`; returns the markdown's path."""
    records, summary = read_run(run_dir)
    updates = [r for r in records if r["kind"] == "update"]
    evals = [r for r in records if r["kind"] == "eval"]
    readings = [r for r in records if r["kind"] == "monitor"]
    if not updates and not evals:
        raise ReportError(f"{run_dir}/metrics.jsonl has no update or evaluation yet: nothing to report")
    origin = min(r["time"] - r.get("eval_s", 0.0) for r in records if "time" in r)
    since = lambda rows: [r["time"] - origin for r in rows]  # noqa: E731
    folder = os.path.join(run_dir, "report")
    os.makedirs(folder, exist_ok=True)
    sections: list[str] = []

    def figure(name: str, panels: list[Panel], text: str) -> None:
        panels = [panel for panel in panels if panel.lines]
        if not panels:
            return
        plot_panels(panels, os.path.join(folder, f"{name}.png"))
        sections.append(f"{text}\n\n![{name}](report/{name}.png)\n")

    learning_section(evals, since, figure)
    training_sections(updates, evals, since, figure)
    memory_section(readings, since, figure)
    continual_section(records, summary, figure)
    labels_section(summary, figure)
    head = [f"# Run report: {os.path.basename(os.path.abspath(run_dir))}\n", overview(records, summary)]
    path = os.path.join(run_dir, "report.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(head + sections))
    return path


def set_figure(record: dict[str, Any], name: str, key: str) -> float:
    figures = record["sets"][name]
    value = figures.get(key, figures.get("token_accuracy") if key == "accuracy" else None)
    return np.nan if value is None else value


def continual_section(records: list[dict[str, Any]], summary: Optional[dict[str, Any]], figure: Any) -> None:
    """Accuracy per evaluation set over the run (the accuracy matrix), prequential accuracy, phases and drifts."""
    evals = [r for r in records if r["kind"] == "eval" and r.get("sets")]
    updates = [r for r in records if r["kind"] == "update" and r.get("prequential_accuracy") is not None]
    if not evals and not updates:
        return
    names = list(evals[0]["sets"]) if evals else []
    accuracy, balanced = Panel("samples trained", "accuracy per evaluation set"), Panel("samples trained",
                                                                                       "balanced accuracy per set")
    for name in names:
        trained = column(evals, "samples_trained")
        accuracy.add(name, trained, [set_figure(r, name, "accuracy") for r in evals])
        if any("balanced_accuracy" in r["sets"][name] for r in evals):
            balanced.add(name, trained, [set_figure(r, name, "balanced_accuracy") for r in evals])
    prequential = Panel("updates", "prequential (test-then-train) accuracy")
    if updates:
        steps = column(updates, "update")
        prequential.add("whole run", steps, column(updates, "prequential_accuracy"))
        prequential.add("recent (fading)", steps, column(updates, "prequential_accuracy_recent"))
    phases = [r for r in records if r["kind"] == "phase"]
    drifts = [r for r in records if r["kind"] == "drift"]
    text = ["## Continual learning\n\nAccuracy on each evaluation set (one per domain) as the run trained, and the "
            "stream's own accuracy, each sample predicted before it was trained on."]
    if phases:
        text.append("Phases began at update " + ", ".join(f"{r['update']} ({r['phase']})" for r in phases) + ".")
    if drifts:
        text.append("Drift detected at update " + ", ".join(str(r["update"]) for r in drifts) + ".")
    body = " ".join(text)
    metrics = (summary or {}).get("continual_metrics")
    if metrics:  # the phase x set matrix's metrics
        body += "\n\n" + markdown_table([{"metric": key, "value": value} for key, value in metrics.items()
                                          if value is not None])
    figure("continual", [accuracy, balanced, prequential], body)


def overview(records: list[dict[str, Any]], summary: Optional[dict[str, Any]]) -> str:
    """The run's figures as a table: from summary.json, else (a run going or crashed) from its last records."""
    if summary is None:
        updates = [r for r in records if r["kind"] == "update"]
        evals = [r for r in records if r["kind"] == "eval"]
        last = {"updates": updates[-1]["update"] if updates else 0,
                "samples_trained": updates[-1]["samples_trained"] if updates else 0,
                **(dict([headline(evals[-1])]) if evals else {"dev_accuracy": None})}
        return ("No summary.json: the run is still going or did not finish. Figures from its last records.\n\n" +
                markdown_table([last]) + "\n")
    keys = ("samples_read", "samples_trained", "samples_not_selected", "samples_quarantined", "updates",
            "dev_accuracy", "dev_macro_f1", "dev_perplexity", "dev_token_accuracy", "wall_s", "trained_samples_per_s",
            "learner_utilisation", "first_update_s", "staleness_mean", "staleness_max", "learner_restarts",
            "learner_device")
    rows = [{"figure": key, "value": summary[key]} for key in keys if summary.get(key) is not None]
    return markdown_table(rows) + "\n"
