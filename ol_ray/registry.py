"""Registries by decorator: components of one kind (selection strategies, batch policies) looked up by name.

    @STRATEGIES.register("margin", configured=False)
    class MarginSelection: ...

A plug-in registers its own component the same way, in code run before the config is loaded. The config names a
component; it never imports one, so the registries are filled by importing the parts (`ol_ray` imports the built-in
ones). The Ray actors that build components run in other processes: the driver sends them the factories a config
names (`entries`, pickled with the actor's arguments: by value when defined in a script or notebook, by reference
to their module otherwise, which the workers must then import, e.g. from the job's working_dir), and they `adopt`
them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from ol_ray.errors import ConfigError

T = TypeVar("T")


class Registry:
    """Named factories of one kind. A factory is called with its config section (`configured=True`, the default)
    or with nothing."""

    def __init__(self, kind: str, key: str):
        self.kind, self.key = kind, key  # e.g. "selection strategy", "selection.strategy" (the config key naming it)
        self._factories: dict[str, tuple[Callable[..., Any], bool]] = {}

    def register(self, name: str, *, configured: bool = True) -> Callable[[T], T]:
        """Decorator adding a class or function under `name`; a name is registered once."""
        def add(factory: T) -> T:
            if name in self._factories and self._factories[name][0] is not factory:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._factories[name] = (factory, configured)  # type: ignore[assignment]
            return factory
        return add

    def check(self, name: str) -> None:
        """ConfigError naming the config key and the registered names unless `name` is one of them."""
        if name not in self._factories:
            raise ConfigError(f"{self.key} must be one of {', '.join(self.names())}; got {name!r}")

    def build(self, name: str, section: Any) -> Any:
        """The component `name`, made from its config section."""
        self.check(name)
        factory, configured = self._factories[name]
        return factory(section) if configured else factory()

    def entries(self, names: Iterable[str]) -> dict[str, tuple[Callable[..., Any], bool]]:
        """The factories of `names` (each checked), to hand to another process's registry."""
        for name in names:
            self.check(name)
        return {name: self._factories[name] for name in names}

    def adopt(self, entries: Mapping[str, tuple[Callable[..., Any], bool]]) -> None:
        """Register factories another process's registry handed over (`entries`); names known here are kept."""
        for name, (factory, configured) in entries.items():
            self._factories.setdefault(name, (factory, configured))

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)
