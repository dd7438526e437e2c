"""A Hugging Face dataset as a stream, read through `datasets` (stream.source: hub, or stream.hub_fallback)."""

from __future__ import annotations

from typing import Any, Iterator, Optional

from ol_ray.data.config import StreamConfig
from ol_ray.data.files import json_bytes
from ol_ray.data.source import Record, RecordFormat, SourceError

ROW_KEY = "__ol_ray_row__"


class HubSource:
    """A Hugging Face dataset (hub id or local dataset folder) read through `datasets` in streaming mode."""

    def __init__(self, cfg: StreamConfig, split: str, cursor: Optional[dict[str, Any]] = None):
        try:
            import datasets
        except ImportError:
            raise SourceError("reading a Hugging Face dataset needs `datasets`: pip install 'ol_ray[hub]'") from None
        self.name = f"{cfg.hub_dataset}/{split}"
        self.row = int((cursor or {}).get("row", 0))
        try:
            dataset = datasets.load_dataset(cfg.hub_dataset, cfg.hub_config or None, split=split, streaming=True)
        except Exception as error:  # datasets raises many types; the message is what the user needs
            raise SourceError(f"cannot open Hugging Face dataset {cfg.hub_dataset!r} split {split!r}: {error}") \
                from None
        # number the rows before any shuffle, so a row keeps its id whatever the replay order
        dataset = dataset.map(lambda row, index: {ROW_KEY: index + 1}, with_indices=True)
        if cfg.shuffle_seed is not None:
            dataset = dataset.shuffle(seed=cfg.shuffle_seed, buffer_size=10_000)
        self.dataset = dataset.skip(self.row) if self.row else dataset

    def cursor(self) -> dict[str, Any]:
        return {"source": self.name, "row": self.row}

    def records(self) -> Iterator[Optional[Record]]:
        record_format = RecordFormat("json")
        for row in self.dataset:
            self.row += 1
            number = row.pop(ROW_KEY)
            yield Record(f"{self.name}:{number}", json_bytes(row), record_format)
