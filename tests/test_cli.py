import os
import subprocess
import sys

import pytest

from ol_ray.cli import main
from data_files import write_sst2_tsv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "stream" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "section.key=value" in capsys.readouterr().out


def test_bad_config_fails_before_ray_starts(capsys, tmp_path):
    import ray

    config = tmp_path / "c.yaml"
    config.write_text("stream:\n  path: x.tsv\nlearner:\n  lr: -1\n")
    assert main(["run", str(config)]) == 2
    assert "learner.lr" in capsys.readouterr().err
    assert main(["run", str(config), "learner.lr=1e-4", "selection.strategy=oracle"]) == 2
    assert "selection.strategy" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_job_entry_point_runs_a_tiny_pipeline(tiny_model_dir, sst2_rows, tmp_path):
    data = tmp_path / "train.tsv"
    write_sst2_tsv(data, sst2_rows[:96])
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "jobs", "online_finetune.py"), os.path.join(ROOT, "configs", "sst2.yaml"),
         f"stream.path={data}", f"model.name_or_path={tiny_model_dir}", "eval.path=", "stream.window_size=96",
         "stream.max_samples=0", "learner.torch_threads=1", f"output.run_dir={tmp_path / 'run'}",
         "output.progress=false", "ray.include_dashboard=false", "ray.object_store_mb=200"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "samples read 96: trained 32" in result.stdout  # 16 of the first pool of 64, 16 of the 32 left
    assert os.path.isfile(tmp_path / "run" / "summary.json")


def test_job_entry_point_reports_failure_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "online_finetune.py"),
                             os.path.join(ROOT, "configs", "sst2.yaml"), f"stream.path={tmp_path / 'none.tsv'}",
                             "stream.hub_dataset="],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 1
    assert "does not exist" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("override, message", [
    ("stream.path={tmp}/none.tsv", "does not exist"),
    ("model.name_or_path={tmp}/no-model", "model.name_or_path"),
])
def test_missing_inputs_are_one_clear_line(capsys, tmp_path, override, message):
    assert main(["run", os.path.join(ROOT, "configs", "sst2.yaml"), "stream.hub_dataset=",
                 override.format(tmp=tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_resume_needs_a_run_directory(capsys, tmp_path):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not an ol_ray run directory" in capsys.readouterr().err


def test_benchmarks_refuse_a_causal_lm_in_one_line(capsys):
    assert main(["bench", "pipeline", os.path.join(ROOT, "configs", "lm_lora.yaml")]) == 2
    assert "sequence classifiers" in capsys.readouterr().err
