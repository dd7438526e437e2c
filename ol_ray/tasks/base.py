"""The Task contract: what differs between model kinds, behind one small interface.

A task is registered under its `model.kind` (`@TASKS.register("causal_lm", configured=False)`); `task_for(kind)`
returns it. Scorers, the learner, the weighted step and evaluation call the task and never branch on the kind:

- `tokenize(columns, model, chat_template)`: validated rows as token ids, truncation flags, target masks (None for a
  classifier) and the (position, RowError) of rows that cannot train;
- `score(model, head, columns, ...)`: the per-sample statistics selection and the batch policy read;
- `sample_losses(...)` / `sample_correct(...)`: each sample's loss and its prediction before the step;
- `evaluate(model, eval_set, ...)`: the held-out figures (a classifier's accuracy, loss, macro-F1; a causal LM's
  perplexity, token loss and accuracy);
- `label_classes(model)`: how many labels the run counts (0: a causal LM has none), and `prequential_columns`, the
  statistics that give test-then-train figures from the scores.

Below the tasks, the kind is known as data in two places that must come first: `ol_ray.models` picks the Hugging
Face auto class and the output layer, and `ol_ray.data.validation` the shape of a row (labelled text, or prompt,
response and chat rows). `ol_ray.config.checks` holds the config rules of each kind.
"""

from __future__ import annotations

from typing import Any, Collection, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from ol_ray.registry import Registry

TASKS = Registry("model kind", "model.kind")  # filled by @TASKS.register in ol_ray.tasks


class Task(Protocol):
    kind: str
    labelled: bool  # rows carry a label (a classifier's) rather than text to learn (a causal LM's)
    prequential_columns: tuple[str, ...]

    def label_classes(self, model: Any) -> int:
        """Label classes counted in the run's label mix; 0 when the samples have no labels."""

    def tokenize(self, columns: dict[str, np.ndarray], model: Any, chat_template: bool = False
                 ) -> tuple[list[np.ndarray], np.ndarray, Optional[list[np.ndarray]], list[tuple[int, Any]]]:
        """Token ids, truncation flags, target masks (or None) and the rows that cannot train."""

    def score(self, model: nn.Module, head: nn.Module, columns: dict[str, np.ndarray], pad_id: int,
              device: torch.device, precision: str = "fp32", micro_batch_tokens: int = 0,
              wanted: Optional[Collection[str]] = None) -> dict[str, np.ndarray]:
        """Per-sample statistics of tokenized samples (`wanted` names them; None: all)."""

    def sample_losses(self, logits: torch.Tensor, inputs: dict[str, torch.Tensor], labels: np.ndarray,
                      target_masks: Optional[Sequence[np.ndarray]], device: torch.device) -> torch.Tensor:
        """Each sample's loss, float32."""

    def sample_correct(self, logits: torch.Tensor, inputs: dict[str, torch.Tensor], labels: np.ndarray,
                       target_masks: Optional[Sequence[np.ndarray]], device: torch.device) -> torch.Tensor:
        """Each sample's prediction before the step as prequential accuracy counts it, in [0, 1]."""

    def evaluate(self, model: nn.Module, input_ids: Sequence[np.ndarray], labels: np.ndarray,
                 target_masks: Optional[Sequence[np.ndarray]], pad_id: int, device: torch.device, batch_size: int,
                 precision: str = "fp32", max_tokens: int = 0) -> dict[str, float]:
        """Held-out figures of a set."""


def task_for(kind: str) -> Task:
    """The registered task of a `model.kind`."""
    return TASKS.build(kind, None)
