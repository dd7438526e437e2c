"""Checkpoints: written to a temporary folder and renamed into place, so a crash never leaves half a checkpoint.

Layout of `<run_dir>/checkpoints/step-00000400/`:
    model/                Hugging Face save_pretrained format (safetensors weights and the tokenizer)
    training_state.pt     optimizer, learning-rate scheduler and torch RNG state: tensors and plain values only,
                          loaded with torch.load(weights_only=True)
    candidates.npz/.json  scored candidates received but not yet used (numeric columns / ids and token ids)
    replay.npz/.json      the replay buffer's samples, when the run replays (continual.replay_size > 0)
    state.json            counters, ledger, weight version, stream cursor, window index, selection RNG state
    arrays.npz            large numeric state: the 64-bit hashes of the sample ids received (duplicate detection)
    manifest.json         every other file's size and SHA-256, written last
`checkpoints/latest` names the newest complete checkpoint. Every file and folder is fsynced before the rename, and
older checkpoints are deleted only after the new one is complete. Loading checks the manifest first: a missing,
truncated or altered file makes the checkpoint unreadable (CheckpointError), which is the only failure a restore may
skip. Nothing is unpickled when loading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import Any, Iterator, Optional

import numpy as np
import torch

LATEST = "latest"
MANIFEST = "manifest.json"
logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read."""


def _write_atomically(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _files_under(folder: str) -> list[str]:
    """Paths of the files under `folder`, relative to it, sorted."""
    return sorted(os.path.relpath(os.path.join(top, name), folder)
                  for top, _, names in os.walk(folder) for name in names)


def _fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _seal(folder: str) -> None:
    """Write the manifest of `folder` (each file's size and SHA-256), then fsync every file and folder in it."""
    files = {name: {"bytes": os.path.getsize(os.path.join(folder, name)), "sha256": _sha256(os.path.join(folder, name))}
             for name in _files_under(folder)}
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as handle:
        json.dump(files, handle, indent=1)
    for name in _files_under(folder):
        _fsync(os.path.join(folder, name))
    for top, _, _ in os.walk(folder, topdown=False):
        _fsync(top)


def verify_checkpoint(path: str) -> None:
    """Raise CheckpointError unless every file the manifest lists is there with its size and SHA-256. (Checkpoints
    from before manifests have none; their files are checked by parsing them.)"""
    manifest = os.path.join(path, MANIFEST)
    if not os.path.exists(manifest) and os.path.isfile(os.path.join(path, "state.json")):
        return
    try:
        with open(manifest, encoding="utf-8") as handle:
            files = json.load(handle)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is unreadable: its manifest: {error}") from None
    for name, expected in files.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise CheckpointError(f"checkpoint {path} is unreadable: {name} is missing")
        if os.path.getsize(file) != expected["bytes"]:
            raise CheckpointError(f"checkpoint {path} is unreadable: {name} has {os.path.getsize(file)} bytes, "
                                  f"{expected['bytes']} were written")
        if _sha256(file) != expected["sha256"]:
            raise CheckpointError(f"checkpoint {path} is unreadable: {name} fails its checksum")


def save_columns(folder: str, columns: dict[str, np.ndarray], name: str = "candidates") -> None:
    """Sample columns without pickle: fixed-shape numeric columns in <name>.npz, ids and token ids in <name>.json."""
    numeric = {k: v for k, v in columns.items() if v.dtype != object}
    ragged = {k: [item.tolist() if isinstance(item, np.ndarray) else item for item in v]
              for k, v in columns.items() if v.dtype == object}
    np.savez(os.path.join(folder, f"{name}.npz"), **numeric)
    with open(os.path.join(folder, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump(ragged, handle)


def load_columns(folder: str, name: str = "candidates") -> dict[str, np.ndarray]:
    """The columns `save_columns` wrote; token-id lists come back as int32 arrays, ids as strings."""
    with np.load(os.path.join(folder, f"{name}.npz"), allow_pickle=False) as numeric:
        columns = {key: numeric[key] for key in numeric.files}
    with open(os.path.join(folder, f"{name}.json"), encoding="utf-8") as handle:
        for key, values in json.load(handle).items():
            column = np.empty(len(values), dtype=object)
            column[:] = [np.asarray(v, dtype=np.int32) if isinstance(v, list) else v for v in values]
            columns[key] = column
    return columns


def save_checkpoint(root: str, step: int, model: Any, tokenizer: Any, training_state: dict[str, Any],
                    candidates: dict[str, np.ndarray], state: dict[str, Any], keep: int,
                    arrays: Optional[dict[str, np.ndarray]] = None,
                    replay: Optional[dict[str, np.ndarray]] = None) -> str:
    """Write checkpoint `step` under `root` and keep only the `keep` newest; returns its folder. `arrays` (large
    numeric state, such as the seen ids' hashes) go to arrays.npz rather than into state.json; `replay` (the replay
    buffer's columns) to replay.npz/.json."""
    os.makedirs(root, exist_ok=True)
    name = f"step-{step:08d}"
    final = os.path.join(root, name)
    tmp = os.path.join(root, f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(os.path.join(tmp, "model"))
    tokenizer.save_pretrained(os.path.join(tmp, "model"))
    torch.save(training_state, os.path.join(tmp, "training_state.pt"))
    save_columns(tmp, candidates)
    if replay is not None:
        save_columns(tmp, replay, "replay")
    np.savez(os.path.join(tmp, "arrays.npz"), **(arrays or {}))
    with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=1)
    _seal(tmp)
    if os.path.exists(final):  # the same step again: move the old one aside, never delete what `latest` names first
        aside = os.path.join(root, f".old-{name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
        os.replace(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync(root)
    _write_atomically(os.path.join(root, LATEST), name)
    _fsync(root)
    for old in sorted(d for d in os.listdir(root) if d.startswith("step-"))[:-keep]:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def folder_mb(path: str) -> float:
    """The size of the files under `path`, in MiB."""
    total = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names)
    return total / 2**20


def checkpoints_newest_first(root: str) -> Iterator[str]:
    """Complete checkpoint folders under `root`, the one `latest` names first, then the others from newest."""
    try:
        with open(os.path.join(root, LATEST), encoding="utf-8") as handle:
            named = handle.read().strip()
    except FileNotFoundError:
        named = ""
    folders = sorted((d for d in os.listdir(root) if d.startswith("step-")), reverse=True) \
        if os.path.isdir(root) else []
    for name in ([named] if named in folders else []) + [d for d in folders if d != named]:
        yield os.path.join(root, name)


def latest_checkpoint(root: str) -> Optional[str]:
    """The newest checkpoint folder under `root` that has its state file, or None."""
    for path in checkpoints_newest_first(root):
        if os.path.isfile(os.path.join(path, "state.json")):
            return path
    return None


def newest_readable_state(root: str) -> Optional[dict[str, Any]]:
    """The state.json of the newest checkpoint under `root` that parses, or None. (The driver's check before Ray
    starts reads only this file; the learner verifies the whole checkpoint once, when it restores it.)"""
    for path in checkpoints_newest_first(root):
        try:
            with open(os.path.join(path, "state.json"), encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            continue
    return None


def load_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """(state, training_state, candidates) of a checkpoint folder, loading no pickled objects (the arrays saved
    apart are in state["arrays"], the replay buffer's columns in state["replay_columns"]); raises
    CheckpointError naming the folder when any part is missing or corrupt (the model's files included: they are in
    the manifest). The model loads from `path/model`."""
    verify_checkpoint(path)
    try:
        with open(os.path.join(path, "state.json"), encoding="utf-8") as handle:
            state = json.load(handle)
        training_state = torch.load(os.path.join(path, "training_state.pt"), weights_only=True)
        candidates = load_columns(path)
        if os.path.exists(os.path.join(path, "arrays.npz")):  # absent in checkpoints written before it existed
            with np.load(os.path.join(path, "arrays.npz"), allow_pickle=False) as arrays:
                state["arrays"] = {key: arrays[key] for key in arrays.files}
        if os.path.exists(os.path.join(path, "replay.npz")):
            state["replay_columns"] = load_columns(path, "replay")
    except Exception as error:  # json, zip, torch and OS errors all mean the same: this checkpoint is unusable
        raise CheckpointError(f"checkpoint {path} is unreadable: {type(error).__name__}: {error}") from None
    return state, training_state, candidates
