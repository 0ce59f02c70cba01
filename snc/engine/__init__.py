"""The task-agnostic engine: run identity, resume, checkpoints, loop, trackers, DDP, results.

``run(cfg)`` is the one entry (``snc.engine.runner``); tasks plug in through
:mod:`snc.tasks`.
"""

from typing import Any, Dict


def run(cfg) -> Dict[str, Any]:
    """Trains and evaluates the run of ``cfg`` (see :func:`snc.engine.runner.run`)."""
    from snc.engine.runner import run as _run  # imported here: eval/tasks import engine parts

    return _run(cfg)


__all__ = ["run"]
