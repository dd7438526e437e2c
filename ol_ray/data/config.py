"""The stream section: where samples come from and how rows are read (`ol_ray.data`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ol_ray.errors import require


@dataclass(frozen=True)
class DomainConfig:
    """A data file of one domain: a phase of the stream (stream.phases) or an evaluation set (eval.sets). Empty
    fields take the stream's value."""

    name: str = ""  # names the phase or set in metrics; a phase and a set of the same name are the same domain
    path: str = ""  # the data file
    format: Literal["", "auto", "tsv", "csv", "jsonl", "json", "parquet", "text"] = ""  # "" = stream.format
    text_field: str = ""  # "" = stream.text_field
    label_field: str = ""  # "" = stream.label_field
    label_names: tuple[str, ...] = ()  # () = stream.label_names
    id_field: str = ""  # "" = stream.id_field
    max_samples: int = 0  # read at most this many rows of the file; 0 = all of it
    skip: int = 0  # evaluation sets only: leave out this many rows first (a file's tail as the set)


@dataclass(frozen=True)
class StreamConfig:
    # where samples come from; feedback: the log `path` that a server appends labelled items to, followed
    source: Literal["file", "directory", "memory", "hub", "kafka", "feedback"] = "file"
    path: str = ""  # a data file (file source) or a folder of data files (directory source)
    # file format; auto = from the extension (.json: a JSON array of objects, or JSON lines); text = paragraphs
    format: Literal["auto", "tsv", "csv", "jsonl", "json", "parquet", "text"] = "auto"
    text_field: str = "text"  # column or JSON key holding the text
    label_field: str = "label"  # column or JSON key holding the label (an integer, or a name from label_names)
    prompt_fields: tuple[str, ...] = ("prompt",)  # causal_lm: fields forming the prompt (no loss on it), joined by
    #   blank lines with empty ones left out, e.g. [instruction, input]
    response_field: str = "response"  # causal_lm: the field the loss is on in prompt/response rows
    messages_field: str = "messages"  # causal_lm: chat rows, a list of {role, content}; the loss is on assistant turns
    rating_field: str = ""  # causal_lm: the field of a response's rating from 0 to 1 (true/false: a thumbs up/down),
    #   which scales its training weight (0 trains nothing on it, 1 fully; rows without one count 1); "" = none
    chat_template: bool = False  # causal_lm: prompt/response rows become a user and an assistant turn of the
    #   tokenizer's chat template (as messages rows always do, when the tokenizer has one)
    id_field: str = ""  # column holding a stable sample id; empty: "<file name>:<row number>"
    label_names: tuple[str, ...] = ()  # label names in class order, for data whose labels are strings
    window_size: int = 1024  # samples per window: the unit of cursor, ledger and checkpoint (not of scoring)
    max_window_wait_s: float = 5.0  # a slow stream emits a partial window after this many seconds
    read_ahead_windows: int = 2  # windows framed ahead of admission (a slow source keeps the scorers fed)
    max_samples: int = 0  # sample budget: stop after reading this many rows; 0 = no budget
    rate: float = 0.0  # replay rate in samples per second, so a finite file arrives like a live stream; 0 = unpaced
    shuffle_seed: Optional[int] = None  # replay a finite file in a seeded random order; null keeps file order
    poll_interval_s: float = 1.0  # directory and kafka sources: how often to look for new files or messages
    idle_timeout_s: float = 30.0  # directory, and kafka with kafka_follow: stop after this long idle; 0 = never stop
    max_text_chars: int = 2000  # longer texts are truncated to this many characters (and counted)
    max_record_bytes: int = 10_000_000  # rows (messages) over this many bytes are quarantined as oversize; 0 = no limit
    kafka_servers: str = ""  # kafka source: bootstrap servers, host:port[,host:port...]
    kafka_topics: tuple[str, ...] = ()  # kafka source: topics to read (every partition of each)
    kafka_options: dict[str, str] = field(default_factory=dict)  # librdkafka consumer settings, e.g. sasl.username
    kafka_start: Literal["earliest", "latest"] = "earliest"  # kafka: where partitions without a saved offset begin
    kafka_follow: bool = False  # kafka: after catching up keep waiting for new messages (until idle_timeout_s)
    kafka_key_as_id: bool = False  # kafka: the producer keeps message keys unique, so a key is the sample id
    #   (else the id is topic:partition:offset; keys repeat on a topic keyed by entity, and repeats are duplicates)
    kafka_group_id: str = ""  # kafka: commit each checkpoint's offsets to this consumer group (visibility only)
    hub_dataset: str = ""  # Hugging Face dataset read through `datasets` (source: hub, or hub_fallback)
    hub_fallback: bool = False  # read hub_dataset where `path` (or eval.path) does not exist; else that is an error
    hub_config: str = ""  # its configuration name, if it has several
    hub_split: str = "train"  # its split
    # a stream in phases, one file after another (a domain shift): SST-2, then airline tweets; replaces `path`
    phases: tuple[DomainConfig, ...] = ()


def check_stream(s: StreamConfig) -> None:
    """The stream section's own rules (those involving other sections are in `ol_ray.config.checks`)."""
    if s.source in ("file", "directory"):
        require(bool(s.path) or bool(s.hub_dataset) or bool(s.phases),
                f"stream.path (or stream.phases) is required for stream.source={s.source}")
    if s.source == "feedback":
        require(bool(s.path), "stream.path must name the feedback log for stream.source=feedback")
    if s.source == "hub":
        require(bool(s.hub_dataset), "stream.hub_dataset is required for stream.source=hub")
    if s.source == "kafka":
        require(bool(s.kafka_servers), "stream.kafka_servers is required for stream.source=kafka (host:port)")
        require(bool(s.kafka_topics), "stream.kafka_topics must name at least one topic for stream.source=kafka")
    require(s.max_record_bytes >= 0, f"stream.max_record_bytes must be 0 (no limit) or positive; got "
                                     f"{s.max_record_bytes}")
    require(s.window_size >= 1, f"stream.window_size must be at least 1; got {s.window_size}")
    require(s.max_samples >= 0, f"stream.max_samples must be 0 (no budget) or positive; got {s.max_samples}")
    require(s.rate >= 0, f"stream.rate must be 0 (unpaced) or positive; got {s.rate}")
    require(s.poll_interval_s > 0, f"stream.poll_interval_s must be positive; got {s.poll_interval_s}")
    require(s.idle_timeout_s >= 0, f"stream.idle_timeout_s must be 0 (never) or positive; got {s.idle_timeout_s}")
    require(s.max_window_wait_s > 0, f"stream.max_window_wait_s must be positive; got {s.max_window_wait_s}")
    require(s.read_ahead_windows >= 1, f"stream.read_ahead_windows must be at least 1; got {s.read_ahead_windows}")
    require(s.max_text_chars >= 1, f"stream.max_text_chars must be at least 1; got {s.max_text_chars}")
    require(bool(s.text_field), "stream.text_field must name a column")
    require(bool(s.label_field), "stream.label_field must name a column")
    for i, phase in enumerate(s.phases):
        require(phase.skip == 0, f"stream.phases[{i}].skip is for evaluation sets; a phase reads its whole file "
                                 f"(or its first max_samples rows)")
    if s.phases:
        require(s.source == "file", f"stream.phases read files one after another: set stream.source=file "
                                    f"(got {s.source})")
