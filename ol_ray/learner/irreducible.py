"""The irreducible-loss model of RHO-LOSS (Mindermann et al., ICML 2022): a model trained on a holdout split of the
stream, whose loss on a sample estimates the part of the loss that training cannot remove (label noise, ambiguity).

How it is obtained: before the stream starts, the first `selection.holdout_size` rows of the stream are read (and
never trained on by the main model), validated and tokenized; a copy of the configured model is fine-tuned on them
for `selection.irreducible_epochs` epochs (a Ray task with the learner's resources when Ray runs), and saved in
the run directory (`irreducible/model.pt` and `irreducible/holdout.json`, with the stream cursor after the
holdout). The stream then starts after the holdout. Scorers load the model once and add an `irreducible_loss`
column. How it is refreshed: it is not, within a run; the paper finds a fixed irreducible-loss model works (it
need not track the learner), and a resumed run reuses the saved one. Start a new run to refit it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ol_ray.config.schema import Config
from ol_ray.selection.config import uses_rho_loss

FOLDER = "irreducible"


@dataclass
class Holdout:
    input_ids: list[np.ndarray]  # token ids per valid row
    labels: np.ndarray  # int64
    cursor: dict[str, Any]  # the stream position after the rows read
    read: int  # rows read
    rejected: int  # of those, rows that failed validation (left out)
    sample_ids: np.ndarray  # the valid rows' ids
    target_masks: Optional[list[np.ndarray]] = None  # causal LM: the target tokens of each row


def read_head(cfg: Config, count: int, rows: Optional[Sequence[dict[str, Any]]] = None,
              until_valid: bool = False) -> Holdout:
    """The head of the configured stream, validated and tokenized: its first `count` rows, or with `until_valid`
    its first `count` valid rows (fewer if the stream ends)."""
    from ol_ray.data.factory import make_source
    from ol_ray.data.phases import config_for_phase
    from ol_ray.data.source import windows
    from ol_ray.data.validation import FieldSpec, split_records
    from ol_ray.tasks.tokenize import tokenize_rows

    stream = dataclasses.replace(cfg.stream, window_size=count, max_samples=0 if until_valid else count, rate=0.0)
    source = make_source(stream, rows=rows)
    valid, read, rejected, cursor = [], 0, 0, source.cursor()
    for window in windows(source, stream):
        spec = FieldSpec.from_config(config_for_phase(cfg, window.record_format.phase))  # a phase's own fields
        good, bad = split_records([r["sample_id"] for r in window.records], [r["raw"] for r in window.records],
                                  window.record_format, spec, window=-1)
        valid.extend(good)
        read, rejected, cursor = read + len(window), rejected + len(bad), window.cursor
        if until_valid and len(valid) >= count:
            valid = valid[:count]
            break
    columns, input_ids, masks, unusable = tokenize_rows(valid, cfg)
    return Holdout(input_ids, columns["label"], cursor, read, rejected + unusable, columns["sample_id"], masks)


def read_holdout(cfg: Config, rows: Optional[Sequence[dict[str, Any]]] = None) -> Holdout:
    """The first `selection.holdout_size` rows of the stream, validated and tokenized."""
    holdout = read_head(cfg, cfg.selection.holdout_size, rows)
    if not len(holdout.labels):
        raise ValueError(f"the stream's first {cfg.selection.holdout_size} rows hold no valid sample to train the "
                         "irreducible-loss model")
    return holdout


def train_irreducible(cfg: Config, input_ids: Sequence[np.ndarray], labels: np.ndarray,
                      target_masks: Optional[Sequence[np.ndarray]] = None) -> dict[str, Any]:
    """Fine-tune a fresh copy of the configured model on the holdout (plain mini-batch AdamW, the learner's
    learning rate, batch size and precision); returns its state as numpy arrays."""
    import torch

    from ol_ray.learner.update import make_optimizer, weighted_step
    from ol_ray.models.loading import device_for, load_model, load_tokenizer, pad_id_of, state_to_numpy
    from ol_ray.tasks.losses import TrainBatch

    torch.manual_seed(cfg.model.seed + 1)
    torch.set_num_threads(cfg.learner.torch_threads)
    device = device_for(cfg.learner.num_gpus)
    model = load_model(cfg.model).to(device)
    optimizer = make_optimizer(model, cfg.learner.lr, cfg.learner.weight_decay, device)
    pad_id = pad_id_of(load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code))
    rng = np.random.default_rng(cfg.selection.seed)
    batch_size = cfg.batching.batch_size
    for _ in range(cfg.selection.irreducible_epochs):
        order = rng.permutation(len(labels))
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = TrainBatch([input_ids[i] for i in chosen], labels[chosen], np.ones(len(chosen), np.float32),
                               None if target_masks is None else [target_masks[i] for i in chosen])
            weighted_step(model, optimizer, batch, pad_id, device, cfg.learner.grad_clip, cfg.learner.precision,
                          cfg.learner.micro_batch_tokens)
    model.eval()
    return state_to_numpy(model)


def holdout_start(run_dir: Optional[str]) -> Optional[dict[str, Any]]:
    """What `irreducible/holdout.json` of a run says (`cursor`: where its stream starts after the holdout; `read`,
    `rejected`, `samples`), or None where there is none."""
    path = os.path.join(run_dir, FOLDER, "holdout.json") if run_dir else ""
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def prepare_irreducible(cfg: Config, run_dir: str, rows: Optional[Sequence[dict[str, Any]]] = None,
                        remote: bool = True, resume: bool = False) -> Optional[dict[str, Any]]:
    """The irreducible-loss model's state for a run that selects by rho_loss (None otherwise): when resuming, the
    one the run saved; for a new run (or a resumed one that never got as far), trained on the holdout and saved in
    the run directory first, replacing anything an earlier run left there."""
    import torch

    if not uses_rho_loss(cfg.selection):
        return None
    folder = os.path.join(run_dir, FOLDER)
    weights_path = os.path.join(folder, "model.pt")
    if resume and holdout_start(run_dir) is not None and os.path.exists(weights_path):
        return {name: tensor.float().numpy() for name, tensor in torch.load(weights_path, weights_only=True).items()}
    holdout = read_holdout(cfg, rows)
    if remote:
        import ray

        learner = cfg.learner
        task = ray.remote(train_irreducible).options(num_cpus=learner.num_cpus, num_gpus=learner.num_gpus,
                                                     resources=learner.resources or None)
        state = ray.get(task.remote(cfg, holdout.input_ids, holdout.labels, holdout.target_masks))
    else:
        state = train_irreducible(cfg, holdout.input_ids, holdout.labels, holdout.target_masks)
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(os.path.join(folder, "holdout.json")):  # a stale holdout must never outlive its model
        os.remove(os.path.join(folder, "holdout.json"))
    tensors = {name: (torch.from_numpy(value[1]).view(torch.bfloat16) if isinstance(value, tuple)
                      else torch.from_numpy(np.array(value))) for name, value in state.items()}
    torch.save(tensors, weights_path + ".tmp")
    os.replace(weights_path + ".tmp", weights_path)
    with open(os.path.join(folder, "holdout.json.tmp"), "w", encoding="utf-8") as handle:
        json.dump({"cursor": holdout.cursor, "read": holdout.read, "rejected": holdout.rejected,
                   "samples": len(holdout.labels)}, handle)
    os.replace(os.path.join(folder, "holdout.json.tmp"), os.path.join(folder, "holdout.json"))
    return state
