"""The state contract: a stateful part (a selection strategy, a batch policy, the continual-learning state) offers
`state_dict() -> dict` (JSON-able) and `load_state_dict(state)`; a part without them is stateless. A checkpoint saves
the learner's parts by name (`save_parts`) and a resume hands each its own state back (`load_parts`)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol, runtime_checkable


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict` gave."""


def state_of(part: Any) -> Optional[dict[str, Any]]:
    """A stateful part's state; None for a stateless one (nothing to save)."""
    return part.state_dict() if isinstance(part, Stateful) else None


def restore_state(part: Any, state: Optional[dict[str, Any]]) -> None:
    """Give a part its saved state (nothing saved, or a stateless part: nothing to do)."""
    if state is not None and isinstance(part, Stateful):
        part.load_state_dict(state)


def save_parts(parts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each stateful part's state by name, as a checkpoint's state.json holds it under "parts" (a stateless part has
    none, so a resume may swap it for another stateless one)."""
    states = {name: state_of(part) for name, part in parts.items()}
    return {name: state for name, state in states.items() if state is not None}


def load_parts(parts: Mapping[str, Any], saved: Mapping[str, Optional[dict[str, Any]]]) -> None:
    """Each part its own saved state, by name; a part the checkpoint has no state for starts fresh."""
    for name, part in parts.items():
        restore_state(part, saved.get(name))
