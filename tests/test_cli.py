import os
import subprocess
import sys

import pytest

from ol_ray.cli import main

from conftest import ROOT
from data_files import write_sst2_tsv


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

    ray.shutdown()  # the suite's Ray, if an earlier module started it: this test must see that none starts
    config = tmp_path / "c.yaml"
    config.write_text("stream:\n  path: x.tsv\nlearner:\n  lr: -1\n")
    assert main(["run", str(config)]) == 2
    assert "learner.lr" in capsys.readouterr().err
    assert main(["run", str(config), "learner.lr=1e-4", "selection.strategy=oracle"]) == 2
    assert "selection.strategy" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_job_entry_point_reports_failure_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "online_finetune.py"),
                             os.path.join(ROOT, "configs", "sst2.yaml"), "stream.path=no/such/train.tsv"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    # a relative path that is not there (a `ray job submit --working-dir` copy): named, with where it resolved and
    # how to fix it; never a silent fall back to the hub
    assert f"{tmp_path}/no/such/train.tsv does not exist" in result.stderr
    assert f"resolve against the working directory, {tmp_path}" in result.stderr
    assert "stream.hub_fallback=true" in result.stderr and "Hub" not in result.stderr


def test_a_failure_inside_the_run_is_one_line_and_a_traceback_in_the_run_directory(capsys, tiny_model_dir,
                                                                                   sst2_rows, tmp_path):
    import ray

    ray.shutdown()  # the suite's Ray, if any: a run that starts its own Ray refuses resources it lacks
    data = tmp_path / "train.tsv"
    write_sst2_tsv(data, sst2_rows[:32])
    code = main(["run", os.path.join(ROOT, "configs", "sst2.yaml"), f"stream.path={data}", "eval.path=",
                 f"model.name_or_path={tiny_model_dir}", "learner.num_gpus=1", f"output.run_dir={tmp_path / 'run'}",
                 "output.progress=false", "ray.include_dashboard=false", "ray.object_store_mb=200"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ol-ray:")]  # not Ray's log
    assert code == 1 and len(err) == 1
    assert "ask for 1 GPU" in err[0] and err[0].endswith(f"(traceback: {tmp_path / 'run' / 'error.log'})")
    logged = (tmp_path / "run" / "error.log").read_text()
    assert "Traceback (most recent call last)" in logged and "check_resources" in logged


@pytest.mark.parametrize("override, message", [
    ("stream.path={tmp}/none.tsv", "does not exist"),
    ("model.name_or_path={tmp}/no-model", "model.name_or_path"),
])
def test_missing_inputs_are_one_clear_line(capsys, sst2_rows, tmp_path, override, message):
    stream = write_sst2_tsv(tmp_path / "train.tsv", sst2_rows[:8])  # only the input under test is missing
    assert main(["run", os.path.join(ROOT, "configs", "sst2.yaml"), f"stream.path={stream}", "eval.path=",
                 override.format(tmp=tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_resume_needs_a_run_directory(capsys, tmp_path):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not an ol_ray run directory" in capsys.readouterr().err


def test_resume_or_start_finds_the_run_of_a_fixed_run_directory(tmp_path):
    from ol_ray.cli import resume_or_start

    config = os.path.join(ROOT, "configs", "sst2.yaml")
    fixed = f"output.run_dir={tmp_path / 'run'}"
    assert resume_or_start(config, [fixed]) is None  # nothing there yet: start
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("stream:\n  path: x\n")
    assert resume_or_start(config, [fixed]) == str(tmp_path / "run")  # a run there: continue it
    assert resume_or_start(config, []) is None  # runs/{name}-{time}: every submission is a new run


def test_the_job_entry_point_resumes_or_starts_unless_told_to_resume():
    from ol_ray.cli import job_arguments

    assert job_arguments(["configs/sst2.yaml", "learner.lr=1e-4"]) == [
        "run", "--resume-or-start", "configs/sst2.yaml", "learner.lr=1e-4"]  # a job submitted again continues
    assert job_arguments(["--resume", "runs/x"]) == ["run", "--resume", "runs/x"]
    assert job_arguments(["--resume-or-start", "c.yaml"]) == ["run", "--resume-or-start", "c.yaml"]


def test_benchmarks_refuse_a_causal_lm_in_one_line(capsys):
    assert main(["bench", "pipeline", os.path.join(ROOT, "configs", "lm_lora.yaml")]) == 2
    assert "sequence classifiers" in capsys.readouterr().err
