"""The serve section: how `ol-ray serve` deploys a run's model with Ray Serve (`ol_ray.serve`)."""

from __future__ import annotations

from dataclasses import dataclass

from ol_ray.errors import require


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # where the HTTP server listens; beyond loopback /feedback needs the bearer token
    port: int = 8000  # its port
    replicas: int = 1  # Serve replicas of the model
    num_cpus: float = 0.5  # logical CPUs per replica
    num_gpus: float = 0.0  # GPUs per replica; > 0 serves on the GPU
    torch_threads: int = 1  # torch intra-op threads per replica
    max_batch_size: int = 16  # concurrent /predict requests batched into one forward pass at most
    batch_wait_s: float = 0.01  # how long a batch waits for more requests
    max_ongoing_requests: int = 32  # requests a replica holds at once (Serve's default of 5 would cap every batch
    #   at 5); at least max_batch_size
    max_request_bytes: int = 1_000_000  # larger request bodies get HTTP 413
    max_items: int = 64  # texts per /predict request and items per /feedback request at most
    max_new_tokens: int = 64  # /generate: the most tokens a request may ask for (and the default)
    refresh_every_s: float = 0.5  # a replica checks the run's weight store for a newer version this often
    token_env: str = "OL_RAY_FEEDBACK_TOKEN"  # environment variable holding /feedback's bearer token
    require_token: bool = False  # ask /feedback for the token on loopback too (beyond loopback it is always asked)
    feedback_path: str = ""  # the feedback log /feedback appends to; "" = <run_dir>/feedback.jsonl
    feedback_topic: str = ""  # stream.source kafka: the topic /feedback produces to; "" = the first of
    #   stream.kafka_topics (it must be one of them, or the run would never read it)


def check_serve(s: ServeConfig) -> None:
    """The serve section's own rules."""
    require(bool(s.host), "serve.host must name an address to listen on, e.g. 127.0.0.1")
    require(0 < s.port < 65536, f"serve.port must be a TCP port; got {s.port}")
    require(s.replicas >= 1, f"serve.replicas must be at least 1; got {s.replicas}")
    require(s.num_cpus >= 0 and s.num_gpus >= 0, "serve.num_cpus and serve.num_gpus must not be negative")
    require(s.torch_threads >= 1, f"serve.torch_threads must be at least 1; got {s.torch_threads}")
    require(s.max_batch_size >= 1, f"serve.max_batch_size must be at least 1; got {s.max_batch_size}")
    require(s.max_ongoing_requests >= s.max_batch_size, f"serve.max_ongoing_requests ({s.max_ongoing_requests}) "
            f"must be at least serve.max_batch_size ({s.max_batch_size}), or batches never fill")
    require(s.batch_wait_s >= 0, f"serve.batch_wait_s must not be negative; got {s.batch_wait_s}")
    require(s.max_request_bytes >= 1, f"serve.max_request_bytes must be at least 1; got {s.max_request_bytes}")
    require(s.max_items >= 1, f"serve.max_items must be at least 1; got {s.max_items}")
    require(s.max_new_tokens >= 1, f"serve.max_new_tokens must be at least 1; got {s.max_new_tokens}")
    require(s.refresh_every_s > 0, f"serve.refresh_every_s must be positive; got {s.refresh_every_s}")
    require(bool(s.token_env), "serve.token_env must name the environment variable of /feedback's token")
