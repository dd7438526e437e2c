"""Causal-LM math: per-sample token losses for the update, per-sample statistics for the scorer, held-out perplexity.

A sample's targets are the tokens its `target_mask` marks (after the first: position t is predicted from tokens
before t). Per sample, the loss is the mean negative log-likelihood over its targets, so every sample counts once in
the weighted update however long it is (the importance weights of `ol_ray.selection` stay per sample); evaluation
pools tokens instead (perplexity = exp of the mean over all held-out target tokens, the usual definition).

The scorer's statistics are the classifier's, read over tokens: entropy, max probability and top-2 margin are means
over the targets; perplexity is exp(loss); grad_norm is the norm of the loss gradient with respect to the output
layer's weight (exact, from Gram matrices: dL/dW = (1/n) sum_t e_t h_t^T with e_t = p_t - onehot(y_t), so
|dL/dW|^2 = (1/n^2) sum_{t,s} (e_t . e_s)(h_t . h_s), without forming the vocabulary-by-hidden matrix). For the
set strategies, `embedding` is the mean last hidden state over the real tokens, and BADGE's gradient embedding
reads `features` (the mean head input over the targets) with `probs` = ((1 + p) / 2, (1 - p) / 2), p the mean top-1
probability: two "classes" whose error vector has norm (1 - p) / sqrt(2) whatever p is, so BADGE's kernel is
(1 - p)(1 - p')(h . h') / 2: uncertain samples far apart in feature space first.
"""

from __future__ import annotations

from typing import Any, Collection, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ol_ray.data.tokenization import length_groups, pad_batch, pad_masks, tokenize_lm
from ol_ray.models.loading import autocast
from ol_ray.tasks.base import TASKS
from ol_ray.tasks.classification import forward_with_head_input

LM_STAT_COLUMNS = ("loss", "entropy", "perplexity", "margin", "max_prob", "token_accuracy", "target_tokens",
                   "grad_norm", "embedding", "probs", "features")


def shifted_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    target_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The token each position predicts (the next one) and whether it is a target: (B, T-1) each."""
    return input_ids[:, 1:], target_mask[:, 1:] & attention_mask[:, 1:].bool()


def sample_token_losses(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        target_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the mean NLL over its target tokens (0 for a sample without targets) and the target count."""
    targets, mask = shifted_targets(input_ids, attention_mask, target_mask)
    nll = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten().long(),
                          reduction="none").view(targets.shape)
    counts = mask.sum(dim=1)
    return (nll * mask).sum(dim=1) / counts.clamp(min=1), counts


@torch.no_grad()
def score_lm_samples(model: nn.Module, head: nn.Module, input_ids: Sequence[np.ndarray],
                     target_masks: Sequence[np.ndarray], pad_id: int, device: torch.device, precision: str = "fp32",
                     micro_batch_tokens: int = 0) -> dict[str, np.ndarray]:
    """Per-sample statistics of causal-LM samples (numpy, input order), over length-sorted micro-batches of at
    most `micro_batch_tokens` padded tokens."""
    size = len(input_ids)
    out = {name: np.zeros(size, dtype=np.float32) for name in LM_STAT_COLUMNS}
    out["target_tokens"] = np.zeros(size, dtype=np.int64)
    out["embedding"] = np.zeros((size, model.config.hidden_size), dtype=np.float32)
    out["features"] = np.zeros((size, head.in_features), dtype=np.float32)
    out["probs"] = np.zeros((size, 2), dtype=np.float32)
    model.eval()
    for group in length_groups([len(ids) for ids in input_ids], micro_batch_tokens):
        if len(group) == 0:
            continue
        stats = _score_group(model, head, [input_ids[i] for i in group], [target_masks[i] for i in group], pad_id,
                             device, precision)
        for name, values in stats.items():
            out[name][group] = values
    return out


def _score_group(model: nn.Module, head: nn.Module, input_ids: Sequence[np.ndarray],
                 target_masks: Sequence[np.ndarray], pad_id: int, device: torch.device,
                 precision: str) -> dict[str, np.ndarray]:
    batch, out, head_input = forward_with_head_input(model, head, input_ids, pad_id, device, precision)
    targets, mask = shifted_targets(batch["input_ids"], batch["attention_mask"], pad_masks(target_masks, device))
    weight = mask.float()
    counts = weight.sum(dim=1).clamp(min=1.0)
    log_probs = F.log_softmax(out.logits[:, :-1].float(), dim=-1)
    probs = log_probs.exp()
    top2 = probs.topk(2, dim=-1).values
    nll = -log_probs.gather(-1, targets.long()[..., None]).squeeze(-1)
    entropy = -(probs * log_probs).sum(dim=-1)
    correct = (probs.argmax(dim=-1) == targets).float()
    del log_probs  # scoring holds a few vocabulary-wide copies at once: free each when done

    def mean(values: torch.Tensor) -> torch.Tensor:  # over each sample's targets
        return (values * weight).sum(dim=1) / counts

    loss = mean(nll)
    hidden_in = head_input[:, :-1].float() * weight[..., None]  # the head's input at target positions only
    error = probs.scatter_add_(-1, targets.long()[..., None], -torch.ones_like(weight)[..., None])
    error.mul_(weight[..., None])  # e_t = p_t - onehot(y_t) at the targets, in place of probs
    gram = (error @ error.transpose(1, 2)) * (hidden_in @ hidden_in.transpose(1, 2)
                                              + (weight[:, :, None] * weight[:, None, :]
                                                 if getattr(head, "bias", None) is not None else 0.0))
    attention = batch["attention_mask"].unsqueeze(-1).float()
    max_prob = mean(top2[..., 0])
    stats = {
        "loss": loss,
        "entropy": mean(entropy),
        "perplexity": loss.exp(),
        "margin": mean(top2[..., 0] - top2[..., 1]),
        "max_prob": max_prob,
        "token_accuracy": mean(correct),
        "target_tokens": mask.sum(dim=1),
        "grad_norm": gram.sum(dim=(1, 2)).clamp(min=0.0).sqrt() / counts,
        "embedding": (out.hidden_states[-1].float() * attention).sum(dim=1) / attention.sum(dim=1).clamp(min=1.0),
        "probs": badge_probs(max_prob),
        "features": hidden_in.sum(dim=1) / counts[:, None],
    }
    return {name: value.cpu().numpy() for name, value in stats.items()}


def badge_probs(max_prob: torch.Tensor) -> torch.Tensor:
    """Two-"class" probabilities ((1 + p) / 2, (1 - p) / 2) for BADGE, p a sample's mean top-1 probability: the
    first always predicted, the error's norm (1 - p) / sqrt(2) falling as the model grows sure."""
    return torch.stack([(1.0 + max_prob) / 2, (1.0 - max_prob) / 2], dim=-1)


@torch.no_grad()
def evaluate_lm(model: nn.Module, input_ids: Sequence[np.ndarray], target_masks: Sequence[np.ndarray], pad_id: int,
                device: torch.device, batch_size: int, precision: str = "fp32",
                max_tokens: int = 0) -> dict[str, float]:
    """Held-out mean token NLL (`loss`), `perplexity` = exp(loss) and next-token `token_accuracy`, pooled over
    every target token of the set; batches of at most `batch_size` samples and `max_tokens` padded tokens (float32
    logits take vocabulary x 4 bytes a token, 0.19 MiB for SmolLM2's 49k, so a token budget bounds the memory)."""
    was_training = model.training
    model.eval()
    nll_sum, correct, tokens = 0.0, 0.0, 0
    for group in length_groups([len(ids) for ids in input_ids], max_tokens, batch_size):
        batch = pad_batch([input_ids[i] for i in group], pad_id, device)
        masks = pad_masks([target_masks[i] for i in group], device)
        with autocast(device, precision):
            logits = model(**batch).logits[:, :-1].float()
        targets, mask = shifted_targets(batch["input_ids"], batch["attention_mask"], masks)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten().long(), reduction="none").view(targets.shape)
        nll_sum += float((nll * mask).sum())
        correct += float(((logits.argmax(dim=-1) == targets) & mask).sum())
        tokens += int(mask.sum())
    model.train(was_training)
    loss = nll_sum / max(tokens, 1)
    return {"loss": loss, "perplexity": float(np.exp(min(loss, 700.0))), "token_accuracy": correct / max(tokens, 1),
            "tokens": tokens}


@TASKS.register("causal_lm", configured=False)
class CausalLM:
    """The text itself: next-token prediction on the target tokens (a response, assistant turns, or all text)."""

    kind = "causal_lm"
    labelled = False
    prequential_columns = ("loss", "target_tokens", "token_accuracy")

    def label_classes(self, model: Any) -> int:
        return 0

    def tokenize(self, columns: dict[str, np.ndarray], model: Any, chat_template: bool = False
                 ) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], list]:
        input_ids, truncated, masks, rejected = tokenize_lm(columns["text"], columns["prompt"], columns["messages"],
                                                            model.name_or_path, model.max_length, chat_template,
                                                            model.trust_remote_code)
        return input_ids, truncated, masks, [(i, error) for i, error in enumerate(rejected) if error is not None]

    def score(self, model: nn.Module, head: nn.Module, columns: dict[str, np.ndarray], pad_id: int,
              device: torch.device, precision: str = "fp32", micro_batch_tokens: int = 0,
              wanted: Optional[Collection[str]] = None) -> dict[str, np.ndarray]:
        stats = score_lm_samples(model, head, columns["input_ids"], columns["target_mask"], pad_id, device,
                                 precision, micro_batch_tokens)
        return stats if wanted is None else {name: value for name, value in stats.items() if name in wanted}

    def sample_losses(self, logits: torch.Tensor, inputs: dict[str, torch.Tensor], labels: np.ndarray,
                      target_masks: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
        masks = pad_masks(target_masks, device)
        return sample_token_losses(logits, inputs["input_ids"], inputs["attention_mask"], masks)[0]

    @torch.no_grad()
    def sample_correct(self, logits: torch.Tensor, inputs: dict[str, torch.Tensor], labels: np.ndarray,
                       target_masks: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
        """A sample's share of target tokens predicted (its token accuracy)."""
        targets, mask = shifted_targets(inputs["input_ids"], inputs["attention_mask"], pad_masks(target_masks, device))
        hits = (logits[:, :-1].argmax(dim=-1) == targets).float() * mask
        return hits.sum(dim=1) / mask.sum(dim=1).clamp(min=1)

    def evaluate(self, model: nn.Module, input_ids: Sequence[np.ndarray], labels: np.ndarray,
                 target_masks: Sequence[np.ndarray], pad_id: int, device: torch.device, batch_size: int,
                 precision: str = "fp32", max_tokens: int = 0) -> dict[str, float]:
        return evaluate_lm(model, input_ids, target_masks, pad_id, device, batch_size, precision, max_tokens)
