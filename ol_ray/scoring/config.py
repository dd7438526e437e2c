"""The scoring section: the scorer actor pool (`ol_ray.scoring`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ol_ray.errors import require


@dataclass(frozen=True)
class ScoringConfig:
    num_scorers: int = 1  # scorer actors, started once per run (a dead one is restarted by Ray)
    max_scorers: int = 0  # grow the pool up to this many while every scorer has a backlog (CPU only); 0 = num_scorers
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per scorer, e.g. {scorer: 1}
    batch_size: int = 64  # samples per scorer call at most (a chunk of the stream admitted at once)
    chunks_per_scorer: int = 2  # chunks queued at one scorer at most: the next is there when one finishes
    num_cpus: float = 0.5  # logical CPUs per scorer actor
    num_gpus: float = 0.0  # GPUs per scorer actor; > 0 places scorers on GPU workers
    torch_threads: int = 1  # torch intra-op threads per scorer
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast for scoring (GPU, or a CPU with AMX/AVX512-BF16)
    micro_batch_tokens: int = 512  # score in length-sorted micro-batches of at most this many padded tokens; 0 = off
    max_lead_updates: int = 2  # pools scored ahead of the learner's next one, at most (bounds staleness); 0 = lockstep
    preserve_order: bool = True  # hand scored samples to the learner in stream order: same config, same run
    grad_norm: Literal["last_layer", "exact"] = "last_layer"  # head closed form, or all parameters via torch.func


def check_scoring(sc: ScoringConfig) -> None:
    """The scoring section's own rules."""
    require(sc.num_scorers >= 1, f"scoring.num_scorers must be at least 1; got {sc.num_scorers}")
    require(sc.max_scorers == 0 or sc.max_scorers >= sc.num_scorers,
            f"scoring.max_scorers must be 0 or at least scoring.num_scorers ({sc.num_scorers}); got {sc.max_scorers}")
    require(sc.num_gpus == 0 or sc.max_scorers in (0, sc.num_scorers),
            "scoring.max_scorers must equal scoring.num_scorers for GPU scorers: pin GPU scorer pools")
    require(sc.max_lead_updates >= 0, f"scoring.max_lead_updates must not be negative (0 = lockstep); got "
                                      f"{sc.max_lead_updates}")
    for name, amount in sc.resources.items():
        require(amount > 0, f"scoring.resources.{name} must be a positive amount; got {amount}")
    require(sc.batch_size >= 1, f"scoring.batch_size must be at least 1; got {sc.batch_size}")
    require(sc.chunks_per_scorer >= 1, f"scoring.chunks_per_scorer must be at least 1; got {sc.chunks_per_scorer}")
    require(sc.num_cpus >= 0 and sc.num_gpus >= 0, "scoring.num_cpus and scoring.num_gpus must not be negative")
    require(sc.torch_threads >= 1, f"scoring.torch_threads must be at least 1; got {sc.torch_threads}")
    require(sc.micro_batch_tokens >= 0, f"scoring.micro_batch_tokens must be 0 (off) or positive; got "
                                        f"{sc.micro_batch_tokens}")
