"""Run tracking: local files (always) and Weights & Biases (offline by default)."""

from snc.tracking.base import Tracker, Trackers
from snc.tracking.local import LocalTracker, write_json
from snc.tracking.wandb import WandbTracker

__all__ = ["LocalTracker", "Tracker", "Trackers", "WandbTracker", "write_json"]
