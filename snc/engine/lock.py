"""One process per run directory: an exclusive ``fcntl`` lock held for the run's life.

The lock file ``<run_dir>/.lock`` records who holds it (pid, host, start time), so a second
launch of the same command can say so and exit, or wait with ``wait_for_lock=true``. The kernel
releases the lock when the holder dies, even by ``kill -9``: a stale file never blocks a
relaunch. Under DDP rank 0 holds the lock for the whole job.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger("snc")


class RunLocked(RuntimeError):
    """Another process is training this run directory."""


class RunLock:
    """``with RunLock(run_dir, wait=False): ...``

    Raises:
        RunLocked: naming the holder, when another process holds the lock and ``wait`` is False.
    """

    def __init__(self, run_dir: Path, wait: bool = False, poll_seconds: float = 5.0) -> None:
        self.path = Path(run_dir) / ".lock"
        self.wait, self.poll = wait, poll_seconds
        self.fd: Optional[int] = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        return (f"pid {info.get('pid')} on {info.get('host')} (started "
                f"{info.get('started')})") if info else "another process"

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait:
                    os.close(fd)
                    raise RunLocked(
                        f"{self.path.parent} is being trained by {self.holder()}; wait for it "
                        "to finish (then the same command returns its results), or pass "
                        "wait_for_lock=true to wait here") from None
                if not waited:
                    log.info("waiting for %s, held by %s", self.path, self.holder())
                    waited = True
                time.sleep(self.poll)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds")}).encode())
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
