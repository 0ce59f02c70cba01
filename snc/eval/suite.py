"""One classifier evaluated on a list of distribution shifts: the end of every training run and
all of ``python -m snc.evaluate``.

``evaluate.shifts`` names the test sets. Two names are relative to the dataset:

- ``corrupted``: the dataset's own corrupted set as ``dataset.corrupted`` configures it
  (published CIFAR-10-C / CIFAR-100-C / ImageNet-C, or generated from the test images). Its
  errors are the run's headline keys (``mce``, ``corruption/<c>/s<k>/error``), as before.
- ``corrupted_bar``: the -C-bar corruptions (Mintun et al., NeurIPS 2021) of the dataset:
  the published CIFAR-10-C-bar / ImageNet-C-bar where the dataset has one and
  ``dataset.corrupted=published``, else generated from the test images.

Every other name is an entry of :mod:`snc.shifts` (``cifar10_1``, ``imagenet_r``, ...).
Each shift gives one block of ``results["shifts"]``; with ``evaluate.bootstrap > 0`` every error
and mCE carries a 95 % bootstrap interval over test images (:mod:`snc.eval.stats`; for an mCE
the clean test indices are resampled once per replicate and used in every corrupted copy).
The per-image correctness behind the intervals is kept for paired comparisons
(``per_image.npz``).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from snc.atomic import atomic_open
from snc.errors import ConfigError
from snc.eval.robustness import (
    clean_error,
    corruption_metrics,
    count_errors,
    error_percent,
    evaluate_corruptions,
)

log = logging.getLogger("snc")

OWN = "corrupted"
OWN_BAR = "corrupted_bar"
# the published corruption grid of a dataset, and its -C-bar counterpart
PUBLISHED_GRIDS = {"cifar10": ("cifar10c", "cifar10c_bar"), "cifar100": ("cifar100c",
                                                                         "cifar100c_bar"),
                   "imagenet": ("imagenetc", "imagenetc_bar")}
VALIDATION = ("none", "extra")


def own_names(dataset: str) -> Tuple[str, str]:
    """Block names of ``corrupted`` and ``corrupted_bar`` for ``dataset``."""
    return PUBLISHED_GRIDS.get(dataset, (f"{dataset}_c", f"{dataset}_c_bar"))


def shift_list(value: Any) -> List[str]:
    """``evaluate.shifts`` as a list of names: one name given without brackets
    (``shifts=corrupted_bar``) is that one shift, not its letters."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _settings(cfg) -> Dict[str, Any]:
    e = cfg.get("evaluate") or {}
    return {"shifts": shift_list(e.get("shifts", [OWN])),
            "download": bool(e.get("download", False)),
            "bootstrap": int(e.get("bootstrap", 1000) or 0),
            "bootstrap_seed": int(e.get("bootstrap_seed", 0)),
            "validation": str(e.get("validation", "none"))}


@dataclass
class _Planned:
    """One shift of the suite, resolved against the dataset."""

    name: str                 # block name in results["shifts"]
    kind: str                 # corruptions | single
    title: str
    registry: Optional[str] = None   # the snc.shifts entry (None: generated from the data)
    mode: str = "published"          # published | generate (corruption grids)
    corruptions: Tuple[str, ...] = ()
    sets: Any = None                 # CorruptedSets once prepared
    single: Any = None               # SingleSet once prepared
    info: Dict[str, Any] = field(default_factory=dict)


class ShiftSuite:
    """The shifts of ``cfg.evaluate``: checked when built, prepared before training (download,
    generate, verify), evaluated at the end.

    Raises (when built):
        ConfigError: an unknown shift name (listing the known ones), a shift that does not fit
            the model (CIFAR-10.1 for a 100-class model, ImageNet-R for a head without the 1000
            ImageNet classes), or an unknown ``evaluate.validation``.
    """

    def __init__(self, cfg, num_classes: int) -> None:
        self.cfg = cfg
        self.settings = s = _settings(cfg)
        if s["validation"] not in VALIDATION:
            raise ConfigError(f"evaluate.validation={s['validation']!r}; choose one of "
                              f"{', '.join(VALIDATION)}")
        dataset = cfg.dataset.name
        own, own_bar = own_names(dataset)
        self.planned: List[_Planned] = []
        seen = set()
        for requested in s["shifts"]:
            name = {OWN: own, OWN_BAR: own_bar}.get(str(requested), str(requested))
            if name in seen:
                continue
            seen.add(name)
            if name == own:
                self.planned.append(_Planned(own, "corruptions", _own_title(cfg)))
                continue
            from snc import shifts as registry

            if name == own_bar and name not in registry.list_shifts():
                self.planned.append(self._generated_bar(name))
                continue
            try:
                shift = registry.get_shift(name)
            except ValueError as err:
                raise ConfigError(f"{err} (or {OWN} / {OWN_BAR}: this dataset's -C and -C-bar "
                                  "sets)") from None
            if shift.kind == "corruptions" and (cfg.dataset.get("corrupted") == "generate"
                                               or dataset != shift.domain
                                               or not shift.published):
                if not shift.generated_ok:
                    raise ConfigError(f"{name} cannot be generated for dataset={dataset}; it "
                                      f"is read from its published files ({shift.source})")
                self._check_preset(name, shift.domain)
                self.planned.append(_Planned(name, "corruptions", shift.title + " (generated)",
                                             registry=name, mode="generate",
                                             corruptions=tuple(shift.corruptions)))
                continue
            try:
                registry.check_fits(shift, dataset, num_classes)
            except ValueError as err:
                raise ConfigError(str(err)) from None
            self.planned.append(_Planned(name, shift.kind, shift.title, registry=name,
                                         corruptions=tuple(shift.corruptions)))

    # ------------------------------------------------------------------ resolution helpers

    def _check_preset(self, name: str, domain: str) -> None:
        preset = self.cfg.dataset.get("corruption_preset", "cifar")
        want = "imagenet" if domain == "imagenet" else "cifar"
        if preset != want:
            raise ConfigError(f"{name} uses the {want} -C-bar parameters; this dataset "
                              f"generates at dataset.corruption_preset={preset}")

    def _generated_bar(self, name: str) -> _Planned:
        from snc.corruptions import CBAR_CORRUPTIONS

        preset = self.cfg.dataset.get("corruption_preset", "cifar")
        if preset not in CBAR_CORRUPTIONS:
            raise ConfigError(f"{OWN_BAR}: the -C-bar corruptions exist at the cifar (32 px) "
                              f"and imagenet (224 px) parameters; dataset.corruption_preset="
                              f"{preset}")
        return _Planned(name, "corruptions", f"{self.cfg.dataset.name}-C-bar (generated)",
                        mode="generate", corruptions=tuple(CBAR_CORRUPTIONS[preset]))

    @property
    def names(self) -> List[str]:
        return [p.name for p in self.planned]

    def missing(self, results: Mapping[str, Any]) -> List[str]:
        """The shifts of this suite that ``results`` (e.g. of a run finished earlier with
        other ``evaluate.shifts``) holds no block for."""
        from snc.data.datasets import corrupted_mode

        own = own_names(self.cfg.dataset.name)[0]
        done = set(results.get("shifts") or ({own} if "mce" in results else ()))
        if corrupted_mode(self.cfg) == "none":
            done.add(own)  # not evaluated by configuration
        return [n for n in self.names if n not in done]

    # ------------------------------------------------------------------ before training

    def prepare(self, data, *, data_dir: Path, progress: bool, rank: int = 0) -> None:
        """Downloads, generates or checks every shift so a missing set fails before training.

        ``data``: the task's :class:`~snc.data.datasets.Data` (its test set, layout and own
        corrupted set, already prepared)."""
        from snc.data.datasets import generator

        own = own_names(self.cfg.dataset.name)[0]
        for p in self.planned:
            if p.name == own:
                p.sets = data.corrupted  # None: dataset.corrupted=none / evaluate_corruptions off
                if p.sets is not None:
                    p.info["set"] = "generated" if p.sets.generated else "published"
                continue
            if p.kind == "corruptions" and p.mode == "generate":
                root = _generated_root(data, p.name)
                p.sets = data.layout.sets(
                    root=root, corruptions=p.corruptions, mode="generate",
                    generate=generator(data.layout, root, p.corruptions, progress, rank),
                    **data.layout.corrupted_kwargs())
                log.info("%s: generating (once) or checking %s (%d corruptions x 5 "
                         "severities)", p.name, root, len(p.corruptions))
                p.sets.prepare()
                p.info["set"] = "generated"
                continue
            from snc import shifts as registry

            shift = registry.get_shift(p.registry)
            root = self._locate(registry, shift, data_dir)
            if p.kind == "corruptions":
                p.sets = data.layout.sets(root=root, corruptions=p.corruptions,
                                          mode="published", generate=lambda: None,
                                          **_grid_kwargs(data.layout, shift, root))
                p.sets.prepare()
                p.info["set"] = "generated" if p.sets.generated else "published"
            else:
                p.single = registry.open_single(shift, root)
                p.info["set"] = "published"
            p.info["root"] = str(root)

    def _locate(self, registry, shift, data_dir: Path) -> Path:
        from snc.distributed import main_process_first

        with main_process_first():  # under torchrun one process downloads, the others find it
            try:
                return registry.locate(shift, data_dir)
            except FileNotFoundError as err:
                if not self.settings["download"]:
                    raise ConfigError(f"{err}") from None
            log.info("%s: downloading into %s", shift.name, data_dir)
            return registry.download(shift, data_dir, progress=True)

    # ------------------------------------------------------------------ after training

    def evaluate(self, model: torch.nn.Module, data, *, amp: str = "none",
                 progress: bool = False, world: int = 1) -> "SuiteResult":
        """Every shift's errors (and intervals) for ``model``; the clean test set too."""
        from tqdm.auto import tqdm

        keep = world == 1 and self.settings["bootstrap"] > 0
        if world > 1 and self.settings["bootstrap"] > 0:
            log.warning("no 95 %% intervals: they need the per-image results of a "
                        "single-process evaluation (python -m snc.evaluate run_dir=...)")
        per_image: Dict[str, np.ndarray] = {}
        log.info("evaluating the clean test set (%d images)", data.test.total_samples)
        flat: Dict[str, Any] = dict(clean_error(model, data.test, data.num_classes, amp,
                                                per_image=per_image if keep else None))
        blocks: Dict[str, Dict[str, Any]] = {}
        own = own_names(self.cfg.dataset.name)[0]
        protocol = self.cfg.dataset.get("protocol", "cifar")
        planned = [p for p in self.planned if p.kind == "single" or p.sets is not None]
        grids = sum(len(p.sets.corruptions) for p in planned if p.kind == "corruptions")
        with tqdm(total=5 * grids, desc="shifted sets", disable=not progress) as bar:
            for p in planned:
                start = time.perf_counter()
                if p.kind == "corruptions":
                    block, images, metrics = self._grid(model, p, amp, protocol, flat, bar,
                                                        progress, keep)
                    if p.name == own:  # the run's headline keys, as always
                        flat.update(metrics)
                else:
                    block, images = self._single(model, p, data, amp, keep)
                block["seconds"] = round(time.perf_counter() - start, 2)
                blocks[p.name] = block
                per_image.update({f"{p.name}{k}": v for k, v in images.items()})
        result = SuiteResult(flat=flat, blocks=blocks, per_image=per_image)
        if keep:
            result.add_intervals(self.settings, protocol, own)
        return result

    def _grid(self, model, p: _Planned, amp: str, protocol: str, flat, bar, progress: bool,
              keep: bool):
        def done(name: str, severity: int) -> None:
            bar.update(1)
            if not progress and severity == 5:
                log.info("%s: evaluated %s (5 severities)", p.name, name)

        rows: Optional[Dict[Tuple[str, int], np.ndarray]] = {} if keep else None
        errors = evaluate_corruptions(model, p.sets, amp, expected=p.sets.expected,
                                      progress=done, per_image=rows)
        metrics = corruption_metrics(errors, protocol, flat["clean/error"])
        block: Dict[str, Any] = {"kind": "corruptions", "title": p.title, **p.info,
                                 "num_images": p.sets.expected(*next(iter(errors))), **metrics}
        images = {f"/{c}/s{s}": v for (c, s), v in (rows or {}).items()}
        return block, images, metrics

    def _single(self, model, p: _Planned, data, amp: str, keep: bool):
        s = p.single
        loader = _single_loader(data.layout, s, self.cfg)
        net = model if s.class_subset is None else _SubsetHead(model, s.class_subset)
        record: Optional[List[np.ndarray]] = [] if keep else None
        wrong, total = count_errors(net, loader, amp, record=record)
        expected = len(s.labels) if s.labels is not None else len(s.samples)
        if total != expected:
            raise RuntimeError(f"{p.name}: evaluated {total} images, the set has {expected}")
        block = {"kind": "single", "title": p.title, **p.info, "num_images": total,
                 "error": error_percent(wrong[1], total)}
        if s.class_subset is not None:
            block["classes"] = len(s.class_subset)
        images = {"": np.concatenate(record).astype(bool)} if record else {}
        log.info("%s: error %.2f%% (%d images)", p.name, block["error"], total)
        return block, images


@dataclass
class SuiteResult:
    """What :meth:`ShiftSuite.evaluate` returns.

    Attributes:
        flat: ``clean/error`` (+ ``clean/top5_error``) and the dataset's own corrupted set's
            headline keys (``mce``, ``corruption/<c>/s<k>/error``, ...), as training always
            reported them.
        blocks: ``{shift: {kind, title, set, num_images, error | mce + per-corruption errors,
            ci95}}``.
        per_image: top-1 correctness per image: ``clean``, ``<shift>/<c>/s<k>``, ``<shift>``.
    """

    flat: Dict[str, Any]
    blocks: Dict[str, Dict[str, Any]]
    per_image: Dict[str, np.ndarray]
    bootstrap: Optional[Dict[str, Any]] = None
    ci95: Dict[str, Tuple[float, float]] = field(default_factory=dict)

    def add_intervals(self, settings: Mapping[str, Any], protocol: str, own: str) -> None:
        from snc.eval import stats

        kw = dict(resamples=settings["bootstrap"], seed=settings["bootstrap_seed"])
        clean = self.per_image["clean"]
        self.ci95["clean/error"] = stats.error_interval(clean, **kw)
        for name, block in self.blocks.items():
            if block["kind"] == "single":
                block["ci95"] = {"error": stats.error_interval(self.per_image[name], **kw)}
                continue
            copies = stats.grid_rows(self.per_image, name)
            if any(len(v) != len(clean) for v in copies.values()):
                log.warning("%s: its sets are not copies of the %d test images; no interval",
                            name, len(clean))
                continue
            block["ci95"] = stats.mce_interval(clean, copies, protocol=protocol, **kw)
            if name == own:
                self.ci95.update(block["ci95"])
        self.bootstrap = {"resamples": kw["resamples"], "seed": kw["seed"],
                          "level": stats.LEVEL}

    def results(self) -> Dict[str, Any]:
        """The keys a run's ``results.json`` gets from the evaluation."""
        out: Dict[str, Any] = dict(self.flat)
        out["shifts"] = self.blocks
        if self.bootstrap is not None:
            out["ci95"] = {k: list(v) for k, v in self.ci95.items()}
            out["bootstrap"] = self.bootstrap
        return out

    def write(self, out_dir: Path, meta: Mapping[str, Any]) -> None:
        """``per_image.npz``, ``errors.csv`` and ``robustbench.json`` into ``out_dir``."""
        out_dir = Path(out_dir)
        if self.per_image:
            with atomic_open(out_dir / "per_image.npz") as f:
                np.savez_compressed(f, **self.per_image)
        with atomic_open(out_dir / "errors.csv", "w") as f:
            writer = csv.writer(f)
            writer.writerow(["shift", "corruption", "severity", "error", "ci95_low", "ci95_high",
                             "num_images", "set"])
            clean_ci = self.ci95.get("clean/error", (None, None))
            writer.writerow(["clean", "", "", _fmt(self.flat["clean/error"]), *map(_fmt, clean_ci),
                             "", ""])
            for name, block in self.blocks.items():
                ci = block.get("ci95", {})
                if block["kind"] == "single":
                    writer.writerow([name, "", "", _fmt(block["error"]),
                                     *map(_fmt, ci.get("error", (None, None))),
                                     block["num_images"], block.get("set", "")])
                    continue
                for key, value in block.items():
                    parts = key.split("/")
                    if len(parts) == 4 and parts[0] == "corruption":
                        writer.writerow([name, parts[1], parts[2][1:], _fmt(value), "", "",
                                         block["num_images"], block.get("set", "")])
        with atomic_open(out_dir / "robustbench.json", "w") as f:
            f.write(json.dumps(robustbench_entry(meta, self), indent=2))


def _fmt(value) -> str:
    return "" if value is None else f"{float(value):.4f}"


def robustbench_entry(meta: Mapping[str, Any], result: SuiteResult) -> Dict[str, Any]:
    """A RobustBench-style model entry (threat model ``corruptions``): clean and corrupted
    accuracy per corruption-grid dataset, in percent with two decimals as RobustBench writes
    them. ``generated`` says whether the corrupted set is the published benchmark."""
    entries = {}
    for name, block in result.blocks.items():
        if block["kind"] != "corruptions":
            continue
        names = sorted({k.split("/")[1] for k in block if k.count("/") == 3})
        errors = [block[f"corruption/{c}/s{s}/error"] for c in names for s in range(1, 6)]
        entries[name] = {
            "clean_acc": f"{100 - result.flat['clean/error']:.2f}",
            "corruptions_acc": f"{100 - sum(errors) / len(errors):.2f}",
            "corruptions": names, "generated": block.get("set") == "generated",
        }
    return {"name": str(meta.get("run_name", meta.get("method", ""))),
            "architecture": str(meta.get("backbone", "")), "method": meta.get("method"),
            "dataset": meta.get("dataset"), "threat_model": "corruptions", "eps": None,
            "additional_data": False, "number_forward_passes": 1, "datasets": entries}


def _own_title(cfg) -> str:
    names = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C", "imagenet": "ImageNet-C"}
    return names.get(cfg.dataset.name, f"{cfg.dataset.name}-C")


def _generated_root(data, name: str) -> Path:
    """A generated -C-bar set beside the generated -C sets, named after the test images."""
    source = data.layout.source
    base = source.generated_root
    suffix = "bar" if name.endswith("_c_bar") else name  # <data>-C-bar-<digest>
    return base.with_name(f"{base.name}-{suffix}-{source.digest('test')[:8]}")


def _grid_kwargs(layout, shift, root: Path) -> Dict[str, Any]:
    """Loader arguments of a published grid; ImageNet-C-bar's severity folders (named 1..5 or
    by the severity value) as found on disk."""
    from snc.data.datasets import FolderCorruptedSets
    from snc.shifts import severity_dir

    kw = layout.corrupted_kwargs()
    if shift.severities and issubclass(layout.sets, FolderCorruptedSets):
        try:
            kw["severity_dirs"] = {c: tuple(severity_dir(shift, root, c, s).name
                                            for s in range(1, 6)) for c in shift.corruptions}
        except FileNotFoundError as err:
            raise ConfigError(f"{shift.name}: {err} not found; layout: {shift.layout}") from None
    return kw


def _single_loader(layout, s, cfg):
    batch = int(cfg.eval_batch_size)
    if s.images is not None:
        return layout.loader((s.images, s.labels), batch, False)
    return layout.loader(_FileList(s.samples, layout.eval_tf), batch, False)


class _FileList(torch.utils.data.Dataset):
    """``(path, label)`` samples read with the evaluation transform."""

    def __init__(self, samples: Sequence[Tuple[str, int]], transform) -> None:
        self.samples, self.transform = list(samples), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from torchvision.datasets.folder import default_loader  # ImageFolder's: PIL, RGB

        path, label = self.samples[i]
        return self.transform(default_loader(path)), label


class _SubsetHead(torch.nn.Module):
    """The model's logits restricted to a class subset (ImageNet-R/-A: 200 of the 1000)."""

    def __init__(self, model: torch.nn.Module, classes: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("classes", torch.as_tensor(list(classes), dtype=torch.long),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits.index_select(1, self.classes.to(logits.device))
