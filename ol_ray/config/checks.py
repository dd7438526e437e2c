"""Checks across sections, in one place; each section's own rules live next to its dataclass."""

from __future__ import annotations

import os

from ol_ray.batching.config import check_batching, measures_gradient_noise
from ol_ray.config.schema import Config
from ol_ray.continual.config import check_continual
from ol_ray.data.config import check_stream
from ol_ray.driver.config import check_ray
from ol_ray.errors import require
from ol_ray.learner.config import check_learner
from ol_ray.models.config import check_model
from ol_ray.observe.config import check_eval, check_output
from ol_ray.scoring.config import check_scoring
from ol_ray.selection.config import check_selection, uses_rho_loss
from ol_ray.serve.config import check_serve
from ol_ray.state.config import check_checkpoint


def check(cfg: Config) -> None:
    """Every section's own rules, then the rules across sections; raises ConfigError naming the key."""
    check_stream(cfg.stream)
    check_model(cfg.model)
    check_scoring(cfg.scoring)
    check_selection(cfg.selection)
    check_batching(cfg.batching)
    check_learner(cfg.learner)
    check_eval(cfg.eval)
    check_continual(cfg.continual)
    check_checkpoint(cfg.checkpoint)
    check_output(cfg.output)
    check_ray(cfg.ray)
    check_serve(cfg.serve)
    if cfg.stream.label_names:
        require(len(cfg.stream.label_names) == cfg.model.num_labels,
                f"stream.label_names has {len(cfg.stream.label_names)} names but model.num_labels is "
                f"{cfg.model.num_labels}")
    require(cfg.continual.replay_policy != "class_balanced" or cfg.model.kind == "sequence_classification",
            "continual.replay_policy=class_balanced balances classes, and model.kind=causal_lm has none; use "
            "reservoir or selected")
    require(not cfg.serve.feedback_topic or cfg.stream.source == "kafka",
            "serve.feedback_topic is for a run that reads Kafka (stream.source: kafka); other runs' feedback goes to "
            "serve.feedback_path")
    require(not cfg.serve.feedback_topic or cfg.serve.feedback_topic in cfg.stream.kafka_topics,
            f"serve.feedback_topic={cfg.serve.feedback_topic!r} is not among stream.kafka_topics "
            f"{list(cfg.stream.kafka_topics)}: the run would never read the feedback sent there")
    policies = f" (batching.policies={list(cfg.batching.policies)})" if cfg.batching.policies else ""
    require(cfg.learner.num_workers == 1 or not measures_gradient_noise(cfg.batching),
            f"batching.policy={cfg.batching.policy}{policies} measures the gradient noise of one learner's batch, "
            f"which a data-parallel learner (learner.num_workers={cfg.learner.num_workers}) does not take; use "
            f"another policy or learner.num_workers=1")
    check_dev_overlap(cfg)
    check_kind(cfg)
    check_domains(cfg)


def check_dev_overlap(cfg: Config) -> None:
    """A dev set read from the stream's own file must lie past every row the stream reads (its tail)."""
    s, e = cfg.stream, cfg.eval
    if not e.path or s.source != "file" or os.path.abspath(e.path) != os.path.abspath(s.path):
        return
    holdout = cfg.selection.holdout_size if uses_rho_loss(cfg.selection) else 0
    require(s.shuffle_seed is None and 0 < s.max_samples and s.max_samples + holdout <= e.skip,
             f"eval.path is the stream's own file {e.path}: the dev rows would be trained on; read its head "
             f"(stream.max_samples > 0, no stream.shuffle_seed) and evaluate past it (eval.skip >= "
             f"stream.max_samples{' + selection.holdout_size' if holdout else ''}); got stream.max_samples="
             f"{s.max_samples}, eval.skip={e.skip}")


def check_kind(cfg: Config) -> None:
    """What only one model kind can do."""
    if cfg.model.kind != "causal_lm":
        return
    require(cfg.selection.max_class_share == 0,
             "selection.max_class_share caps classes, and model.kind=causal_lm has none; set it to 0")
    require(cfg.scoring.grad_norm == "last_layer",
             "scoring.grad_norm=exact is for sequence classifiers; a causal LM's scorer computes the output layer's "
             "gradient norm exactly (use last_layer)")
    require(bool(cfg.stream.response_field) and bool(cfg.stream.messages_field),
             "stream.response_field and stream.messages_field must name fields for model.kind=causal_lm")


def check_domains(cfg: Config) -> None:
    """stream.phases and eval.sets: named, with a file each, names unique, labels matching the model."""
    for key, domains in (("stream.phases", cfg.stream.phases), ("eval.sets", cfg.eval.sets)):
        names = [domain.name for domain in domains]
        for i, domain in enumerate(domains):
            where = f"{key}[{i}]"
            require(bool(domain.name), f"{where}.name must name the domain")
            require(domain.name != "dev", f"{where}.name: 'dev' is the name of eval.path's set; pick another")
            require(bool(domain.path), f"{where}.path must name a data file")
            require(domain.max_samples >= 0, f"{where}.max_samples must be 0 (all) or positive")
            require(domain.skip >= 0, f"{where}.skip must not be negative")
            require(not domain.label_names or len(domain.label_names) == cfg.model.num_labels,
                     f"{where}.label_names has {len(domain.label_names)} names but model.num_labels is "
                     f"{cfg.model.num_labels}")
        require(len(set(names)) == len(names), f"{key} names must be unique; got {names}")
    for i, phase in enumerate(cfg.stream.phases):
        require(phase.skip == 0, f"stream.phases[{i}].skip is for evaluation sets; a phase reads its whole file "
                                  f"(or its first max_samples rows)")
    evaluated = [(f"eval.sets[{i}]", domain.path, domain.skip) for i, domain in enumerate(cfg.eval.sets)]
    if cfg.eval.path:
        evaluated.append(("eval.path", cfg.eval.path, cfg.eval.skip))
    for key, path, skip in evaluated:  # a set read from a phase's own file must lie past what the phase reads
        for phase in cfg.stream.phases:
            if os.path.abspath(path) == os.path.abspath(phase.path):
                require(cfg.stream.shuffle_seed is None and 0 < phase.max_samples <= skip,
                         f"{key} reads phase {phase.name!r}'s file {path}: its rows would be trained on; read the "
                         f"phase's head (max_samples > 0, no stream.shuffle_seed) and evaluate past it (skip >= the "
                         f"phase's max_samples)")
    if cfg.stream.phases:
        require(cfg.stream.source == "file", f"stream.phases read files one after another: set stream.source=file "
                                              f"(got {cfg.stream.source})")
