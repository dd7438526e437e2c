"""Checkpoints: written to a temporary folder and renamed into place, so a crash never leaves half a checkpoint.

Layout of `<run_dir>/checkpoints/step-00000400/`:
    model/                Hugging Face save_pretrained format (model and tokenizer): from_pretrained loads it
    training_state.pt     optimizer and learning-rate scheduler state
    candidates.pkl        scored candidates received but not yet used (none are lost across a restart)
    state.json            counters, weight version, stream cursor, window index
`checkpoints/latest` names the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from typing import Any, Optional

import torch

LATEST = "latest"


def _write_atomically(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_checkpoint(root: str, step: int, model: Any, tokenizer: Any, training_state: dict[str, Any],
                    candidates: Any, state: dict[str, Any], keep: int) -> str:
    """Write checkpoint `step` under `root` and keep only the `keep` newest; returns its folder."""
    os.makedirs(root, exist_ok=True)
    name = f"step-{step:08d}"
    final = os.path.join(root, name)
    tmp = os.path.join(root, f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(os.path.join(tmp, "model"))
    tokenizer.save_pretrained(os.path.join(tmp, "model"))
    torch.save(training_state, os.path.join(tmp, "training_state.pt"))
    with open(os.path.join(tmp, "candidates.pkl"), "wb") as handle:
        pickle.dump(candidates, handle)
    _write_atomically(os.path.join(tmp, "state.json"), json.dumps(state, indent=2, default=str))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_atomically(os.path.join(root, LATEST), name)
    for old in sorted(d for d in os.listdir(root) if d.startswith("step-"))[:-keep]:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def latest_checkpoint(root: str) -> Optional[str]:
    """The newest complete checkpoint folder under `root`, or None."""
    try:
        with open(os.path.join(root, LATEST), encoding="utf-8") as handle:
            name = handle.read().strip()
    except FileNotFoundError:
        return None
    path = os.path.join(root, name)
    return path if os.path.isfile(os.path.join(path, "state.json")) else None


def load_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(state, training_state, candidates) of a checkpoint folder; the model loads with from_pretrained(path/model)."""
    with open(os.path.join(path, "state.json"), encoding="utf-8") as handle:
        state = json.load(handle)
    training_state = torch.load(os.path.join(path, "training_state.pt"), weights_only=False)
    with open(os.path.join(path, "candidates.pkl"), "rb") as handle:
        candidates = pickle.load(handle)
    return state, training_state, candidates
