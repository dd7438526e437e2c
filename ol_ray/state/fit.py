"""Whether a checkpoint's strategy and policy state fits the config a run resumes with.

A resume may change the config (`ol-ray run --resume RUN_DIR key=value`), and a changed selection strategy or batch
policy may no longer take the state its predecessor saved (coverage's centroids are not diversity's memory; the
adaptive policy's statistics are not a periodic one's). Such a resume is refused in one sentence naming the key,
before Ray starts and again in the learner, rather than failing deep in a load_state_dict or, worse, setting
whatever attributes the saved state names. A change whose state fits (between stateless strategies, or a stateless
one to a stateful one, which starts fresh) is allowed.
"""

from __future__ import annotations

from typing import Any, Optional

from ol_ray.batching.policies import make_policy
from ol_ray.config.schema import Config
from ol_ray.selection.selector import make_strategy
from ol_ray.state.contract import state_of

__all__ = ["StateMismatch", "check_state_fits", "first_mismatch", "component_names"]


class StateMismatch(ValueError):
    """A checkpoint's saved state that the configured component cannot take."""


def component_names(cfg: Config) -> dict[str, str]:
    """What the checkpoint records of the config, so a mismatch can name what the state was saved for."""
    return {"strategy_name": cfg.selection.strategy, "policy_name": cfg.batching.policy}


def first_mismatch(saved: Any, current: Any, prefix: str = "") -> Optional[str]:
    """The first key (dotted) where two state dicts differ in structure: a key only one has, or a dict against a
    value; None when they have the same keys all the way down (values, None included, may differ)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current), key=str):
            if key not in saved or key not in current:
                return prefix + str(key)
            deeper = first_mismatch(saved[key], current[key], f"{prefix}{key}.")
            if deeper:
                return deeper
        return None
    if isinstance(saved, dict) != isinstance(current, dict):
        return prefix.rstrip(".") or "(all of it)"
    return None


def saved_parts(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's parts by name; a checkpoint from before the state contract kept them under their own keys."""
    if "parts" in state:
        return state["parts"]
    legacy = {"strategy": state.get("strategy_state"), "policy": state.get("policy_state"),
              "continual": state.get("continual")}
    return {name: part for name, part in legacy.items() if part is not None}


def check_state_fits(cfg: Config, state: dict[str, Any], strategy: Any = None, policy: Any = None) -> None:
    """Raise StateMismatch when the checkpoint `state` (its state.json) holds strategy or policy state that the
    strategy or policy about to take it (`strategy`, `policy`; by default the ones `cfg` names) cannot take."""
    parts = [("selection.strategy", "strategy", strategy or make_strategy(cfg.selection), cfg.selection.strategy),
             ("batching.policy", "policy", policy or make_policy(cfg.batching), cfg.batching.policy)]
    for config_key, part, component, name in parts:
        saved = saved_parts(state).get(part)
        if saved is None:  # nothing was saved: whatever is configured starts fresh
            continue
        current = state_of(component)
        key = "(all of it)" if current is None else first_mismatch(saved, current)
        if key is None:
            continue
        was = state.get(f"{part}_name")
        raise StateMismatch(
            f"the checkpoint's {part} state was saved by {config_key}={was or '(another)'} and does not fit "
            f"{config_key}={name} (state key {key!r}): resume with {config_key}={was or 'its original value'}, or "
            f"start a new run")
