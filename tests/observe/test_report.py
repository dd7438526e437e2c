"""`ol-ray report`: a run's markdown report and plots, from its metrics.jsonl and summary.json."""

import json

import pytest

from ol_ray.cli import main
from ol_ray.observe.report import ReportError, label_shares, smoothed, write_report


def write_run(folder, summary=True, torn=False):
    start = 1_800_000_000.0
    records = [{"kind": "eval", "update": 0, "samples_trained": 0, "dev_accuracy": 0.5, "dev_loss": 0.7,
                "eval_s": 2.0, "time": start + 2.0}]
    for update in range(1, 11):
        records.append({"kind": "update", "update": update, "samples_trained": 4 * update, "batch_size": 4,
                        "sample_loss_mean": 0.7 - 0.02 * update, "samples_per_s": 40.0, "staleness_mean": 1.0,
                        "staleness_max": 2, "selected_labels": [1, 3], "time": start + 2.0 + update})
        records.append({"kind": "monitor", "update": update, "driver_rss_mb": 300.0, "learner_rss_mb": 500.0 + update,
                        "monitor_rss_mb": 100.0, "time": start + 2.5 + update})
    records.append({"kind": "eval", "update": 10, "samples_trained": 40, "dev_accuracy": 0.75, "dev_loss": 0.5,
                    "eval_s": 1.0, "time": start + 14.0})
    lines = [json.dumps(r) + "\n" for r in records] + (['{"kind": "upd'] if torn else [])
    (folder / "metrics.jsonl").write_text("".join(lines))
    if summary:
        (folder / "summary.json").write_text(json.dumps({
            "samples_read": 80, "samples_trained": 40, "updates": 10, "dev_accuracy": 0.75, "wall_s": 14.0,
            "learner_utilisation": 0.8, "labels_received": [40, 40], "labels_trained": [10, 30]}))
    return folder


def test_report_has_every_section_and_plot(tmp_path):
    path = write_report(str(write_run(tmp_path)))
    text = open(path, encoding="utf-8").read()
    for name in ("accuracy", "training", "speed", "memory", "labels"):
        assert f"![{name}](report/{name}.png)" in text
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 5_000
    assert "| dev_accuracy | 0.75 |" in text and "| learner_utilisation | 0.8 |" in text


def test_a_run_without_summary_is_reported_from_its_last_records(tmp_path):
    text = open(write_report(str(write_run(tmp_path, summary=False, torn=True))), encoding="utf-8").read()
    assert "No summary.json" in text and "| 10 | 40 | 0.75 |" in text
    assert "labels.png" not in text  # the stream's label mix is in the summary only


def test_a_folder_without_a_run_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ReportError, match="no metrics.jsonl"):
        write_report(str(tmp_path))
    assert main(["report", str(tmp_path)]) == 1
    assert "not an ol_ray run directory" in capsys.readouterr().err


def test_smoothing_and_label_shares():
    assert list(smoothed([1.0, 1.0, 4.0], span=3)) == pytest.approx([1.0, 1.0, 2.5])
    assert label_shares([1, 3]) == [0.25, 0.75] and label_shares([0, 0]) == [0.0, 0.0]
