"""A sequence classifier's per-sample statistics, the plain math callable without Ray.

`score_samples`: one forward pass gives, per sample, the loss, predictive entropy, margin, max probability, predicted
label, class probabilities, the head's input features, the last-layer gradient norm in closed form and a mean-pooled
embedding; `exact_grad_norms` gives the whole model's per-sample gradient norms with torch.func (vmap over grad)
for small models.
"""

from __future__ import annotations

from typing import Any, Collection, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ol_ray.data.tokenization import length_groups, pad_batch, tokenize_texts
from ol_ray.models.loading import autocast
from ol_ray.tasks.base import TASKS

STAT_COLUMNS = ("loss", "entropy", "margin", "max_prob", "predicted", "grad_norm", "embedding", "probs", "features")


@torch.no_grad()
def score_samples(model: nn.Module, head: nn.Linear, input_ids: Sequence[np.ndarray], labels: np.ndarray,
                  pad_id: int, device: torch.device, precision: str = "fp32", micro_batch_tokens: int = 0,
                  columns: Optional[Collection[str]] = None) -> dict[str, np.ndarray]:
    """Per-sample statistics of one batch (numpy arrays, one row per sample, in input order), computed over
    length-sorted micro-batches of at most `micro_batch_tokens` padded tokens. `columns` names the statistics to
    compute (None: all of STAT_COLUMNS): hidden states are only asked of the model for `embedding`, and the head's
    input only caught for `features` and `grad_norm`.

    grad_norm is the norm of the cross-entropy gradient with respect to the head layer's weight and bias:
    dL/dW = (p - y) h^T and dL/db = p - y, so its norm is |p - y| * sqrt(|h|^2 + 1), with h the head's input.
    """
    wanted = tuple(STAT_COLUMNS if columns is None else [name for name in STAT_COLUMNS if name in columns])
    widths = {"embedding": model.config.hidden_size, "probs": head.out_features, "features": head.in_features}
    out = {name: np.zeros((len(input_ids), widths[name]) if name in widths else len(input_ids),
                          dtype=np.int64 if name == "predicted" else np.float32) for name in wanted}
    model.eval()
    for group in length_groups([len(ids) for ids in input_ids], micro_batch_tokens):
        if len(group) == 0:
            continue
        stats = _score_group(model, head, [input_ids[i] for i in group], labels[group], pad_id, device, precision,
                             wanted)
        for name, values in stats.items():
            out[name][group] = values
    return out


def forward_with_head_input(model: nn.Module, head: nn.Module, input_ids: Sequence[np.ndarray], pad_id: int,
                            device: torch.device, precision: str, hidden_states: bool = True, head_input: bool = True
                            ) -> tuple[dict[str, torch.Tensor], Any, Optional[torch.Tensor]]:
    """One padded forward pass: the padded batch, the model's output (with every layer's hidden states when
    `hidden_states`), and the input of its output layer `head` (caught by a forward hook when `head_input`; the
    features whose norm gives the last-layer gradient norm)."""
    captured: dict[str, torch.Tensor] = {}
    hook = (head.register_forward_hook(lambda module, inputs, output: captured.__setitem__("h", inputs[0]))
            if head_input else None)
    try:
        batch = pad_batch(input_ids, pad_id, device)
        with autocast(device, precision):
            out = model(**batch, output_hidden_states=hidden_states)
    finally:
        if hook is not None:
            hook.remove()
    return batch, out, captured.get("h")


def _score_group(model: nn.Module, head: nn.Linear, input_ids: Sequence[np.ndarray], labels: np.ndarray,
                 pad_id: int, device: torch.device, precision: str,
                 wanted: Sequence[str] = STAT_COLUMNS) -> dict[str, np.ndarray]:
    needs_features = "features" in wanted or "grad_norm" in wanted
    batch, out, head_input = forward_with_head_input(model, head, input_ids, pad_id, device, precision,
                                                     hidden_states="embedding" in wanted, head_input=needs_features)
    logits = out.logits.float()
    target = torch.as_tensor(labels, dtype=torch.long, device=device)
    log_probs = F.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    top2 = probs.topk(2, dim=-1).values
    stats = {
        "loss": lambda: F.nll_loss(log_probs, target, reduction="none"),
        "entropy": lambda: -(probs * log_probs).sum(dim=-1),
        "margin": lambda: top2[:, 0] - top2[:, 1],
        "max_prob": lambda: top2[:, 0],
        "predicted": lambda: logits.argmax(dim=-1),
        "probs": lambda: probs,
    }
    if needs_features:
        features = head_input.float()
        if features.dim() == 3:  # a head applied per position (decoder classifiers): use the last real token
            last = batch["attention_mask"].sum(dim=1) - 1
            features = features[torch.arange(len(last), device=device), last]
        error = probs - F.one_hot(target, logits.shape[-1]).float()
        stats["grad_norm"] = lambda: error.norm(dim=-1) * torch.sqrt(features.pow(2).sum(dim=-1) + 1.0)
        stats["features"] = lambda: features
    if "embedding" in wanted:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        hidden = out.hidden_states[-1].float()
        stats["embedding"] = lambda: (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return {name: stats[name]().cpu().numpy() for name in wanted}


def exact_grad_norms(model: nn.Module, input_ids: Sequence[np.ndarray], labels: np.ndarray, pad_id: int,
                     device: torch.device, chunk_size: int = 8) -> np.ndarray:
    """The norm of each sample's cross-entropy gradient over all trainable parameters, with torch.func:
    vmap(grad(loss of one sample)) in chunks of `chunk_size` samples (memory ~ chunk_size x parameters). Padding is
    an additive 4-D attention mask, so no data-dependent mask handling runs under vmap (encoder models)."""
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    batch = pad_batch(input_ids, pad_id, device)
    target = torch.as_tensor(labels, dtype=torch.long, device=device)
    blocked = torch.finfo(torch.float32).min

    def sample_loss(weights: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor,
                    label: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - mask.float())[None, None, None, :] * blocked
        logits = functional_call(model, (weights, buffers), args=(),
                                 kwargs={"input_ids": ids[None], "attention_mask": additive}).logits
        return F.cross_entropy(logits.float(), label[None])

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            grads = vmap(grad(sample_loss), in_dims=(None, 0, 0, 0), chunk_size=chunk_size)(
                params, batch["input_ids"], batch["attention_mask"], target)
    finally:
        model.train(was_training)
    squared = sum(g.float().pow(2).flatten(1).sum(dim=1) for g in grads.values())
    return squared.sqrt().cpu().numpy().astype(np.float32)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, input_ids: Sequence[np.ndarray], labels: np.ndarray, pad_id: int,
                        device: torch.device, batch_size: int, precision: str = "fp32") -> dict[str, float]:
    """Accuracy, mean cross-entropy, macro-F1 and balanced accuracy of a classifier on a labelled set."""
    was_training = model.training
    model.eval()
    predictions, losses = [], []
    for start in range(0, len(labels), batch_size):
        batch = pad_batch(input_ids[start:start + batch_size], pad_id, device)
        targets = torch.as_tensor(labels[start:start + batch_size], device=device)
        with autocast(device, precision):
            logits = model(**batch).logits.float()
        losses.append(F.cross_entropy(logits, targets, reduction="sum").item())
        predictions.append(logits.argmax(dim=-1).cpu().numpy())
    model.train(was_training)
    predicted = np.concatenate(predictions)
    return {
        "accuracy": float((predicted == labels).mean()),
        "loss": float(sum(losses) / len(labels)),
        "macro_f1": macro_f1(labels, predicted),
        "balanced_accuracy": balanced_accuracy(labels, predicted),
    }


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    scores = []
    for cls in np.union1d(labels, predicted):
        true_pos = np.sum((predicted == cls) & (labels == cls))
        denominator = np.sum(predicted == cls) + np.sum(labels == cls)
        scores.append(2 * true_pos / denominator if denominator else 0.0)
    return float(np.mean(scores))


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean per-class recall over the classes present in labels: accuracy that a majority class cannot inflate
    (the airline tweets are 80% negative)."""
    return float(np.mean([np.mean(predicted[labels == cls] == cls) for cls in np.unique(labels)]))


@TASKS.register("sequence_classification", configured=False)
class SequenceClassification:
    """A class per text: a classification head on the encoder, cross-entropy on the label."""

    kind = "sequence_classification"
    labelled = True
    prequential_columns = ("loss", "predicted")

    def label_classes(self, model: Any) -> int:
        return model.num_labels

    def tokenize(self, columns: dict[str, np.ndarray], model: Any, chat_template: bool = False
                 ) -> tuple[list[np.ndarray], np.ndarray, None, list]:
        input_ids, truncated = tokenize_texts(columns["text"], model.name_or_path, model.max_length,
                                              model.trust_remote_code)
        return input_ids, truncated, None, []

    def score(self, model: nn.Module, head: nn.Module, columns: dict[str, np.ndarray], pad_id: int,
              device: torch.device, precision: str = "fp32", micro_batch_tokens: int = 0,
              wanted: Optional[Collection[str]] = None) -> dict[str, np.ndarray]:
        return score_samples(model, head, columns["input_ids"], columns["label"], pad_id, device, precision,
                             micro_batch_tokens, wanted)

    def sample_losses(self, logits: torch.Tensor, inputs: dict[str, torch.Tensor], labels: np.ndarray,
                      target_masks: Any, device: torch.device) -> torch.Tensor:
        targets = torch.as_tensor(labels, dtype=torch.long, device=device)
        return F.cross_entropy(logits.float(), targets, reduction="none")

    @torch.no_grad()
    def sample_correct(self, logits: torch.Tensor, inputs: dict[str, torch.Tensor], labels: np.ndarray,
                       target_masks: Any, device: torch.device) -> torch.Tensor:
        return (logits.argmax(dim=-1) == torch.as_tensor(labels, dtype=torch.long, device=device)).float()

    def evaluate(self, model: nn.Module, input_ids: Sequence[np.ndarray], labels: np.ndarray, target_masks: Any,
                 pad_id: int, device: torch.device, batch_size: int, precision: str = "fp32",
                 max_tokens: int = 0) -> dict[str, float]:
        return evaluate_classifier(model, input_ids, labels, pad_id, device, batch_size, precision)
