"""What differs between model kinds: a sequence classifier (`classification`) and a causal LM (`causal_lm`), each a
`Task` registered under its `model.kind` (the contract is in `ol_ray.tasks.base`); `task_for(kind)` returns it.
Importing this package registers both."""

from ol_ray.tasks import causal_lm, classification  # noqa: F401  (they register their tasks)
from ol_ray.tasks.base import TASKS, Task, task_for

__all__ = ["TASKS", "Task", "task_for"]
