"""The public API (`ol_ray/__init__.py`): its example runs as written, with a plug-in strategy the learner actor
gets from the driver's registry, and a finished run resumes through `ol_ray.resume`."""

import inspect
import json
import os
import textwrap

import ol_ray


def example_source() -> str:
    doc = inspect.getdoc(ol_ray)
    start = doc.index("executes it):") + len("executes it):")
    return textwrap.dedent(doc[start:doc.index("(MODEL is")])


def test_every_public_name_exists():
    assert all(hasattr(ol_ray, name) for name in ol_ray.__all__)


def test_the_example_runs_with_a_plug_in_strategy_and_resumes(ray_local, tiny_model_dir, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    namespace = {"__name__": "ol_ray_example", "MODEL": tiny_model_dir, "RUN_DIR": run_dir}
    try:
        exec(compile(example_source(), "ol_ray example", "exec"), namespace)
        assert "updates," in capsys.readouterr().out
        summary = namespace["summary"]
        assert isinstance(summary, ol_ray.RunSummary)
        assert summary.updates == 6 and summary.samples_trained == 48  # 96 rows: pools of 16, 8 of each trained
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as handle:
            assert json.load(handle)["samples_trained"] == summary.samples_trained
        # the learner (another process) built the plug-in from the factory the driver sent it: it read no score
        assert summary.config["selection"]["strategy"] == "shortest_first" and not summary.scored
        again = ol_ray.resume(run_dir, ["output.progress=false"], rows=namespace["rows"])
        assert again.restored_from and again.accounting_ok and again.samples_read == 96
        # a finished run resumed (a job submitted again) trains nothing twice
        assert again.samples_trained == summary.samples_trained and again.samples_trained_twice == 0
    finally:
        ol_ray.STRATEGIES._factories.pop("shortest_first", None)  # the registry is the process's: leave it as found
