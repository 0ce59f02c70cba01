"""Tasks: what differs between classification, FixMatch, segmentation and text (see base.py).

``classify.py`` is the example to read; every task module is imported here so that
``task=<name>`` finds it.
"""

from snc.tasks import classify, dg, fixmatch, segment, text  # noqa: E402,F401  (registers them)
from snc.tasks.base import RunContext, Task, get_task, list_tasks, register_task

__all__ = ["RunContext", "Task", "get_task", "list_tasks", "register_task"]
