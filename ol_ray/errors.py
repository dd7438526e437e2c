"""The error every part raises for a configuration that cannot run, at the bottom of the package so any part may."""


class ConfigError(ValueError):
    """A configuration that cannot run: the message names the key and what it accepts."""


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds."""
    if not condition:
        raise ConfigError(message)
