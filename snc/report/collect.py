"""Collect finished runs (local ``results.json`` files, or a W&B project) and organise them.

- :func:`find_results` / :func:`wandb_results` read runs.
- :func:`task_metrics`, :func:`primary_metric`, :func:`higher_is_better`: which numbers a task
  reports and which way is better (errors and mCE: lower; accuracy and mIoU: higher).
- :func:`pool_seeds` turns runs that differ only by seed into one :class:`Variant` (mean, std,
  n: never the best of the seeds); :func:`best_variant` picks the best setting of a group, as the
  paper's appendix does for its active_num x prob grid (lowest mCE, chosen on the test
  corruptions).
- :func:`group_runs` groups runs by experiment (and sweep) for the report of any set of runs.
- :func:`validation_score` is what ``select_on="validation"`` chooses a setting by (held-out
  corruptions, never the test mCE); :func:`per_image` reads a run's ``per_image.npz``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

log = logging.getLogger("snc")

# The settings that tell two runs apart in a report (seed excluded: seeds are pooled). A run's
# ``setting_hash`` (if the engine writes one: the config hash without the seed) is added too.
SETTING_KEYS = ("dataset", "backbone", "method", "position", "crop", "cn_active_num", "cn_prob",
                "ibn", "objective", "epochs", "max_steps", "num_train", "num_test",
                "corrupted_set")
# What each task reports, in table order; a metric is shown when some run of the group has it.
TASK_METRICS = {
    "classify": ("clean/error", "mce"),
    "fixmatch": ("clean/error", "clean/error_best", "clean/error_last20", "mce"),
    "segment": ("source/miou", "target/miou"),
    "text": ("source/accuracy", "target/accuracy", "source/accuracy_last",
             "target/accuracy_last"),
}
PRIMARY = {"classify": "mce", "fixmatch": "mce", "segment": "target/miou",
           "text": "target/accuracy"}
LABELS = {"clean/error": "clean error", "mce": "mCE", "clean/error_best": "best clean error",
          "clean/error_last20": "clean error, last 20", "source/miou": "source mIoU",
          "target/miou": "target mIoU", "source/accuracy": "source accuracy",
          "target/accuracy": "target accuracy", "source/accuracy_last": "source accuracy, last",
          "target/accuracy_last": "target accuracy, last"}
APPENDIX_GRID = {(1, 0.25), (1, 0.5), (2, 0.25), (2, 0.5)}
SELECT_ON = ("test", "validation")
# ImageNet-C's four extra corruptions: held out from the 15 of the mCE, a validation score
VALIDATION_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")


UNTRAINED = "(untrained)"


def trained_or_loaded(results: Dict) -> bool:
    """False for an evaluation (``snc.evaluate`` writes a ``weights`` key) that records no
    weights: one of an untrained model made before ``weights=random`` had to be asked for."""
    trained = "time/train_seconds" in results or "train/final_epoch_loss" in results
    return trained or "weights" not in results or bool(results["weights"])


class MissingValidation(ValueError):
    """``select_on="validation"`` for runs that evaluated no validation corruptions."""


def find_results(paths: Iterable[Path]) -> List[Dict]:
    """Every ``results.json`` under ``paths`` (files or folders), with ``run_dir`` set.

    An evaluation (``snc.evaluate``) is listed only with its record of what was loaded
    (``weights``); one of an untrained model (``weights=random``) is listed with
    ``(untrained)`` after its method, so no row reads as a trained model that was not."""
    runs = []
    for path in paths:
        path = Path(path)
        files = [path] if path.is_file() else sorted(path.rglob("results.json"))
        for f in files:
            data = json.loads(f.read_text())
            if not trained_or_loaded(data):
                log.warning("%s: an evaluation with no record of the weights it loaded is left "
                            "out; evaluate again with run_dir=, checkpoint= or weights=", f)
                continue
            if data.get("untrained") and not str(data.get("method", "")).endswith(UNTRAINED):
                data["method"] = f"{data.get('method', '?')} {UNTRAINED}"
            data.setdefault("run_dir", str(f.parent))
            if "setting_hash" not in data and (f.parent / "config.yaml").exists():
                data["setting_hash"] = config_setting(f.parent / "config.yaml")
            runs.append(data)
    return runs


def config_setting(path: Path) -> str:
    """``cfg-`` + 8 hex digits of the resolved config without the seed and the settings that
    do not change what is computed (the engine's ``NON_IDENTITY_KEYS``): runs whose
    ``results.json`` has no ``setting_hash`` (older runs) are told apart by every config
    difference but the seed, as the engine's hash does."""
    import hashlib

    import yaml

    from snc.engine.identity import NON_IDENTITY_KEYS

    cfg = yaml.safe_load(Path(path).read_text()) or {}
    for key in NON_IDENTITY_KEYS + ("seed",):
        cfg.pop(key, None)
    text = json.dumps(cfg, sort_keys=True, default=str)
    return "cfg-" + hashlib.sha1(text.encode()).hexdigest()[:8]


def per_image(run: Dict) -> Optional[Dict[str, Any]]:
    """The run's ``per_image.npz`` (bool arrays of per-image top-1 correctness: ``clean``,
    ``<shift>/<corruption>/s<k>``, ``<shift>``) as a dict, or None when the run has none (older
    runs, W&B runs). Read once per run, without pickle."""
    if "_per_image" not in run:
        path = Path(str(run.get("run_dir") or "")) / "per_image.npz"
        arrays = None
        if run.get("run_dir") and path.is_file():
            import numpy as np

            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        run["_per_image"] = arrays
    return run["_per_image"]


def validation_score(run: Dict) -> float:
    """The value of :func:`validation`."""
    return validation(run)[0]


def validation(run: Dict) -> Tuple[float, str]:
    """``(score, what it is)``: what ``select_on="validation"`` chooses by (lower is better):
    the mean error over ImageNet-C's four extra corruptions (speckle_noise, gaussian_blur,
    spatter, saturate) when all four were evaluated, else the mCE of the run's -C-bar block
    (``shifts["<dataset>c_bar"]``).

    Raises:
        MissingValidation: neither is in the run's results.
    """
    keys = [f"corruption/{c}/error" for c in VALIDATION_CORRUPTIONS]
    values = [_number(run.get(k)) for k in keys]
    if all(v is not None for v in values):
        return sum(values) / len(values), "mean error of " + ", ".join(VALIDATION_CORRUPTIONS)
    bar = f"{run.get('dataset')}c_bar"
    block = (run.get("shifts") or {}).get(bar) or {}
    if _number(block.get("mce")) is not None:
        return float(block["mce"]), f"{block.get('title') or bar} mCE"
    missing = [k for k, v in zip(keys, values, strict=True) if v is None]
    raise MissingValidation(
        f"{run.get('run_dir')}: no validation score for --select-on validation: results.json "
        f"lacks {', '.join(missing)} (the extra corruptions) and shifts.{bar}.mce (a -C-bar "
        "block); evaluate them with evaluate.validation=extra or shifts=[cifar10c_bar], or "
        "report with --select-on test")


def wandb_results(project: str, entity: Optional[str] = None) -> List[Dict]:
    """Finished runs of a W&B project (needs network and a login): summary + paper cells."""
    import wandb

    api = wandb.Api()
    runs = []
    for run in api.runs(f"{entity}/{project}" if entity else project,
                        filters={"state": "finished"}):
        data = {k: v for k, v in run.summary.items() if not k.startswith("_")}
        data.setdefault("run_dir", run.url)
        runs.append(data)
    return runs


def higher_is_better(metric: str) -> bool:
    """True for accuracy and (m)IoU keys, False for errors and mCE."""
    return "accuracy" in metric or "iou" in metric


def label(metric: str) -> str:
    """Human name of a metric with its unit and direction, e.g. ``mCE (%) ↓``."""
    return f"{LABELS.get(metric, metric)} (%) {'↑' if higher_is_better(metric) else '↓'}"


def task_metrics(runs: Sequence[Dict]) -> List[str]:
    """The metrics of these runs' task(s) that at least one run has, in table order."""
    order: List[str] = []
    for task in dict.fromkeys(r.get("task") or "classify" for r in runs):
        for m in TASK_METRICS.get(task, TASK_METRICS["classify"]):
            if m not in order:
                order.append(m)
    return [m for m in order if any(_number(r.get(m)) is not None for r in runs)]


def primary_metric(runs: Sequence[Dict]) -> Optional[str]:
    """The metric the best setting is chosen by: mCE for classification (clean error without
    corruptions), target mIoU / accuracy for segmentation / text."""
    present = task_metrics(runs)
    tasks = [r.get("task") or "classify" for r in runs]
    preferred = PRIMARY.get(max(sorted(set(tasks)), key=tasks.count), "mce")
    for m in (preferred, "mce", "clean/error", *present):
        if m in present:
            return m
    return None


def is_synthetic(run: Dict) -> bool:
    """Trained and tested on generated data: a ``synthetic: true`` key, or a dataset named
    like ``synthetic``, ``text_synthetic`` or ``generated`` (the segmentation scenes)."""
    if "synthetic" in run:
        return bool(run["synthetic"])
    name = str(run.get("dataset") or "")
    return "synthetic" in name or "generated" in name


def is_generated_c(run: Dict) -> bool:
    """Corruption errors measured on a generated corrupted set, not the published one."""
    return run.get("corrupted_set") == "generated"


def marks(runs: Sequence[Dict]) -> List[str]:
    """``[synthetic]`` / ``[generated-C]`` flags that apply to any of ``runs``."""
    out = []
    if any(is_synthetic(r) for r in runs):
        out.append("[synthetic]")
    if any(is_generated_c(r) and _number(r.get("mce")) is not None for r in runs):
        out.append("[generated-C]")
    return out


def _number(x: Any) -> Optional[float]:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(float(x)):
        return None
    return float(x)


def setting_of(run: Dict) -> Tuple[Tuple[str, Any], ...]:
    """The run's settings without the seed (runs with equal settings are seeds of one variant)."""
    keys = SETTING_KEYS + (("setting_hash",) if "setting_hash" in run else ())
    return tuple((k, run.get(k)) for k in keys)


@dataclass
class Variant:
    """Runs with one setting and different seeds: metrics as mean, std (n-1) and n."""

    settings: Dict[str, Any]
    runs: List[Dict] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> List[Any]:
        return sorted(r.get("seed") for r in self.runs if r.get("seed") is not None)

    def values(self, metric: str) -> List[float]:
        return [v for v in (_number(r.get(metric)) for r in self.runs) if v is not None]

    def mean(self, metric: str) -> Optional[float]:
        vals = self.values(metric)
        return sum(vals) / len(vals) if vals else None

    def std(self, metric: str) -> Optional[float]:
        """Sample standard deviation over seeds; None with fewer than two values."""
        vals = self.values(metric)
        if len(vals) < 2:
            return None
        mu = sum(vals) / len(vals)
        return math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1))

    def validation(self) -> float:
        """Mean :func:`validation_score` over the seeds (raises MissingValidation)."""
        scores = [validation_score(r) for r in self.runs]
        return sum(scores) / len(scores)

    def run_dirs(self) -> List[str]:
        return sorted(str(r.get("run_dir")) for r in self.runs)


def pool_seeds(runs: Sequence[Dict]) -> List[Variant]:
    """One :class:`Variant` per distinct setting, in a stable order."""
    by: Dict[Tuple, Variant] = {}
    for run in runs:
        key = setting_of(run)
        by.setdefault(key, Variant(settings=dict(key))).runs.append(run)
    return sorted(by.values(), key=lambda v: tuple(_sortable(x) for x in v.settings.values()))


def _sortable(x: Any) -> Tuple[int, Any]:
    if x is None:
        return (0, "")
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return (1, float(x))
    return (2, str(x))


def best_variant(variants: Sequence[Variant], metric: str, select_on: str = "test") -> Variant:
    """The variant with the best mean ``metric`` (ties: lower mean clean error, then order).
    ``select_on="validation"`` (``metric`` mCE): the lowest mean :func:`validation_score`
    instead, so the test corruptions play no part in the choice."""
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {SELECT_ON}, got {select_on!r}")
    if select_on == "validation":  # ties: table order (a test number must not decide)
        return min(variants, key=lambda v: v.validation())
    scored = [v for v in variants if v.mean(metric) is not None]
    if not scored:
        raise ValueError(f"no run has {metric!r}")
    sign = -1.0 if higher_is_better(metric) else 1.0
    return min(scored, key=lambda v: (sign * v.mean(metric),
                                      v.mean("clean/error") if v.mean("clean/error") is not None
                                      else 0.0))


def select_best(runs: Sequence[Dict], metric: str = "mce") -> Dict:
    """The single run with the best ``metric`` (lowest error / highest accuracy; ties: lower
    clean error). Runs here are settings of one grid, one seed each; seeds of a setting are
    pooled by :func:`pool_seeds` instead."""
    scored = [r for r in runs if _number(r.get(metric)) is not None]
    if not scored:
        raise ValueError(f"no run has {metric!r}")
    sign = -1.0 if higher_is_better(metric) else 1.0
    return min(scored, key=lambda r: (sign * r[metric], r.get("clean/error", 0.0)))


def varying_keys(variants: Sequence[Variant]) -> List[str]:
    """Setting keys whose values differ between variants (the columns of a group's table)."""
    keys = [k for k in SETTING_KEYS if len({repr(v.settings.get(k)) for v in variants}) > 1]
    named = {tuple(repr(v.settings.get(k)) for k in SETTING_KEYS) for v in variants}
    if len(named) < len(variants):  # only the hash tells some settings apart: show it
        keys.append("setting_hash")
    return keys


def sweep_of(runs: Sequence[Dict]) -> Optional[str]:
    """The sweep these runs came from: the ``sweep`` key the run recorded, else recognised from
    the settings (``appendix_grid``: exactly the {1, 2} x {0.25, 0.5} active_num x prob grid;
    ``seeds``: one setting, several seeds)."""
    recorded = {r.get("sweep") for r in runs} - {None}
    if len(recorded) == 1:
        return recorded.pop()
    variants = pool_seeds(runs)
    if varying_keys(variants) and set(varying_keys(variants)) <= {"cn_active_num", "cn_prob"} \
            and {(v.settings["cn_active_num"], v.settings["cn_prob"])
                 for v in variants} == APPENDIX_GRID:
        return "appendix_grid"
    if len(variants) == 1 and len(runs) > 1:
        return "seeds"
    return None


@dataclass
class Group:
    """Runs of one experiment (and one recorded sweep)."""

    experiment: str
    sweep: Optional[str]
    runs: List[Dict]
    suffix: str = ""

    @property
    def name(self) -> str:
        return self.experiment + (f" ({self.sweep})" if self.sweep else "")

    @property
    def slug(self) -> str:
        import re

        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.experiment
                      + (f"-{self.sweep}" if self.sweep else "")) + self.suffix


def group_runs(runs: Sequence[Dict]) -> List[Group]:
    """Groups by (experiment, recorded sweep), sorted by name; a group's sweep is the recorded
    one or the one :func:`sweep_of` recognises."""
    by: Dict[Tuple[str, str], List[Dict]] = {}
    for run in runs:
        key = (str(run.get("experiment") or "runs"), str(run.get("sweep") or ""))
        by.setdefault(key, []).append(run)
    groups = [Group(experiment=exp, sweep=sweep or sweep_of(members), runs=members)
              for (exp, sweep), members in sorted(by.items())]
    seen: Dict[str, int] = {}
    for g in groups:  # file names of figures: one per group, never shared
        seen[g.slug] = seen.get(g.slug, 0) + 1
        if seen[g.slug] > 1:
            g.suffix = f"-{seen[g.slug]}"
    return groups


def cell_key(cell: Dict) -> Tuple[str, str, str, str]:
    return cell["table"], cell["row"], cell["column"], cell["dataset"]


def group_by_cell(runs: Sequence[Dict]) -> Dict[Tuple[str, str, str, str], List[Dict]]:
    """Runs per paper cell they were launched for (a run may name several cells)."""
    groups: Dict[Tuple[str, str, str, str], List[Dict]] = {}
    for run in runs:
        for cell in run.get("paper_cells") or []:
            groups.setdefault(cell_key(cell), []).append(run)
    return groups
