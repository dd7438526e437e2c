"""Which figures of each metrics.jsonl record the trackers log (the tracked pipeline run itself is read back in
tests/driver/test_pipeline.py)."""

import math

from ol_ray.observe.tracking import flat_params, is_folder, scalars


def test_update_eval_and_monitor_records_become_scalars():
    update = {"kind": "update", "update": 3, "loss": 0.5, "batch_size": 16, "staleness_mean": 1.5,
              "selected_labels": [12, 4], "prequential_accuracy": None, "noise_scale": math.inf, "phase": "a"}
    assert dict(scalars(update)) == {"train/loss": 0.5, "train/batch_size": 16.0, "train/staleness_mean": 1.5,
                                     "selection/label_0_share": 0.75, "selection/label_1_share": 0.25}
    evaluation = {"kind": "eval", "update": 3, "dev_accuracy": 0.8, "dev_loss": 0.4, "samples_trained": 48,
                  "sets": {"tweets": {"accuracy": 0.7, "balanced_accuracy": 0.6}}}
    assert dict(scalars(evaluation)) == {"dev/accuracy": 0.8, "dev/loss": 0.4, "eval/tweets/accuracy": 0.7,
                                         "eval/tweets/balanced_accuracy": 0.6}
    reading = {"kind": "monitor", "update": 3, "time": 1.0, "driver_rss_mb": 300.0, "scorer_nodes": ["a"],
               "learner_gpu_allocated_mb": None}
    assert dict(scalars(reading)) == {"monitor/driver_rss_mb": 300.0}
    assert dict(scalars({"kind": "checkpoint", "update": 3, "path": "x", "checkpoint_s": 0.2})) == {}


def test_params_are_the_config_by_dotted_key_and_folders_are_told_from_servers():
    params = flat_params({"selection": {"strategy": "entropy", "mix": {}}, "stream": {"phases": []}})
    assert params == {"selection.strategy": "entropy", "selection.mix": {}, "stream.phases": []}
    assert is_folder("mlruns") and is_folder("/tmp/mlruns")
    assert not is_folder("http://127.0.0.1:5000") and not is_folder("sqlite:///mlflow.db")
