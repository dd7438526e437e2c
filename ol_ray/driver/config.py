"""The ray section: which Ray a run starts or joins (`ol_ray.driver`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ol_ray.errors import require


@dataclass(frozen=True)
class RayConfig:
    address: str = ""  # Ray to join ("auto": one `ray start` ran here); empty: RAY_ADDRESS, else a new local Ray
    num_cpus: Optional[int] = None  # local Ray only: logical CPUs (null = all cores)
    object_store_mb: int = 0  # local Ray only: object store size in MiB; 0 = Ray's default
    include_dashboard: bool = True  # local Ray only: start the dashboard (metrics, timeline, state API)


def check_ray(r: RayConfig) -> None:
    """The ray section's own rules."""
    require(r.num_cpus is None or r.num_cpus >= 1, f"ray.num_cpus must be at least 1; got {r.num_cpus}")
    require(r.object_store_mb >= 0, f"ray.object_store_mb must not be negative; got {r.object_store_mb}")
