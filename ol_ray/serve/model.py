"""The served model, plain Python (the Serve deployment in `ol_ray.serve.app` is a thin shell around it).

It starts from the run directory's newest readable checkpoint (the configured model when there is none) and,
while the run is live, follows the run's weight store: `refresh()` pulls a newer published version (with LoRA only
the adapters and the head travel) between requests, never during one. When the run ends, it takes the run's newest
checkpoint if that is newer than what it serves (`take_newer_checkpoint`). Every answer names the `weight_version`
that produced it: the learner's update count (a checkpoint's, or the published version's).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Iterator, Optional, Sequence

import torch

from ol_ray.config.schema import Config
from ol_ray.data.tokenization import pad_batch, tokenize_texts
from ol_ray.models.loading import ModelError, device_for, load_model, load_tokenizer, pad_id_of
from ol_ray.state.checkpoint import CheckpointError, checkpoints_newest_first, verify_checkpoint
from ol_ray.weights.store import WeightClient

logger = logging.getLogger(__name__)
PRUNED_RETRIES = 3  # a server's start looks again this often when a live run pruned every checkpoint it tried


def verified_checkpoints(run_dir: str, newer_than: int = -1) -> Iterator[tuple[str, int]]:
    """(folder, updates) of the run's checkpoints of more than `newer_than` updates that pass their checksums,
    newest first (an older one is not even read: a server asks this often)."""
    for path in checkpoints_newest_first(os.path.join(run_dir, "checkpoints")):
        try:
            with open(os.path.join(path, "state.json"), encoding="utf-8") as handle:
                updates = int(json.load(handle)["updates"])
            if updates <= newer_than:
                return
            verify_checkpoint(path)
            if not os.path.isdir(os.path.join(path, "model")):  # a checkpoint from before manifests, cut short
                raise CheckpointError(f"checkpoint {path} has no model folder")
        except (CheckpointError, OSError, ValueError, KeyError) as error:
            logger.warning("ol_ray serve: skipping checkpoint %s (%s)", path, error)
            continue
        yield path, updates


def newest_checkpoint(run_dir: str) -> Optional[tuple[str, int]]:
    """(folder, updates) of the run's newest checkpoint that passes its checksums, or None."""
    return next(verified_checkpoints(run_dir), None)


def load_newer_checkpoint(cfg: Config, run_dir: str, newer_than: int = -1) -> Optional[tuple[Any, str, int]]:
    """(model, folder, updates) of the newest checkpoint of more than `newer_than` updates, or None when there is
    none. A live run prunes old checkpoints (checkpoint.keep), so one checked a moment ago may be gone: the next is
    taken. One that is still there and does not load (weights that do not fit the config) is a ModelError: serving
    another model instead would hide it."""
    for path, updates in verified_checkpoints(run_dir, newer_than):
        try:
            return load_model(cfg.model, pretrained=True, path=os.path.join(path, "model")), path, updates
        except (ModelError, OSError) as error:
            if os.path.isdir(path):  # checkpoints are sealed by a rename: one still there is whole
                raise ModelError(f"checkpoint {path} does not load with this config (check the model.* overrides "
                                 f"against the run's): {error}") from None
            logger.warning("ol_ray serve: checkpoint %s was pruned while it loaded; trying an older one", path)
    return None


class ServedModel:
    """A run's model for inference: `predict(texts)` (a classifier), `generate(prompt)` (a causal LM)."""

    def __init__(self, cfg: Config, run_dir: str, store: Any = None):
        torch.set_num_threads(cfg.serve.torch_threads)
        self.cfg, self.run_dir = cfg, run_dir
        self.device = device_for(cfg.serve.num_gpus)
        self.tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
        self.pad_id = pad_id_of(self.tokenizer)
        found = None
        for _ in range(PRUNED_RETRIES):  # every one pruned while it loaded (a fast live run): the newer ones now
            found = load_newer_checkpoint(cfg, run_dir)
            if found is not None or newest_checkpoint(run_dir) is None:
                break
        self.model, path, self.weight_version = found or (load_model(cfg.model, pretrained=True), None, 0)
        self.source = path or cfg.model.name_or_path
        self.model.to(self.device).eval()
        self.client = None
        self.checked = 0.0
        self.unloadable = ""  # the last newer checkpoint that did not load (logged once)
        if store is not None:
            self.follow(store)

    def follow(self, store: Any) -> None:
        """Take weights from the run's weight store from now on (a live run)."""
        self.client = WeightClient(store)
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Pull a newer published version, at most every serve.refresh_every_s (between requests only)."""
        if self.client is None or (not force and time.monotonic() - self.checked < self.cfg.serve.refresh_every_s):
            return
        self.checked = time.monotonic()
        self.client.refresh(self.model)
        if self.client.version >= 0:
            self.weight_version = self.client.version

    def take_newer_checkpoint(self) -> bool:
        """Not following a run (it ended, or none is live): serve the run directory's newest checkpoint if it is
        newer than the served weights (a run's last updates, which no request pulled before it ended)."""
        self.client = None
        try:
            found = load_newer_checkpoint(self.cfg, self.run_dir, newer_than=self.weight_version)
        except ModelError as error:  # keep serving what loaded; the next newer checkpoint gets its own try
            if str(error) != self.unloadable:
                logger.error("ol_ray serve: %s", error)
            self.unloadable = str(error)
            return False
        if found is None:
            return False
        model, self.source, self.weight_version = found
        self.model = model.to(self.device).eval()
        return True

    @torch.no_grad()
    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Label and class probabilities per text, in one forward pass."""
        model = self.cfg.model
        input_ids, _ = tokenize_texts(texts, model.name_or_path, model.max_length, model.trust_remote_code)
        batch = pad_batch(input_ids, self.pad_id, self.device)
        probs = torch.softmax(self.model(**batch).logits.float(), dim=-1).cpu().numpy()
        names = self.cfg.stream.label_names
        return [{"label": int(row.argmax()), **({"label_name": names[int(row.argmax())]} if names else {}),
                 "probabilities": [round(float(p), 6) for p in row], "weight_version": self.weight_version}
                for row in probs]

    @torch.no_grad()
    def generate(self, prompt: str = "", messages: Optional[list[dict[str, str]]] = None,
                 max_new_tokens: int = 0) -> dict[str, Any]:
        """A greedy continuation of a prompt, or the assistant's reply to chat messages."""
        if messages is not None and getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = prompt if messages is None else "\n".join(m.get("content", "") for m in messages)
        ids = self.tokenizer(text, return_tensors="pt", truncation=True,
                             max_length=self.cfg.model.max_length)["input_ids"].to(self.device)
        limit = min(max_new_tokens or self.cfg.serve.max_new_tokens, self.cfg.serve.max_new_tokens)
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=limit, do_sample=False,
                                  pad_token_id=self.pad_id)
        reply = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        return {"text": reply, "tokens": int(out.shape[1] - ids.shape[1]), "weight_version": self.weight_version}
