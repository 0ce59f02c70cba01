"""The Tracker protocol: every sink gets the same calls, in this order:
``start`` once, ``log`` any number of times, ``summary`` with the final results, ``finish``."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence


class Tracker(Protocol):
    def start(self, config: Dict[str, Any], *, name: str, group: str, job_type: str,
              tags: Sequence[str], resume_id: Optional[str] = None) -> Optional[str]:
        """Opens the run; returns an id to store for resuming (or None)."""

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Time series: per-step loss/lr, per-epoch metrics."""

    def replay(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """A resumed run: the local history so far (``metrics.jsonl`` rows, with ``step``)."""

    def summary(self, results: Mapping[str, Any]) -> None:
        """Final results (clean error, corruption errors, mCE)."""

    def finish(self, status: str = "finished") -> None:
        """Closes the run; ``status`` is ``finished`` or ``failed``."""


class Trackers:
    """Fans every call out to several sinks."""

    def __init__(self, sinks: List[Tracker]) -> None:
        self.sinks = sinks

    def start(self, config, *, name, group, job_type, tags, resume_ids=None) -> Dict[str, str]:
        ids = {}
        for sink in self.sinks:
            key = type(sink).__name__
            run_id = sink.start(config, name=name, group=group, job_type=job_type, tags=tags,
                                resume_id=(resume_ids or {}).get(key))
            if run_id:
                ids[key] = run_id
        return ids

    def log(self, metrics, step) -> None:
        for sink in self.sinks:
            sink.log(metrics, step)

    def replay(self, rows) -> None:
        for sink in self.sinks:
            sink.replay(rows)

    def summary(self, results) -> None:
        for sink in self.sinks:
            sink.summary(results)

    def finish(self, status: str = "finished") -> None:
        for sink in self.sinks:
            sink.finish(status)
