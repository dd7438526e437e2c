"""Sample selection: strategies rank a scored candidate pool, a selector picks B of it and weights them.

Importing this package registers the built-in strategies (`STRATEGIES`); `make_strategy(cfg)` builds the one a
config names.
"""

from ol_ray.selection import diversity, mix, scores  # noqa: F401  (they register their strategies)
from ol_ray.selection.base import STRATEGIES, Ranking, Selection, Strategy
from ol_ray.selection.selector import Selector, make_strategy

__all__ = ["STRATEGIES", "Ranking", "Selection", "Selector", "Strategy", "make_strategy"]
