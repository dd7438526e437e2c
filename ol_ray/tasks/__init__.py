"""What differs between model kinds: a sequence classifier (`classification`) and a causal LM (`causal_lm`).

`score_columns` is the one entry point the scorers and the learner use for per-sample statistics; it picks the
kind's math from the columns (a causal LM's samples carry a `target_mask`).
"""

from __future__ import annotations

from typing import Collection, Optional

import numpy as np
import torch
from torch import nn

from ol_ray.tasks.causal_lm import score_lm_samples
from ol_ray.tasks.classification import score_samples


def score_columns(model: nn.Module, head: nn.Module, columns: dict[str, np.ndarray], pad_id: int,
                  device: torch.device, precision: str = "fp32", micro_batch_tokens: int = 0,
                  wanted: Optional[Collection[str]] = None) -> dict[str, np.ndarray]:
    """The statistics of tokenized samples (columns input_ids and label, or target_mask for a causal LM): what a
    scorer adds to a batch, and what the learner recomputes for replayed samples. `wanted` names the statistics
    (None: all)."""
    if "target_mask" in columns:
        stats = score_lm_samples(model, head, columns["input_ids"], columns["target_mask"], pad_id, device, precision,
                                 micro_batch_tokens)
        return stats if wanted is None else {name: value for name, value in stats.items() if name in wanted}
    return score_samples(model, head, columns["input_ids"], columns["label"], pad_id, device, precision,
                         micro_batch_tokens, wanted)
