"""Speed of the non-classification tasks (``task=fixmatch | segment | text | dg``):
scripts/bench.py.

    python scripts/bench.py task=fixmatch [overrides]
    python scripts/bench.py task=segment  [overrides]
    python scripts/bench.py task=text     [overrides]
    python scripts/bench.py task=dg dataset=pacs protocol=domainbed [overrides]

Each mode composes the task's demo preset (``experiment=<task>_demo`` unless an ``experiment=``
is given; ``dg``: no preset, ``dataset=dg_synthetic`` unless a dataset is given) with the
overrides, builds the task through its own ``setup(RunContext(...))`` and times
``next(task.train)`` + ``task.training_step`` + backward + optimizer step (+ FixMatch's EMA
update), i.e. what the engine runs per step.

- ``fixmatch``: snc's device pipeline (the dataset resident on the device, batched weak/strong
  augmentation there, one concatenated forward) against the pipeline of the public FixMatch
  re-implementation (kekmodel/FixMatch-pytorch): per-sample PIL flip/crop/RandAugmentMC/Cutout
  in DataLoader workers, a labeled and an unlabeled loader, ``interleave``/``de_interleave``
  around the forward, fp32, the per-tensor ``state_dict`` EMA, SelfNorm (if any) with the
  official unfused ops (:mod:`snc.reference.fixmatch`). Prints steps/s and images/s of both.
- ``segment``: training images/s of snc's pipeline (``TrainTransform`` per sample, or the
  batched device warp with ``task.augment=device``, normalization on the device, configured
  precision) and of the official SEMSEG way (float32 OpenCV scale/rotate/blur/flip/crop and
  normalization per sample in DataLoader workers, fp32, SelfNorm's official unfused ops);
  evaluation images/s of both protocols: the centre crop and the sliding window + flip (snc:
  batched windows, :func:`snc.eval.segmentation.evaluate_segmentation`; official: one
  window (+ its flip) per forward, probabilities accumulated in NumPy as SEMSEG ``test.py``
  does; :mod:`snc.reference.segmentation`).
- ``text``: training and evaluation sentences/s (IMDb-style reviews; evaluation over the
  validation, source and target splits) and the GloVe load time, first parse
  (:mod:`snc.reference.text`: a fresh copy of the GloVe file each time) vs the ``.npy`` cache.
- ``dg``: snc's path (every image decoded once with Pillow at ``dataset.image_size`` and kept
  on the device as uint8; random resized crop, flip, colour jitter and greyscale made on whole
  batches there, :class:`snc.data.dg.DomainBatches`) against the reference of the sampling
  (:mod:`snc.reference.dg`): ``balanced``: DomainBed's (``ImageFolder`` + PIL transforms per
  file, one ``InfiniteDataLoader`` per source domain, the batches concatenated, ERM's step,
  BatchNorm frozen as the task's ``freeze_bn``); ``random``: Dassl's (one loader over the union,
  Resize + Random2DTranslation + flip, its Vanilla step). Same network (SelfNorm, if any, with
  the official ops on the reference) and optimizer settings; the reference in fp32. Times the
  training step and the data path alone (the batch on the device, no model: on a CPU the model
  dominates the step), and snc's one-off decode. A published dataset whose folder is missing
  (e.g. ``dataset=pacs`` offline) is replaced by a stand-in in its layout, written to a
  temporary folder (generated renderings at its image size, PACS: 227 px): the header says so;
  those numbers are about the pipeline, not the data. ``dataset.test_domain`` defaults to the
  last domain.

Timing (:mod:`snc.cli.bench_harness`): warm-up first, then the variants interleaved (below);
the median on CPU, the mean and standard deviation with CUDA synchronisation on GPUs. The
last line is ``speedup_vs_reference=<reference time / snc time>`` (fixmatch, segment, dg:
training step) or ``glove_cache_speedup=<parse time / cached load time>`` (text).

Training steps of snc and of the reference alternate in ``rounds`` blocks (default 2), each
block after ``lead`` untimed steps (default ``2 * workers`` = the reference's prefetch depth),
so that the reference's DataLoader workers neither run inside snc's timed steps nor hand the
reference batches made while snc was being timed
(:func:`~snc.cli.bench_harness.time_variants`).

Bench-only options (prefix ``+bench.``): ``steps`` (timed steps per variant; 6 on CPU, 20 on
CUDA), ``warmup`` (1 / 5), ``rounds`` (2), ``lead`` (2 x workers), ``repeats`` (timed
evaluation / GloVe repetitions; 3 / 5), ``workers`` (reference DataLoader workers per loader,
2), ``eval_images`` (segment: the first source val images evaluated, 8); ``dg``: ``images``
(the stand-in's images in all, 560), ``decode`` (time the one-off decode, true).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch

from snc.cli.bench_harness import Variant, print_table, rate_columns, time_variants
from snc.config import compose_config
from snc.data.loader import forever
from snc.engine.runner import select_device
from snc.precision import autocast_context
from snc.reference.cifar import use_official_ops
from snc.tasks.base import RunContext

DEMOS = {"fixmatch": "fixmatch_demo", "segment": "segment_demo", "text": "text_demo"}


# ----- common --------------------------------------------------------------------------------

def compose(task: str, argv: Sequence[str], extra: Sequence[str] = ()) -> "object":
    """``experiment=<task>_demo`` (unless given) + ``extra`` (unless given) + ``argv``."""
    argv = list(argv)
    keys = {a.lstrip("+~").split("=", 1)[0] for a in argv}
    base = ["logger=none"] if "logger" not in keys else []
    if "experiment" not in keys:
        base.append(f"experiment={DEMOS[task]}")
    base += [e for e in extra if e.split("=", 1)[0] not in keys]
    return compose_config(base + argv)


def optimizer_for(cfg, groups) -> torch.optim.Optimizer:
    """The engine's optimizer kind with the config's settings (timing only, no schedule)."""
    o = cfg.optimizer
    name = str(o.get("name", "sgd"))
    lr, wd = float(o.lr), float(o.get("weight_decay", 0.0))
    groups = [{k: v for k, v in g.items() if k in ("params", "weight_decay")} for g in groups]
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=wd)
    return torch.optim.SGD(groups, lr=lr, momentum=float(o.get("momentum", 0.9)),
                           nesterov=bool(o.get("nesterov", False)), weight_decay=wd)


def set_up(task_class, cfg, device: torch.device, stack: ExitStack):
    """``task_class(cfg)`` set up as the engine does, in a temporary run folder."""
    run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="snc-bench-")))
    torch.manual_seed(int(cfg.seed))
    task = task_class(cfg)
    task.setup(RunContext(device=device, run_dir=run_dir, seed=int(cfg.seed)))
    return task


def task_step(task, cfg, batches: Iterator, device: torch.device,
              after: Optional[Callable[[Any], None]] = None) -> Callable[[], None]:
    """One training step of ``task`` on snc's path (data, forward, backward, update with the
    config's optimizer, and the task's per-step hook); ``after(batch)`` runs at its end."""
    model = task.model
    opt = optimizer_for(cfg, task.param_groups(model))
    step_no = [0]

    def step() -> None:
        batch = next(batches)
        with autocast_context(device, str(cfg.amp)):
            loss, _ = task.training_step(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_no[0] += 1
        task.after_step(model, step_no[0])
        if after is not None:
            after(batch)

    return step


def header(cfg, device, extra: str) -> str:
    return (f"task={cfg.task.name} device={device} amp={cfg.amp} {extra}")


def bench_options(cfg, cuda: bool) -> Dict[str, int]:
    b = cfg.get("bench") or {}
    return {"steps": int(b.get("steps", 20 if cuda else 6)),
            "warmup": int(b.get("warmup", 5 if cuda else 1)),
            "repeats": int(b.get("repeats", 5 if cuda else 3)),
            "workers": int(b.get("workers", 2)),
            "rounds": int(b.get("rounds", 2)),
            "lead": int(b.get("lead", 2 * int(b.get("workers", 2)))),
            "eval_images": int(b.get("eval_images", 0) or 0)}


def time_training(variants: List[Variant], device: torch.device, opt_b: Dict[str, int]):
    """snc against the reference: training steps in ``rounds`` blocks after ``lead`` steps."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return time_variants(variants, device, opt_b["steps"], opt_b["warmup"],
                         rounds=opt_b["rounds"], lead=opt_b["lead"])


# ----- FixMatch ------------------------------------------------------------------------------

def bench_fixmatch(argv: Sequence[str]) -> int:
    from snc.data.datasets import get_source
    from snc.ops import RowCrossNorm
    from snc.reference.fixmatch import FixMatchReference
    from snc.tasks.fixmatch import FixMatchTask

    cfg = compose("fixmatch", argv, ["evaluate_corruptions=false"])
    device = select_device(str(cfg.device))
    opt_b = bench_options(cfg, device.type == "cuda")
    with ExitStack() as stack:
        task = set_up(FixMatchTask, cfg, device, stack)
        o = task.opts
        b, mu = int(cfg.batch_size), int(o.mu)
        per_step = b + 2 * mu * b

        def reference() -> Callable[[], None]:
            """The same data, labeled split, network and optimizer settings."""
            xtr, ytr = get_source(cfg, Path(cfg.paths.data_dir)).train
            model = use_official_ops(task.build_model()).to(device)
            for unit in model.cn_controller.units:  # the same CN cost (the configured rows)
                if isinstance(unit, RowCrossNorm):
                    unit.row_start = {"all": None, "unlabeled": b,
                                      "strong": b + mu * b}[o.cn_apply_to]
            return FixMatchReference(
                model, task.build_model().to(device),
                optimizer_for(cfg, task.param_groups(model)), xtr, ytr, task.labeled_indices,
                list(cfg.dataset.mean), list(cfg.dataset.std), o, b, opt_b["workers"],
                device).step

        timings = time_training(
            [Variant("snc", lambda: task_step(task, cfg, iter(task.train), device), per_step),
             Variant("reference", reference, per_step)], device, opt_b)
    print(header(cfg, device, f"backbone={cfg.backbone.name} batch={b} mu={mu} "
                 f"images/step={per_step} strong={o.strong} cn_apply_to={o.cn_apply_to} "
                 f"workers={opt_b['workers']} steps={len(timings['snc'].times)} "
                 f"rounds={opt_b['rounds']} lead={opt_b['lead']} warmup={opt_b['warmup']} "
                 f"threads={torch.get_num_threads()}"))
    print_table(timings, rate_columns("img"))
    print(f"train steps/s: snc {1 / timings['snc'].center:.2f}, reference "
          f"{1 / timings['reference'].center:.2f}")
    print(f"speedup_vs_reference={timings['reference'].center / timings['snc'].center:.3f}")
    return 0


# ----- segmentation --------------------------------------------------------------------------

def bench_segment(argv: Sequence[str]) -> int:
    from snc.data.segmentation.base import PairDataset
    from snc.eval.segmentation import evaluate_segmentation
    from snc.reference.segmentation import SemsegReference
    from snc.tasks.segment import SegmentTask

    cfg = compose("segment", argv)
    device = select_device(str(cfg.device))
    opt_b = bench_options(cfg, device.type == "cuda")
    t, d = cfg.task, cfg.dataset
    crop, b = int(t.crop), int(cfg.batch_size)
    with ExitStack() as stack:
        task = set_up(SegmentTask, cfg, device, stack)
        val = task.val["source"]  # evaluation: the first eval_images of the source val split
        n_eval = min(len(val), opt_b["eval_images"] or 8)
        val = PairDataset(val.pairs[:n_eval], "source")
        snc_step = task_step(task, cfg, forever(task.train), device)
        torch.manual_seed(int(cfg.seed))
        ref_model = use_official_ops(task.build_model()).to(device)  # unfused SelfNorm
        ref = SemsegReference(ref_model, optimizer_for(cfg, task.param_groups(ref_model)),
                              task.train.dataset, val, t, list(d.mean), list(d.std), b,
                              opt_b["workers"], device)
        timings = time_training([Variant("snc", lambda: snc_step, b),
                                 Variant("reference", lambda: ref.train_step, b)], device, opt_b)
        stride = t.eval.get("stride")

        def snc_eval(protocol: str) -> Callable[[], float]:
            def run() -> float:
                _, stats = evaluate_segmentation(
                    task.model, task._batches(val, protocol), protocol, task.normalize, device,
                    crop=crop, stride=stride, flip=bool(t.eval.flip),
                    base_size=t.eval.get("base_size"), window_batch=int(t.eval.window_batch),
                    num_classes=int(t.num_classes), expected=len(val))
                return stats["seconds"]
            return lambda: run

        evals = time_variants([Variant("snc center", snc_eval("center"), n_eval),
                               Variant("ref center", lambda: ref.eval_center, n_eval),
                               Variant("snc sliding", snc_eval("sliding"), n_eval),
                               Variant("ref sliding", lambda: ref.eval_sliding, n_eval)],
                              device, opt_b["repeats"], 1)
    print(header(cfg, device, f"backbone={cfg.backbone.name} width="
                 f"{(cfg.backbone.get('overrides') or {}).get('width', 64)} crop={crop} "
                 f"batch={b} augment={task.augment} workers={opt_b['workers']} "
                 f"steps={len(timings['snc'].times)} rounds={opt_b['rounds']} "
                 f"lead={opt_b['lead']} warmup={opt_b['warmup']} "
                 f"threads={torch.get_num_threads()}"))
    print_table(timings, rate_columns("train img"))
    print(f"train img/s: snc {b / timings['snc'].center:.2f}, reference "
          f"{b / timings['reference'].center:.2f}")
    rate = {k: v.items / v.center for k, v in evals.items()}
    print(f"eval img/s ({n_eval} source val images, median of {opt_b['repeats']}): centre crop "
          f"{crop}: snc {rate['snc center']:.2f}, reference {rate['ref center']:.2f}; sliding "
          f"window (stride {stride or -(-2 * crop // 3)}) + flip: snc {rate['snc sliding']:.2f}, "
          f"reference {rate['ref sliding']:.2f}")
    print(f"speedup_vs_reference={timings['reference'].center / timings['snc'].center:.3f}")
    return 0


# ----- text ----------------------------------------------------------------------------------

def bench_text(argv: Sequence[str]) -> int:
    from snc.data.text.glove import load_glove
    from snc.reference.text import GloveFirstParse
    from snc.tasks.text import TextTask, binary_metrics

    cfg = compose("text", argv)
    device = select_device(str(cfg.device))
    opt_b = bench_options(cfg, device.type == "cuda")
    with ExitStack() as stack:
        task = set_up(TextTask, cfg, device, stack)
        sizes: List[int] = []
        timings = time_variants(
            [Variant("train", lambda: task_step(task, cfg, forever(task.train), device,
                                                after=lambda batch: sizes.append(len(batch[1]))))],
            device, opt_b["steps"], opt_b["warmup"])
        n_sent = statistics.median(sizes[opt_b["warmup"]:] or sizes)
        loaders = task.eval_loaders

        def eval_run() -> None:
            for loader in loaders.values():
                binary_metrics(task.model, loader, device)

        glove_src, dim = Path(str(cfg.dataset.glove_path)), int(cfg.dataset.glove_dim)
        parse = GloveFirstParse(glove_src, dim, Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="snc-glove-"))))
        cached_from_cache: List[bool] = []

        def cached() -> float:  # the copy just parsed, now with its cache
            g = load_glove(parse.last, dim, md5=None, cache=True)
            cached_from_cache.append(g.from_cache)
            return g.seconds

        n_eval = sum(loader.num_samples for loader in loaders.values())
        other = time_variants([Variant("eval", lambda: eval_run, n_eval),
                               Variant("glove parse", lambda: parse),
                               Variant("glove cached", lambda: cached)],
                              device, opt_b["repeats"], 1)
        if parse.from_cache or not all(cached_from_cache):
            raise RuntimeError(f"GloVe timing did not see parse then cache: parse from cache "
                               f"{parse.from_cache}, cached load from cache {cached_from_cache}")
        vocab = len(task.vocab)
        with open(glove_src, "rb") as f:
            glove_rows = sum(1 for _ in f)
    tr = timings["train"]
    print(header(cfg, device, f"backbone={cfg.backbone.name} sn={cfg.sn.name} cn={cfg.cn.name} "
                 f"batch={cfg.batch_size} eval_batch={cfg.eval_batch_size} vocab={vocab} "
                 f"tokenizer={task.info.get('tokenizer')} steps={opt_b['steps']} "
                 f"warmup={opt_b['warmup']} threads={torch.get_num_threads()}"))
    print(f"train: {'median ms' if device.type != 'cuda' else 'step ms'} {1000 * tr.center:.1f} "
          f"± {1000 * tr.spread:.1f}  sentences/s {n_sent / tr.center:.1f}")
    ev = other["eval"]
    print(f"eval sentences/s ({n_eval} sentences: val + source + target, median of "
          f"{opt_b['repeats']}): {ev.items / ev.center:.1f}")
    first, again = other["glove parse"].center, other["glove cached"].center
    print(f"glove load ({glove_rows} vectors x {dim}): first parse {1000 * first:.1f} ms, "
          f"cached {1000 * again:.1f} ms")
    print(f"glove_cache_speedup={first / again:.3f}")
    return 0


# ----- domain generalization -----------------------------------------------------------------

# Published sets the bench can stand in for when their folder is missing: image size of the
# files and class folder names.
STAND_INS = {"pacs": (227, ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"))}


def dg_config(argv: Sequence[str]):
    """The ``task=dg`` config of ``argv`` (no demo preset; ``dataset=dg_synthetic`` unless a
    dataset is given); ``dataset.test_domain`` defaults to the dataset's last domain."""
    from omegaconf import open_dict

    keys = {a.lstrip("+~").split("=", 1)[0] for a in argv}
    base = [] if "logger" in keys else ["logger=none"]
    if "dataset" not in keys:
        base.append("dataset=dg_synthetic")
    cfg = compose_config(base + list(argv))
    if cfg.dataset.get("test_domain") is None and cfg.dataset.get("domains"):
        with open_dict(cfg):
            cfg.dataset.test_domain = str(list(cfg.dataset.domains)[-1])
    return cfg


def dg_data(cfg, images: int, stack: ExitStack) -> str:
    """Makes ``cfg.dataset`` point at data: the generated set (written once under
    ``paths.data_dir``), the published folder when present, else a stand-in written to a
    temporary folder in the published layout (``images`` in all, generated renderings at the
    published image size; ``paths.data_dir`` moved there too, for the decode cache). Returns
    the header's description of the data."""
    import math

    from omegaconf import open_dict

    from snc.data.dg import write_domain_folder
    from snc.errors import ConfigError
    from snc.tasks.dg import DomainGeneralization

    ds = cfg.dataset
    name = str(ds.name)
    if ds.get("generated"):
        DomainGeneralization(cfg).fetch()
        return f"{name} (generated, {int(ds.image_size)} px)"
    try:
        root = DomainGeneralization(cfg).root()
        present = root.is_dir()
    except (ImportError, ConfigError):  # no registered folder for it in this installation
        root, present = None, False
    if present:
        return f"{name} ({root})"
    domains = tuple(str(d) for d in ds.domains)
    size, classes = STAND_INS.get(name, (int(ds.image_size), tuple(
        f"class{i:03d}" for i in range(int(ds.num_classes)))))
    per_class = max(1, math.ceil(images / (len(domains) * len(classes))))
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="snc-bench-dg-")))
    folder = write_domain_folder(tmp / name, per_class=per_class, size=size, domains=domains,
                                 classes=classes)
    with open_dict(cfg):
        cfg.dataset.root = str(folder)
        cfg.paths.data_dir = str(tmp)
    n = per_class * len(domains) * len(classes)
    return (f"{name} STAND-IN (its folder is missing: {n} generated PNG images in its layout, "
            f"{len(domains)} domains x {len(classes)} classes, {size} x {size} px; the numbers "
            "are about the pipeline, not the data)")


def dg_reference(task, cfg, device: torch.device, workers: int):
    """The reference of ``task.sampling``: DomainBed's per-domain loaders and ERM step
    (``balanced``) or Dassl's union loader and Vanilla step (``random``), on a new copy of
    the network with the same optimizer settings (:mod:`snc.reference.dg`)."""
    from snc.reference import dg as ref

    torch.manual_seed(int(cfg.seed))
    model = task.build_model(pretrained=False).to(device)
    opt = optimizer_for(cfg, task.param_groups(model))
    c, folder, b = task.crop, task.folder, int(cfg.batch_size)
    mean, std = list(cfg.dataset.mean), list(cfg.dataset.std)
    if task.sampling == "balanced":
        small = {d: len(task.splits[d][0]) for d in task.sources if len(task.splits[d][0]) < b}
        if small:  # its RandomSampler draws len(split) indices per pass: no full batch, ever
            from snc.errors import ConfigError

            raise ConfigError(f"the training split of {small} is smaller than batch_size={b}: "
                              "DomainBed's loader (drop_last) would never yield a batch; use "
                              "more images (+bench.images, dataset.per_class) or a smaller "
                              "batch_size")
        transform = ref.domainbed_transform(c.size, c.scale, c.jitter, c.grayscale, mean, std,
                                            flip=c.flip)
        batches = ref.domainbed_loaders(str(folder.root), task.sources,
                                        {d: task.splits[d][0] for d in task.sources},
                                        transform, b, workers)
        return ref.ERMStep(model, opt, batches, device, freeze_bn=bool(cfg.task.freeze_bn))
    items = [(str(folder.root / folder.files[d][int(i)][0]), folder.files[d][int(i)][1], k)
             for k, d in enumerate(task.sources) for i in task.splits[d][0]]
    loader = ref.dassl_loader(items, ref.dassl_transform(c.size, mean, std), b, workers,
                              pin_memory=device.type == "cuda")
    return ref.VanillaStep(model, opt, loader, device)


def bench_dg(argv: Sequence[str]) -> int:
    import time

    from snc.data.dg import decode_domains, scan_domains
    from snc.tasks.dg import DomainGeneralization

    cfg = dg_config(argv)
    device = select_device(str(cfg.device))
    cuda = device.type == "cuda"
    opt_b = bench_options(cfg, cuda)
    extra = cfg.get("bench") or {}
    with ExitStack() as stack:
        data = dg_data(cfg, int(extra.get("images", 560)), stack)
        decode = ""
        if bool(extra.get("decode", True)):  # snc's one-off cost, uncached
            ds = cfg.dataset
            probe = DomainGeneralization(cfg)
            folder = scan_domains(probe.root(), probe.domains, missing=probe._missing())
            start = time.perf_counter()
            arrays = decode_domains(folder, int(ds.image_size), None)
            seconds = time.perf_counter() - start
            n = sum(len(a) for a in arrays.values())
            decode = (f"decode once (Pillow, {n} images to {int(ds.image_size)} px, one "
                      f"process; snc caches them): {seconds:.1f} s, {n / seconds:.0f} img/s")
            del arrays
        task = set_up(DomainGeneralization, cfg, device, stack)
        task.model.train()
        batches = forever(task.train)
        inner = task_step(task, cfg, batches, device)

        def snc_step() -> None:
            task.before_step()  # as the engine: frozen BatchNorm back in evaluation mode
            inner()

        reference = dg_reference(task, cfg, device, opt_b["workers"])
        b, n_src = int(cfg.batch_size), len(task.sources)
        per_step = b * n_src if task.sampling == "balanced" else b
        timings = time_training([Variant("snc", lambda: snc_step, per_step),
                                 Variant("reference", lambda: reference.step, per_step)],
                                device, opt_b)
        def snc_data() -> None:  # what a step takes before its forward
            next(batches)

        def reference_data() -> None:
            reference.data()

        data_timings = time_training([Variant("snc data", lambda: snc_data, per_step),
                                      Variant("reference data", lambda: reference_data,
                                              per_step)], device, opt_b)
        resident = sum(t.numel() * t.element_size() for t in task.images.values()) / 2**20
        where = next(iter(task.images.values())).device
    c = task.crop
    protocol = "DomainBed" if task.sampling == "balanced" else "Dassl"
    loaders = f"{opt_b['workers']}x{n_src}" if task.sampling == "balanced" else \
        str(opt_b["workers"])
    print(header(cfg, device, f"dataset={data} reference={protocol} sampling={task.sampling} "
                 f"test_domain={task.test_domain} sources={'+'.join(task.sources)} "
                 f"backbone={cfg.backbone.name} batch={b}"
                 f"{f'x{n_src}' if task.sampling == 'balanced' else ''} images/step={per_step} "
                 f"crop={c.size} scale={list(c.scale)} jitter={c.jitter} "
                 f"grayscale={c.grayscale} freeze_bn={bool(cfg.task.freeze_bn)} "
                 f"optimizer={cfg.optimizer.get('name', 'sgd')} workers={loaders} "
                 f"steps={len(timings['snc'].times)} rounds={opt_b['rounds']} "
                 f"lead={opt_b['lead']} warmup={opt_b['warmup']} "
                 f"threads={torch.get_num_threads()}"))
    if decode:
        print(decode)
    print(f"snc keeps {sum(len(x) for x in task.images.values())} decoded images on {where} "
          f"as uint8 ({resident:.0f} MB)")
    print_table(timings, rate_columns("train img"), name_width=16)
    print_table(data_timings, rate_columns("img"), name_width=16)
    sd, rd = data_timings["snc data"], data_timings["reference data"]
    print(f"data path alone (no model): snc {1 / sd.center:.2f} batches/s "
          f"({sd.items / sd.center:.1f} img/s), reference {1 / rd.center:.2f} batches/s "
          f"({rd.items / rd.center:.1f} img/s); data_speedup_vs_reference="
          f"{rd.center / sd.center:.3f}")
    print(f"train img/s: snc {per_step / timings['snc'].center:.2f}, reference "
          f"{per_step / timings['reference'].center:.2f}")
    print(f"speedup_vs_reference={timings['reference'].center / timings['snc'].center:.3f}")
    return 0


MODES = {"fixmatch": bench_fixmatch, "segment": bench_segment, "text": bench_text,
         "dg": bench_dg}


def task_name(argv: Sequence[str]) -> str:
    """``task.name`` of the config composed from the task-selecting overrides of ``argv``
    (``task=``, ``experiment=``), so that options of a task's demo preset need not compose
    with the classification defaults."""
    chosen = [a for a in argv if a.lstrip("+~").split("=", 1)[0] in ("task", "experiment")]
    return str(compose_config(["logger=none"] + chosen).task.name)


def main(argv: Optional[List[str]] = None, task: Optional[str] = None) -> int:
    """Runs the benchmark of ``task`` (default: :func:`task_name` of ``argv``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if task is None:
        task = task_name(argv)
    if task not in MODES:
        raise SystemExit(f"no benchmark for task={task}; choose classify, "
                         f"{', '.join(MODES)}")
    return MODES[task](argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
