"""Elastic weight consolidation: a quadratic penalty that holds the parameters that mattered for earlier data.

    penalty(theta) = (lambda / 2) * sum_i F_i (theta_i - theta*_i)^2

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks" (PNAS 2017), in its online form
(Schwarz et al., "Progress & Compress", ICML 2018): F is a running diagonal Fisher information,
F <- decay * F + F_new, and theta* the parameters when it was last refreshed. F_new is the empirical Fisher on a
sample of the replay buffer (which holds the earlier domains): the mean over samples of each parameter's squared
per-sample loss gradient. The learner refreshes it at phase boundaries, at detected drift and every
`continual.ewc_every_updates` updates. Only trainable parameters are held (LoRA: the adapters and the head).

Plain functions and a small class, callable without Ray.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ol_ray.data.tokenization import pad_batch
from ol_ray.models.loading import autocast
from ol_ray.tasks.losses import TrainBatch, sample_losses


def empirical_fisher(model: nn.Module, batch: TrainBatch, pad_id: int, device: torch.device,
                     precision: str = "fp32") -> dict[str, torch.Tensor]:
    """The diagonal empirical Fisher of the trainable parameters: the mean over the batch's samples of the squared
    gradient of each sample's loss (one backward pass per sample; dropout off). Leaves no gradient behind."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in named}
    was_training = model.training
    model.eval()
    for index in range(len(batch.labels)):
        model.zero_grad(set_to_none=True)
        inputs = pad_batch([batch.input_ids[index]], pad_id, device)
        with autocast(device, precision):
            logits = model(**inputs).logits
            loss = sample_losses(logits, inputs, batch, np.asarray([index]), device).sum()
        loss.backward()
        for name, p in named:
            if p.grad is not None:
                fisher[name] += p.grad.detach().float().pow(2)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: value / max(len(batch.labels), 1) for name, value in fisher.items()}


class ElasticWeights:
    """The online-EWC state: Fisher diagonal and anchor parameters; `penalty(model)` is differentiable."""

    def __init__(self, strength: float, decay: float = 0.5):
        self.strength, self.decay = strength, decay
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.refreshes = 0

    def refresh(self, model: nn.Module, estimate: dict[str, torch.Tensor]) -> None:
        """Fold a new Fisher estimate in and anchor at the model's current parameters."""
        for name, value in estimate.items():
            old = self.fisher.get(name)
            self.fisher[name] = value if old is None else self.decay * old + value
        self.anchor = {name: p.detach().clone() for name, p in model.named_parameters() if name in self.fisher}
        self.refreshes += 1

    def penalty(self, model: nn.Module) -> Optional[torch.Tensor]:
        """(strength / 2) * sum F (theta - anchor)^2, or None before the first refresh."""
        if not self.fisher:
            return None
        total = None
        for name, p in model.named_parameters():
            if name in self.fisher:
                term = (self.fisher[name] * (p.float() - self.anchor[name].float()).pow(2)).sum()
                total = term if total is None else total + term
        return None if total is None else 0.5 * self.strength * total

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (for training_state.pt, loaded with weights_only=True)."""
        return {"fisher": self.fisher, "anchor": self.anchor, "refreshes": self.refreshes}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.fisher = {name: value.to(device) for name, value in state["fisher"].items()}
        self.anchor = {name: value.to(device) for name, value in state["anchor"].items()}
        self.refreshes = int(state["refreshes"])
