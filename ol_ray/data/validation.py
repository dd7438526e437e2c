"""Validation: parse raw records into (sample_id, text, label) rows, or quarantine them with a reason.

A causal-LM row (`model.kind: causal_lm`) is one of three shapes, tried in this order: `messages` (a chat: a list of
{role, content}, kept as JSON for the tokenizer's chat template), `prompt` + `response` (the prompt from one or more
fields), or `text` (language modelling on all of it). Its label is 0: a causal LM has no classes.

`parse_record` is plain Python; `validate_batch` is the Ray Data stage over a window (`map_batches`), which sends the
rejected rows to the quarantine sink and passes the good ones on. Nothing is dropped silently: every record read
either continues or becomes a quarantine record.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ol_ray.config.schema import Config
from ol_ray.data.source import RecordFormat

RAW_EXCERPT_CHARS = 500  # how much of a bad row the quarantine keeps
COLUMN_DEFAULTS = {"rating": 1.0}  # what a row from before a column existed (an older checkpoint's) counts as


@dataclass(frozen=True)
class FieldSpec:
    """What validation needs to know about the stream's rows."""

    text_field: str
    label_field: str
    id_field: str
    label_names: tuple[str, ...]
    num_labels: int
    max_text_chars: int
    max_record_bytes: int = 0
    causal_lm: bool = False  # rows are text, prompt/response or messages, without labels
    prompt_fields: tuple[str, ...] = ("prompt",)
    response_field: str = "response"
    messages_field: str = "messages"
    rating_field: str = ""

    @classmethod
    def from_config(cls, cfg: Config) -> "FieldSpec":
        s = cfg.stream
        return cls(s.text_field, s.label_field, s.id_field, s.label_names, cfg.model.num_labels, s.max_text_chars,
                   s.max_record_bytes, cfg.model.kind == "causal_lm", s.prompt_fields, s.response_field,
                   s.messages_field, s.rating_field)


class RowError(ValueError):
    """A row that cannot be used: `code` groups it (bad_label, empty_text, ...), the message is the reason, and
    `field` names the field at fault where one is ("" for the row as a whole)."""

    def __init__(self, code: str, reason: str, field: str = ""):
        super().__init__(reason)
        self.code, self.field = code, field


@dataclass(frozen=True)
class ValidRow:
    sample_id: str
    text: str  # the text; for causal-LM rows the response, or "" for messages
    label: int
    text_truncated: bool
    prompt: str = ""  # causal-LM prompt/response rows: the prompt (no loss on it)
    messages: str = ""  # causal-LM chat rows: the messages as JSON
    rating: float = 1.0  # causal-LM rows: the response's rating, which scales its training weight


def decode_fields(raw: bytes, record_format: RecordFormat) -> dict[str, Any]:
    if b"\x00" in raw:
        raise RowError("nul_bytes", "row contains NUL bytes")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RowError("undecodable", f"undecodable bytes: not valid UTF-8 at byte {error.start}") from None
    if not line.strip():
        raise RowError("empty_row", "empty row")
    if record_format.kind == "text":
        return {record_format.columns[0]: line}
    if record_format.kind == "json":
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise RowError("malformed_json", f"malformed JSON: {error.msg} at column {error.colno}") from None
        if not isinstance(value, dict):
            raise RowError("malformed_json", f"JSON row is a {type(value).__name__}, not an object")
        return value
    if record_format.kind == "tsv":
        values = line.split("\t")
    else:
        try:
            values = next(csv.reader([line], strict=True))
        except csv.Error as error:
            raise RowError("malformed_csv", f"malformed CSV: {error}") from None
    columns = record_format.columns
    if len(values) != len(columns):
        raise RowError("field_count", f"expected {len(columns)} fields ({', '.join(columns)}), got {len(values)}")
    return dict(zip(columns, values))


def _label(value: Any, spec: FieldSpec) -> int:
    if isinstance(value, bool) or value is None:
        raise RowError("bad_label", f"label {value!r} is not a class", spec.label_field)
    if isinstance(value, str):
        text = value.strip()
        if text in spec.label_names:
            return spec.label_names.index(text)
        try:
            value = int(text)
        except ValueError:
            names = f" or one of {', '.join(spec.label_names)}" if spec.label_names else ""
            raise RowError("bad_label", f"label {text!r} is not an integer{names}", spec.label_field) from None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise RowError("bad_label", f"label {value!r} is not an integer", spec.label_field)
        value = int(value)
    if not isinstance(value, int):
        raise RowError("bad_label", f"label {value!r} has type {type(value).__name__}, not an integer",
                       spec.label_field)
    if not 0 <= value < spec.num_labels:
        raise RowError("label_out_of_range", f"label {value} out of range [0, {spec.num_labels})", spec.label_field)
    return value


def _text(fields: dict[str, Any], name: str, allow_empty: bool = False) -> str:
    """The string in field `name`; RowError when it is absent, not a string, or (unless allowed) blank. Where
    blank is allowed, null is too (many data sets write "input": null)."""
    if name not in fields:
        raise RowError("missing_text", f"missing text field {name!r}", name)
    text = fields[name]
    if text is None and allow_empty:
        return ""
    if not isinstance(text, str):
        raise RowError("bad_text", f"text field {name!r} is a {type(text).__name__}, not a string", name)
    if not allow_empty and not text.strip():
        raise RowError("empty_text", f"empty text in field {name!r}", name)
    return text


def _messages(value: Any, name: str, max_chars: int) -> tuple[str, bool]:
    """A chat as canonical JSON: a list of {role, content} strings with at least one assistant turn to learn,
    each content cut at `max_chars` (and whether one was)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError("bad_messages", f"field {name!r} is not a JSON list of messages", name) from None
    if not isinstance(value, list) or not value:
        raise RowError("bad_messages", f"field {name!r} must be a non-empty list of {{role, content}} messages",
                       name)
    turns = []
    for position, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise RowError("bad_messages", f"message {position} of {name!r} is not a {{role, content}} of strings",
                           name)
        turns.append({"role": message["role"], "content": message["content"][:max_chars]})
    if not any(turn["role"] == "assistant" and turn["content"].strip() for turn in turns):
        raise RowError("bad_messages", f"field {name!r} has no assistant message to learn from", name)
    cut = any(len(message["content"]) > max_chars for message in value)
    return json.dumps(turns, ensure_ascii=False), cut


def _clip(text: str, limit: int, keep_end: bool = False) -> tuple[str, bool]:
    """`text` cut to `limit` characters (its start, or with `keep_end` its end), and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return (text[-limit:] if keep_end else text[:limit]), True


def _rating(fields: dict[str, Any], spec: FieldSpec) -> float:
    """The row's rating: a number from 0 to 1, or true/false (a thumbs up or down), as JSON or as text (CSV and TSV
    fields); 1 without one, or without `stream.rating_field`."""
    value = fields.get(spec.rating_field) if spec.rating_field else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1.0
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            value = {"true": True, "false": False}[text] if text in ("true", "false") else float(text)
        except ValueError:
            pass
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        raise RowError("bad_rating", f"rating {value!r} in field {spec.rating_field!r} is not a number from 0 to 1 "
                                     f"(or true/false)", spec.rating_field)
    return float(value)


def parse_lm_fields(sample_id: str, fields: dict[str, Any], spec: FieldSpec) -> ValidRow:
    """A causal-LM row: messages, else prompt/response, else text (texts, responses and message contents cut at
    max_text_chars keeping their start, prompts keeping their end, next to the response; counted), with its
    rating."""
    rating = _rating(fields, spec)
    if spec.messages_field in fields:
        messages, cut = _messages(fields[spec.messages_field], spec.messages_field, spec.max_text_chars)
        return ValidRow(sample_id, "", 0, cut, messages=messages, rating=rating)
    if spec.response_field in fields:
        response, cut = _clip(_text(fields, spec.response_field), spec.max_text_chars)
        parts = [_text(fields, name, allow_empty=True) for name in spec.prompt_fields if name in fields]
        if not any(part.strip() for part in parts):
            raise RowError("missing_text", f"no prompt in {', '.join(spec.prompt_fields)} beside the response",
                           spec.prompt_fields[0])
        prompt, prompt_cut = _clip("\n\n".join(part for part in parts if part.strip()), spec.max_text_chars,
                                   keep_end=True)
        return ValidRow(sample_id, response, 0, cut or prompt_cut, prompt=prompt, rating=rating)
    text, cut = _clip(_text(fields, spec.text_field), spec.max_text_chars)
    return ValidRow(sample_id, text, 0, cut, rating=rating)


def parse_record(sample_id: str, raw: bytes, record_format: RecordFormat, spec: FieldSpec) -> ValidRow:
    """One raw record as a valid row; raises RowError with the quarantine reason otherwise."""
    fields = decode_fields(raw, record_format)
    if spec.id_field:
        value = fields.get(spec.id_field)
        if value is None or str(value).strip() == "":
            raise RowError("missing_id", f"missing id field {spec.id_field!r}", spec.id_field)
        sample_id = str(value).strip()
    if spec.causal_lm:
        return parse_lm_fields(sample_id, fields, spec)
    text = _text(fields, spec.text_field)
    if spec.label_field not in fields:
        raise RowError("missing_label", f"missing label field {spec.label_field!r}", spec.label_field)
    label = _label(fields[spec.label_field], spec)
    text, truncated = _clip(text, spec.max_text_chars)
    return ValidRow(sample_id, text, label, truncated)


def quarantine_record(sample_id: str, raw: bytes, error: RowError, window: int, origin: str = "") -> dict[str, Any]:
    """What the quarantine file keeps of a rejected row: its id, the reason, where (the window, and the source's
    origin fields such as Kafka's topic, partition and offset), and an excerpt."""
    excerpt = raw[: RAW_EXCERPT_CHARS * 4].decode("utf-8", errors="replace")[:RAW_EXCERPT_CHARS]
    where = json.loads(origin) if origin else {}
    return {"sample_id": sample_id, "code": error.code, "reason": str(error), "window": window, **where,
            "raw": excerpt}


def split_records(sample_ids: Sequence[str], raws: Sequence[bytes], record_format: RecordFormat, spec: FieldSpec,
                  window: int, origins: Optional[Sequence[str]] = None) -> tuple[list[ValidRow], list[dict[str, Any]]]:
    """Valid rows and quarantine records for a list of raw records (plain Python; no Ray)."""
    good, bad = [], []
    origins = [""] * len(sample_ids) if origins is None else origins
    for sample_id, raw, origin in zip(sample_ids, raws, origins):
        raw = bytes(raw)
        try:
            if spec.max_record_bytes and len(raw) > spec.max_record_bytes:
                raise RowError("oversize", f"row of {len(raw)}+ bytes is over stream.max_record_bytes "
                                           f"({spec.max_record_bytes})")
            good.append(parse_record(str(sample_id), raw, record_format, spec))
        except RowError as error:
            bad.append(quarantine_record(str(sample_id), raw, error, window, str(origin or "")))
    return good, bad


def rows_to_columns(rows: list[ValidRow], window: int, causal_lm: bool = False) -> dict[str, np.ndarray]:
    """Valid rows as the columns later stages take, each tagged with its window (for the ledger); causal-LM rows
    also carry their prompt, messages and rating."""
    columns = {
        "sample_id": np.array([r.sample_id for r in rows], dtype=object),
        "text": np.array([r.text for r in rows], dtype=object),
        "label": np.array([r.label for r in rows], dtype=np.int64),
        "text_truncated": np.array([r.text_truncated for r in rows], dtype=bool),
        "window": np.full(len(rows), window, dtype=np.int64),
    }
    if causal_lm:
        columns["prompt"] = np.array([r.prompt for r in rows], dtype=object)
        columns["messages"] = np.array([r.messages for r in rows], dtype=object)
        columns["rating"] = np.array([r.rating for r in rows], dtype=np.float32)
    return columns


def validate_batch(batch: dict[str, np.ndarray], record_format: RecordFormat, spec: FieldSpec, window: int,
                   quarantine: Optional[Any] = None) -> dict[str, np.ndarray]:
    """Ray Data stage: keep the valid rows, send the others to the quarantine sink actor (and wait for it to take
    them, so none is lost if this worker dies after returning)."""
    good, bad = split_records(batch["sample_id"], batch["raw"], record_format, spec, window, batch.get("origin"))
    if bad:
        if quarantine is None:
            raise RuntimeError(f"{len(bad)} bad rows and no quarantine sink to take them")
        import ray

        ray.get(quarantine.write.remote(bad))
    return rows_to_columns(good, window, spec.causal_lm)
