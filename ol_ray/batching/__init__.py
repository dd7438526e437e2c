"""Batch-size policies: how many samples the next update uses, and when.

Importing this package registers the built-in policies (`POLICIES`); `make_policy(cfg)` builds the one a config names.
"""

from ol_ray.batching.base import POLICIES, BatchContext, Policy
from ol_ray.batching.policies import make_policy

__all__ = ["POLICIES", "BatchContext", "Policy", "make_policy"]
