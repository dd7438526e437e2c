"""LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") through peft.

With `model.lora_r > 0` every model ol_ray builds (the learner's, the scorers', the irreducible-loss model) is the
pretrained model wrapped by `peft.get_peft_model`: its weights frozen, low-rank adapters B A (rank `lora_r`, scaled
by `lora_alpha / lora_r`) added to the `lora_targets` layers, and for a sequence classifier the new classification
head trained in full (peft's `modules_to_save`); a causal LM trains its adapters only. Only the trainable tensors
are published to the scorers, which hold the same frozen base; checkpoints hold the adapters the peft way
(`adapter_config.json`, `adapter_model.safetensors`), so `PeftModel.from_pretrained(base, path)` loads them.
Needs `ol_ray[lora]` (peft).
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Optional

from torch import nn

from ol_ray.models.config import ModelConfig

ADAPTER_CONFIG = "adapter_config.json"


class LoraError(RuntimeError):
    """LoRA asked for where it cannot be had."""


def _peft():
    try:
        import peft
    except ImportError:
        raise LoraError("model.lora_r > 0 needs peft: pip install 'ol_ray[lora]'") from None
    return peft


def is_adapter_folder(path: Optional[str]) -> bool:
    """Whether `path` holds a peft adapter (a checkpoint of a LoRA run) rather than a whole model."""
    return bool(path) and os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


def with_lora(model: nn.Module, cfg: ModelConfig, adapter_path: Optional[str] = None) -> nn.Module:
    """`model` with the LoRA adapter saved in `adapter_path` (trainable again), or with new adapters when
    `cfg.lora_r > 0`; the model itself otherwise."""
    if not adapter_path and cfg.lora_r <= 0:
        return model
    peft = _peft()
    with warnings.catch_warnings():  # peft still calls a transformers method deprecated for v6; not the user's to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if adapter_path:
            return peft.PeftModel.from_pretrained(model, adapter_path, is_trainable=True)
        task = peft.TaskType.CAUSAL_LM if cfg.kind == "causal_lm" else peft.TaskType.SEQ_CLS
        config = peft.LoraConfig(task_type=task, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                 lora_dropout=cfg.lora_dropout, target_modules=list(cfg.lora_targets) or None)
        try:
            return peft.get_peft_model(model, config)
        except ValueError as error:  # peft names the target modules it could not find
            raise LoraError(f"model.lora_targets: {error}") from None


def check_resumable(model_folder: str, cfg: ModelConfig) -> None:
    """Raise LoraError when a checkpoint's model does not match the config's model kind or LoRA settings (a resumed
    run must train what it saved: scorers build their model from the config, and the optimizer state fits only the
    same trainable tensors)."""
    saved = None
    if is_adapter_folder(model_folder):
        with open(os.path.join(model_folder, ADAPTER_CONFIG), encoding="utf-8") as handle:
            saved = json.load(handle)
    if saved is None and not os.path.isfile(os.path.join(model_folder, "config.json")):
        return  # neither an adapter nor a whole model: a broken checkpoint, which the caller skips
    saved_kind = _saved_kind(model_folder, saved)
    if saved_kind is not None and saved_kind != cfg.kind:
        raise LoraError(f"the checkpoint {model_folder} holds a {saved_kind} model; the config says model.kind="
                        f"{cfg.kind}: resume with the kind the run was started with")
    if saved is None and cfg.lora_r > 0:
        raise LoraError(f"model.lora_r={cfg.lora_r}, but the checkpoint {model_folder} holds a fully fine-tuned "
                        f"model; resume with model.lora_r=0")
    if saved is None:
        return
    targets = sorted(saved.get("target_modules") or [])
    if cfg.lora_r != saved.get("r") or (cfg.lora_targets and sorted(cfg.lora_targets) != targets):
        raise LoraError(f"the checkpoint {model_folder} holds LoRA adapters of rank {saved.get('r')} on "
                        f"{targets}; the config says model.lora_r={cfg.lora_r}, model.lora_targets="
                        f"{list(cfg.lora_targets)}: resume with the settings the run was started with")


def _saved_kind(model_folder: str, adapter: Optional[dict]) -> Optional[str]:
    """The model kind a checkpoint holds: from the adapter's peft task type, or the saved model's architecture."""
    if adapter is not None:
        return {"CAUSAL_LM": "causal_lm", "SEQ_CLS": "sequence_classification"}.get(adapter.get("task_type"))
    try:
        with open(os.path.join(model_folder, "config.json"), encoding="utf-8") as handle:
            architectures = json.load(handle).get("architectures") or []
    except (OSError, ValueError):
        return None  # unreadable: the caller's load fails and skips it
    if any(name.endswith("ForCausalLM") for name in architectures):
        return "causal_lm"
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return "sequence_classification"
    return None


def trainable_names(model: nn.Module) -> set[str]:
    """The state-dict names of the parameters that train (with LoRA: the adapters and the head)."""
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}
