import glob
import os

import pytest

from ol_ray.config import Config, ConfigError, apply_override, load_config

from conftest import ROOT


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_load_and_are_frozen():
    cfg = load_config(None, ["stream.path=data.tsv"])
    assert isinstance(cfg, Config)
    assert cfg.selection.strategy == "random" and cfg.batching.policy == "fixed"
    with pytest.raises(Exception):
        cfg.learner.lr = 1.0


def test_yaml_then_dotted_overrides(tmp_path):
    path = write(tmp_path, "stream:\n  path: a.tsv\nlearner:\n  lr: 5.0e-5\n  torch_threads: 1\n")
    cfg = load_config(path, ["learner.lr=3e-5", "stream.shuffle_seed=7", "stream.label_names=[neg, pos]"])
    assert cfg.learner.lr == pytest.approx(3e-5)  # YAML reads 3e-5 as a string; it is still a number
    assert cfg.learner.torch_threads == 1
    assert cfg.stream.shuffle_seed == 7
    assert cfg.stream.label_names == ("neg", "pos")


@pytest.mark.parametrize("override, names", [
    ("learner.lrr=1", "learner.lrr"),
    ("nope.key=1", "nope"),
    ("learner.lr=fast", "learner.lr"),
    ("stream.format=xml", "stream.format"),
    ("selection.strategy=psychic", "selection.strategy"),
    ("batching.policy=huge", "batching.policy"),
    ("stream.window_size=0", "stream.window_size"),
    ("output.progress=maybe", "output.progress"),
    ("learner.max_in_flight=1.5", "learner.max_in_flight"),
    ("batching.min_batch_size=64", "min_batch_size"),
    ("stream.label_names=[a, b, c]", "stream.label_names"),
    ("scoring.micro_batch_tokens=-1", "scoring.micro_batch_tokens"),
    ("eval.max_samples=-5", "eval.max_samples"),
    ("output.run_dir=runs/{nme}", "output.run_dir"),
    ("ray.num_cpus=0", "ray.num_cpus"),
    ("scoring.resources=3", "scoring.resources"),
    ("scoring.resources={scorer: -1}", "scorer"),
    ("learner.resources={learner: x}", "learner.resources.learner"),
    (("scoring.max_scorers=1", "scoring.num_scorers=2"), "scoring.max_scorers"),
    (("scoring.max_scorers=4", "scoring.num_gpus=1"), "GPU"),
    ("selection.mode=greedy", "selection.mode"),
    ("stream.source=kafka", "stream.kafka_servers"),
    (("stream.source=kafka", "stream.kafka_servers=localhost:9092"), "stream.kafka_topics"),
    ("stream.kafka_start=middle", "stream.kafka_start"),
    ("stream.max_record_bytes=-1", "stream.max_record_bytes"),
    ("learner.micro_batch_size=-2", "learner.micro_batch_size"),
    ("learner.num_workers=0", "learner.num_workers"),
    (("learner.num_workers=2", "learner.num_cpus=0"), "learner.num_workers"),
    (("learner.num_workers=2", "batching.policy=adaptive"), "batching.policy=adaptive"),
    ("learner.placement_strategy=ANYWHERE", "learner.placement_strategy"),
    ("learner.sharding=zero3", "learner.sharding"),
    ("learner.group_timeout_s=0", "learner.group_timeout_s"),
    ("output.monitor_every_s=0", "output.monitor_every_s"),
    ("selection.epsilon=1.5", "selection.epsilon"),
    ("selection.alpha=-1", "selection.alpha"),
    ("selection.strategy=mix", "selection.mix"),
    (("selection.strategy=mix", "selection.mix={oracle: 1}"), "selection.mix.oracle"),
    (("selection.strategy=mix", "selection.mix={mix: 1}"), "selection.mix.mix"),
    ("selection.mix={random: 0}", "selection.mix.random"),
    (("selection.max_class_share=0.5", "selection.mode=importance"), "selection.max_class_share"),
    ("selection.max_class_share=2", "selection.max_class_share"),
    ("selection.holdout_size=0", "selection.holdout_size"),
    ("scoring.grad_norm=full", "scoring.grad_norm"),
    ("model.kind=seq2seq", "model.kind"),
    (("model.kind=causal_lm", "selection.max_class_share=0.5"), "selection.max_class_share"),
    (("model.kind=causal_lm", "scoring.grad_norm=exact"), "scoring.grad_norm"),
    ("eval.skip=-1", "eval.skip"),
    ("stream.phases=[{path: a.tsv}]", r"stream.phases\[0\].name"),
    ("stream.phases=[{name: a}]", r"stream.phases\[0\].path"),
    ("stream.phases=[{name: a, path: a.tsv, colour: red}]", r"stream.phases\[0\].colour"),
    ("stream.phases=[{name: a, path: a.tsv}, {name: a, path: b.tsv}]", "unique"),
    ("stream.phases=[{name: a, path: a.tsv, skip: 3}]", r"stream.phases\[0\].skip"),
    (("stream.phases=[{name: a, path: a.tsv}]", "stream.source=directory"), "stream.source=file"),
    ("eval.sets=[{name: dev, path: d.tsv}]", r"eval.sets\[0\].name"),
    ("eval.sets=[{name: a, path: d.tsv, label_names: [x]}]", r"eval.sets\[0\].label_names"),
    (("stream.phases=[{name: a, path: a.tsv, max_samples: 50}]", "eval.sets=[{name: a, path: a.tsv, skip: 10}]"),
     r"eval.sets\[0\] reads phase 'a'"),
    ("continual.replay_fraction=1", "continual.replay_fraction"),
    ("serve.feedback_topic=fb", "serve.feedback_topic"),  # feedback goes to a topic only for a run that reads Kafka
    (("stream.source=kafka", "stream.kafka_servers=h:9092", "stream.kafka_topics=[a]", "serve.feedback_topic=b"),
     "serve.feedback_topic"),
    ("serve.max_ongoing_requests=4", "serve.max_ongoing_requests"),
    ("continual.replay_policy=fifo", "continual.replay_policy"),
    (("continual.replay_policy=class_balanced", "model.kind=causal_lm"), "class_balanced"),
    ("continual.ewc_lambda=5", "continual.replay_size"),
    ("continual.drift_reactions=[panic]", "continual.drift_reactions"),
    ("continual.drift_reactions=[replay_boost]", "continual.replay_size"),
    ("continual.prequential_fading=1", "continual.prequential_fading"),
    ("eval.path=data.tsv", "eval.path"),  # the stream's own file, without a head/tail split
    (("eval.path=data.tsv", "stream.max_samples=100", "eval.skip=50"), "eval.skip"),
    (("eval.path=data.tsv", "stream.max_samples=100", "eval.skip=100", "selection.strategy=rho_loss"),
     "selection.holdout_size"),
])
def test_bad_values_name_the_key(override, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_config(None, ["stream.path=data.tsv", *([override] if isinstance(override, str) else override)])


def test_a_file_can_be_split_into_a_streamed_head_and_a_dev_tail():
    cfg = load_config(None, ["stream.path=data.json", "eval.path=data.json", "stream.max_samples=100",
                             "eval.skip=100"])
    assert cfg.eval.skip == 100


def test_placement_resources_and_scorer_pool(tmp_path):
    path = write(tmp_path, "stream:\n  path: a.tsv\nscoring:\n  resources: {scorer: 2}\n  num_scorers: 2\n"
                           "  max_scorers: 6\n")
    cfg = load_config(path, ["learner.resources={learner: 1, GPU_type_h100: 0.5}"])
    assert cfg.scoring.resources == {"scorer": 2.0} and (cfg.scoring.num_scorers, cfg.scoring.max_scorers) == (2, 6)
    assert cfg.learner.resources == {"learner": 1.0, "GPU_type_h100": 0.5}
    assert load_config(None, ["stream.path=a.tsv"]).scoring.resources == {}


def test_override_into_an_empty_section(tmp_path):
    path = write(tmp_path, "stream:\n  path: a.tsv\neval:\n")
    assert load_config(path, ["eval.every_updates=7"]).eval.every_updates == 7


def test_unknown_key_lists_allowed_keys(tmp_path):
    path = write(tmp_path, "learner:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, ["stream.path=x"])
    assert "learner.learning_rate" in str(error.value) and "lr" in str(error.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "none.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "stream: [unclosed\n"))
    with pytest.raises(ConfigError, match="must look like"):
        apply_override({}, "no-equals-sign")


def test_file_source_needs_a_path():
    with pytest.raises(ConfigError, match="stream.path"):
        load_config(None, [])


SHIPPED = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


def test_configs_folder_is_found():
    assert len(SHIPPED) >= 8, SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_configs_load_and_pass_every_check(path):
    cfg = load_config(path)  # builds every section and runs every check, cross-section ones included
    assert load_config(path, ["output.name=again"]).output.name == "again"
    assert cfg.selection.strategy and cfg.batching.policy


def test_a_data_parallel_learner_refuses_a_policy_of_min_of_that_reads_the_gradient_noise():
    with pytest.raises(ConfigError, match="gradient noise"):
        load_config(None, ["stream.path=x.tsv", "learner.num_workers=2", "batching.policy=min_of",
                           "batching.policies=[resource, adaptive]"])
    load_config(None, ["stream.path=x.tsv", "learner.num_workers=2", "batching.policy=min_of",
                       "batching.policies=[resource, fixed]"])
