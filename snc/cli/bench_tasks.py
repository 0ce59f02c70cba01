"""Speed of the non-classification tasks (``task=fixmatch | segment | text``): scripts/bench.py.

    python scripts/bench.py task=fixmatch [overrides]
    python scripts/bench.py task=segment  [overrides]
    python scripts/bench.py task=text     [overrides]

Each mode composes the task's demo preset (``experiment=<task>_demo`` unless an ``experiment=``
is given) with the overrides, builds the task through its own ``setup(RunContext(...))`` and
times ``next(task.train)`` + ``task.training_step`` + backward + optimizer step (+ FixMatch's
EMA update), i.e. what the engine runs per step.

- ``fixmatch``: snc's device pipeline (the dataset resident on the device, batched weak/strong
  augmentation there, one concatenated forward) against the pipeline of the public FixMatch
  re-implementation (kekmodel/FixMatch-pytorch): per-sample PIL flip/crop/RandAugmentMC/Cutout
  (the PIL reference ops of :mod:`snc.augment.randaugment`) in DataLoader workers, a labeled and
  an unlabeled loader, ``interleave``/``de_interleave`` around the forward, fp32, the
  per-tensor ``state_dict`` EMA, SelfNorm (if any) with the official unfused ops. Prints
  steps/s and images/s of both.
- ``segment``: training images/s of snc's pipeline (``TrainTransform`` per sample, or the
  batched device warp with ``task.augment=device``, normalization on the device, configured
  precision) and of the official SEMSEG way (float32 OpenCV scale/rotate/blur/flip/crop and
  normalization per sample in DataLoader workers, fp32, SelfNorm's official unfused ops);
  evaluation images/s of both protocols: the centre crop and the sliding window + flip (snc:
  batched windows, :func:`snc.eval.segmentation.evaluate_segmentation`; official: one
  window (+ its flip) per forward, probabilities accumulated in NumPy as SEMSEG ``test.py`` does).
- ``text``: training and evaluation sentences/s (IMDb-style reviews; evaluation over the
  validation, source and target splits) and the GloVe load time, first parse vs the ``.npy``
  cache, on a fresh copy of the GloVe file each time.

Timing: warm-up first, then the variants interleaved (below); the median on CPU, the mean
and standard deviation with CUDA synchronisation on GPUs. The last line is
``speedup_vs_reference=<reference time / snc time>`` (fixmatch, segment: training step) or
``glove_cache_speedup=<parse time / cached load time>`` (text).

Training steps of snc and of the reference alternate in ``rounds`` blocks (default 2), each
block after ``lead`` untimed steps (default ``2 * workers`` = the reference's prefetch depth),
so that the reference's DataLoader workers neither run inside snc's timed steps nor hand the
reference batches made while snc was being timed (:func:`interleaved`).

Bench-only options (prefix ``+bench.``): ``steps`` (timed steps per variant; 6 on CPU, 20 on
CUDA), ``warmup`` (1 / 5), ``rounds`` (2), ``lead`` (2 x workers), ``repeats`` (timed
evaluation / GloVe repetitions; 3 / 5), ``workers`` (reference DataLoader workers per loader,
2), ``eval_images`` (segment: the first source val images evaluated, 8).
"""

from __future__ import annotations

import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from snc.config import compose_config
from snc.engine.precision import autocast_context
from snc.engine.runner import select_device
from snc.reference import use_official_ops
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forever(make: Callable[[], Iterator]) -> Iterator:
    while True:
        yield from make()


class Timer:
    """Repeated timings of one variant; ``center`` is the median (CPU) or mean (CUDA)."""

    def __init__(self, name: str, cuda: bool) -> None:
        self.name, self.cuda, self.times = name, cuda, []  # type: ignore[var-annotated]

    @property
    def center(self) -> float:
        return (statistics.mean if self.cuda else statistics.median)(self.times)

    @property
    def spread(self) -> float:
        return statistics.stdev(self.times) if len(self.times) > 1 else 0.0


def interleaved(runs: Dict[str, Callable[[], float]], steps: int, warmup: int, cuda: bool,
                lead: int = 0, rounds: int = 1) -> Dict[str, Timer]:
    """Warm-up rounds, then ``steps`` timed calls of each run, interleaved.

    With ``rounds=1`` the runs alternate call by call. With ``rounds > 1`` they alternate in
    blocks of ``ceil(steps / rounds)`` timed calls, each block after ``lead`` untimed calls:
    a reference whose DataLoader workers keep ``workers * prefetch_factor`` batches ahead
    would otherwise make them while the *other* variant is being timed (stealing its CPU on
    a busy machine) and then time its own steps on batches made for free. ``lead`` untimed
    steps let both the queue and the other variant's background work settle to the steady
    state, which the timed steps then measure.
    """
    for _ in range(warmup):
        for run in runs.values():
            run()
    timers = {name: Timer(name, cuda) for name in runs}
    if rounds <= 1:
        for _ in range(steps):
            for name, run in runs.items():
                timers[name].times.append(run())
        return timers
    per_block = -(-steps // rounds)
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(lead):
                run()
            timers[name].times.extend(run() for _ in range(per_block))
    return timers


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


def task_step_timer(task, model, opt, batches: Iterator, device: torch.device, amp: str,
                    after: Optional[Callable[[Any], None]] = None) -> Callable[[], float]:
    """One timed training step of ``task`` on snc's path (data, forward, backward, update, and
    the task's per-step hook), synchronised on CUDA; ``after(batch)`` runs inside the timing."""
    step_no = [0]

    def step() -> float:
        sync(device)
        start = time.perf_counter()
        batch = next(batches)
        with autocast_context(device, amp):
            loss, _ = task.training_step(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_no[0] += 1
        task.after_step(model, step_no[0])
        if after is not None:
            after(batch)
        sync(device)
        return time.perf_counter() - start

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


def table(timers: Dict[str, Timer], per_step: Dict[str, int], unit: str) -> List[str]:
    cuda = any(t.cuda for t in timers.values())
    lines = [f"{'variant':<11}{'step ms' if cuda else 'median ms':>10}{'± ms':>8}"
             f"{'steps/s':>10}{unit + '/s':>14}"]
    for name, t in timers.items():
        lines.append(f"{name:<11}{1000 * t.center:>10.1f}{1000 * t.spread:>8.1f}"
                     f"{1 / t.center:>10.2f}{per_step[name] / t.center:>14.1f}")
    return lines


# ----- FixMatch ------------------------------------------------------------------------------

def _interleave(x: torch.Tensor, size: int) -> torch.Tensor:  # kekmodel/FixMatch-pytorch
    s = list(x.shape)
    return x.reshape([-1, size] + s[1:]).transpose(0, 1).reshape([-1] + s[1:])


def _de_interleave(x: torch.Tensor, size: int) -> torch.Tensor:
    s = list(x.shape)
    return x.reshape([size, -1] + s[1:]).transpose(0, 1).reshape([-1] + s[1:])


class _FixMatchReferenceSet(torch.utils.data.Dataset):
    """kekmodel's ``CIFAR10SSL`` + ``TransformFixMatch``: PIL weak (flip, reflect-padded crop)
    and strong (weak + RandAugmentMC(2, 10) + Cutout 16) views, ToTensor + Normalize."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, mean, std,
                 strong: Optional[str], padding: int) -> None:
        import torchvision.transforms as T

        self.images, self.labels, self.indices = images, labels, indices
        self.weak = T.Compose([T.RandomHorizontalFlip(),
                               T.RandomCrop(size=32, padding=padding, padding_mode="reflect")])
        self.normalize = T.Compose([T.ToTensor(), T.Normalize(mean=mean, std=std)])
        self.strong = strong  # None: labeled set (one weak view)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        from PIL import Image

        from snc.augment.randaugment import pil_randaugment_mc

        k = int(self.indices[i])
        img, y = Image.fromarray(self.images[k]), int(self.labels[k])
        if self.strong is None:
            return self.normalize(self.weak(img)), y
        weak = self.weak(img)
        strong = self.weak(img)
        if self.strong == "randaugment":  # Python's global RNG, as the reference
            strong = pil_randaugment_mc(strong, random, n=2, m=10)
        return (self.normalize(weak), self.normalize(strong)), y


class _KekEMA:
    """kekmodel's ``ModelEMA.update``: per tensor over ``state_dict()``."""

    def __init__(self, ema: torch.nn.Module, decay: float) -> None:
        self.ema, self.decay = ema, decay
        self.param_keys = [k for k, _ in ema.named_parameters()]
        self.buffer_keys = [k for k, _ in ema.named_buffers()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        msd, esd = model.state_dict(), self.ema.state_dict()
        for k in self.param_keys:
            esd[k].copy_(esd[k] * self.decay + (1.0 - self.decay) * msd[k].detach())
        for k in self.buffer_keys:
            esd[k].copy_(msd[k])


def bench_fixmatch(argv: Sequence[str]) -> int:
    from snc.data.datasets import get_source
    from snc.ops import RowCrossNorm
    from snc.tasks.fixmatch import FixMatchTask

    cfg = compose("fixmatch", argv, ["evaluate_corruptions=false"])
    device = select_device(str(cfg.device))
    cuda = device.type == "cuda"
    opt_b = bench_options(cfg, cuda)
    if cuda:
        torch.backends.cudnn.benchmark = True
    with ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="snc-bench-")))
        torch.manual_seed(int(cfg.seed))
        task = FixMatchTask(cfg)
        task.setup(RunContext(device=device, run_dir=run_dir, seed=int(cfg.seed)))
        o = task.opts
        model = task.model
        opt = optimizer_for(cfg, task.param_groups(model))
        stream = iter(task.train)
        b, mu = int(cfg.batch_size), int(o.mu)
        per_step = b + 2 * mu * b
        snc_step = task_step_timer(task, model, opt, stream, device, str(cfg.amp))

        # the reference: same data, labeled split, network and optimizer settings
        source = get_source(cfg, Path(cfg.paths.data_dir))
        xtr, ytr = source.train
        xtr, ytr = np.ascontiguousarray(xtr), np.asarray(ytr, dtype=np.int64)
        mean, std = list(cfg.dataset.mean), list(cfg.dataset.std)
        workers = opt_b["workers"]
        common = dict(num_workers=workers, pin_memory=cuda, drop_last=True,
                      persistent_workers=workers > 0)
        lab_loader = torch.utils.data.DataLoader(
            _FixMatchReferenceSet(xtr, ytr, task.labeled_indices, mean, std, None,
                                  o.crop_padding),
            batch_size=b, sampler=torch.utils.data.RandomSampler(
                range(len(task.labeled_indices)), replacement=True, num_samples=b * 10_000),
            **common)
        unl_loader = torch.utils.data.DataLoader(
            _FixMatchReferenceSet(xtr, ytr, np.arange(len(xtr)), mean, std, o.strong,
                                  o.crop_padding),
            batch_size=b * mu, shuffle=True, **common)
        lab_iter = forever(lambda: iter(lab_loader))
        unl_iter = forever(lambda: iter(unl_loader))
        ref_model = use_official_ops(task.build_model()).to(device)
        ref_ema = _KekEMA(task.build_model().to(device), o.ema_decay)
        ref_opt = optimizer_for(cfg, task.param_groups(ref_model))
        ref_ctrl = ref_model.cn_controller

        def reference_step() -> float:
            sync(device)
            start = time.perf_counter()
            inputs_x, targets_x = next(lab_iter)
            (inputs_w, inputs_s), _ = next(unl_iter)
            inputs = _interleave(torch.cat((inputs_x, inputs_w, inputs_s)), 2 * mu + 1)
            inputs, targets_x = inputs.to(device), targets_x.to(device)
            for unit in ref_ctrl.units:  # the same CN cost (rows as the configured subset)
                if isinstance(unit, RowCrossNorm):
                    unit.row_start = {"all": None, "unlabeled": b,
                                      "strong": b + mu * b}[o.cn_apply_to]
            with ref_ctrl.step():
                logits = _de_interleave(ref_model(inputs), 2 * mu + 1)
            logits_x = logits[:b]
            logits_w, logits_s = logits[b:].chunk(2)
            lx = F.cross_entropy(logits_x, targets_x, reduction="mean")
            probs = torch.softmax(logits_w.detach() / o.temperature, dim=-1)
            max_probs, targets_u = torch.max(probs, dim=-1)
            mask = max_probs.ge(o.threshold).float()
            lu = (F.cross_entropy(logits_s, targets_u, reduction="none") * mask).mean()
            loss = lx + o.lambda_u * lu
            loss.backward()
            ref_opt.step()
            ref_ema.update(ref_model)
            ref_model.zero_grad()
            sync(device)
            return time.perf_counter() - start

        timers = interleaved({"snc": snc_step, "reference": reference_step},
                             opt_b["steps"], opt_b["warmup"], cuda, lead=opt_b["lead"],
                             rounds=opt_b["rounds"])
    print(header(cfg, device, f"backbone={cfg.backbone.name} batch={b} mu={mu} "
                 f"images/step={per_step} strong={o.strong} cn_apply_to={o.cn_apply_to} "
                 f"workers={workers} steps={len(timers['snc'].times)} rounds={opt_b['rounds']} "
                 f"lead={opt_b['lead']} warmup={opt_b['warmup']} "
                 f"threads={torch.get_num_threads()}"))
    for line in table(timers, {"snc": per_step, "reference": per_step}, "img"):
        print(line)
    print(f"train steps/s: snc {1 / timers['snc'].center:.2f}, reference "
          f"{1 / timers['reference'].center:.2f}")
    print(f"speedup_vs_reference={timers['reference'].center / timers['snc'].center:.3f}")
    return 0


# ----- segmentation --------------------------------------------------------------------------

class _SemsegReferenceTrain(torch.utils.data.Dataset):
    """SEMSEG ``util/transform.py`` training chain on float32 OpenCV arrays: RandScale,
    RandRotate (p 0.5, mean / 255 fill), RandomGaussianBlur 5x5 (p 0.5), RandomHorizontalFlip,
    Crop (rand, padded), ToTensor, Normalize (mean * 255, std * 255)."""

    def __init__(self, dataset, crop: int, scale, rotate: float, rotate_p: float,
                 blur_p: float, mean, std, train: bool = True) -> None:
        self.dataset, self.crop, self.scale, self.train = dataset, crop, scale, train
        self.rotate, self.rotate_p, self.blur_p = rotate, rotate_p, blur_p
        self.mean = [255 * m for m in mean]
        self.std = [255 * s for s in std]

    def __len__(self) -> int:
        return len(self.dataset)

    def _crop(self, image, label, center: bool):
        import cv2

        h, w = label.shape
        ph, pw = max(self.crop - h, 0), max(self.crop - w, 0)
        if ph or pw:
            t, le = ph // 2, pw // 2
            image = cv2.copyMakeBorder(image, t, ph - t, le, pw - le, cv2.BORDER_CONSTANT,
                                       value=self.mean)
            label = cv2.copyMakeBorder(label, t, ph - t, le, pw - le, cv2.BORDER_CONSTANT,
                                       value=255)
        h, w = label.shape
        if center:
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
        else:
            top, left = random.randint(0, h - self.crop), random.randint(0, w - self.crop)
        return (image[top:top + self.crop, left:left + self.crop],
                label[top:top + self.crop, left:left + self.crop])

    def __getitem__(self, i: int):
        import cv2

        image, label = self.dataset[i]
        image = np.float32(image)  # SEMSEG: cv2.imread -> RGB -> float32
        if self.train:
            s = self.scale[0] + (self.scale[1] - self.scale[0]) * random.random()
            image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
            if random.random() < self.rotate_p:
                angle = -self.rotate + 2 * self.rotate * random.random()
                h, w = label.shape
                m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)
                image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=self.mean)
                label = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=255)
            if random.random() < self.blur_p:
                image = cv2.GaussianBlur(image, (5, 5), 0)
            if random.random() < 0.5:
                image, label = cv2.flip(image, 1), cv2.flip(label, 1)
        image, label = self._crop(image, label, center=not self.train)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose((2, 0, 1)))).float()
        for t, m, s in zip(x, self.mean, self.std, strict=True):
            t.sub_(m).div_(s)
        return x, torch.from_numpy(np.ascontiguousarray(label)).long()


def _semseg_sliding(model, image: np.ndarray, crop: int, mean, std, device) -> np.ndarray:
    """SEMSEG ``test.py`` ``scale_process`` + ``net_process`` (flip) of one float32 image."""
    import cv2

    from snc.eval.segmentation import logits_of

    h0, w0 = image.shape[:2]
    ph, pw = max(crop - h0, 0), max(crop - w0, 0)
    t, le = ph // 2, pw // 2
    if ph or pw:
        image = cv2.copyMakeBorder(image, t, ph - t, le, pw - le, cv2.BORDER_CONSTANT,
                                   value=mean)
    h, w = image.shape[:2]
    stride = int(math.ceil(crop * 2 / 3))
    gh, gw = int(math.ceil(float(h - crop) / stride) + 1), int(math.ceil(float(w - crop) /
                                                                         stride) + 1)
    pred, count = None, np.zeros((h, w), dtype=float)
    for r in range(gh):
        for c in range(gw):
            sh = min(r * stride, h - crop)
            sw = min(c * stride, w - crop)
            window = image[sh:sh + crop, sw:sw + crop].copy()
            x = torch.from_numpy(window.transpose((2, 0, 1))).float()
            for ch, m, s in zip(x, mean, std, strict=True):
                ch.sub_(m).div_(s)
            x = x.unsqueeze(0).to(device)
            x = torch.cat([x, x.flip(3)], 0)
            with torch.no_grad():
                out = F.softmax(logits_of(model, x), dim=1)
            out = ((out[0] + out[1].flip(2)) / 2).cpu().numpy().transpose(1, 2, 0)
            if pred is None:
                pred = np.zeros((h, w, out.shape[2]), dtype=float)
            pred[sh:sh + crop, sw:sw + crop] += out
            count[sh:sh + crop, sw:sw + crop] += 1
    pred /= np.expand_dims(count, 2)
    return pred[t:t + h0, le:le + w0].argmax(axis=2)


def bench_segment(argv: Sequence[str]) -> int:
    from snc.eval.segmentation import evaluate_segmentation, logits_of
    from snc.tasks.segment import SegmentTask

    cfg = compose("segment", argv)
    device = select_device(str(cfg.device))
    cuda = device.type == "cuda"
    opt_b = bench_options(cfg, cuda)
    if cuda:
        torch.backends.cudnn.benchmark = True
    t, d = cfg.task, cfg.dataset
    crop, b = int(t.crop), int(cfg.batch_size)
    with ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="snc-bench-")))
        torch.manual_seed(int(cfg.seed))
        task = SegmentTask(cfg)
        task.setup(RunContext(device=device, run_dir=run_dir, seed=int(cfg.seed)))
        model = task.model
        opt = optimizer_for(cfg, task.param_groups(model))
        batches = forever(lambda: iter(task.train))

        snc_step = task_step_timer(task, model, opt, batches, device, str(cfg.amp))

        train_set = task.train.dataset
        workers = opt_b["workers"]
        ref_ds = _SemsegReferenceTrain(train_set, crop, tuple(float(v) for v in t.scale),
                                       float(t.rotate), float(t.rotate_p), float(t.blur_p),
                                       list(d.mean), list(d.std))
        ref_loader = torch.utils.data.DataLoader(ref_ds, batch_size=b, shuffle=True,
                                                 num_workers=workers, pin_memory=cuda,
                                                 drop_last=True, persistent_workers=workers > 0)
        ref_batches = forever(lambda: iter(ref_loader))
        torch.manual_seed(int(cfg.seed))
        ref_model = use_official_ops(task.build_model()).to(device)  # unfused SelfNorm
        ref_opt = optimizer_for(cfg, task.param_groups(ref_model))
        aux_w = float(t.aux_weight)

        def reference_step() -> float:
            sync(device)
            start = time.perf_counter()
            x, y = next(ref_batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            ctrl = getattr(ref_model, "cn_controller", None)
            if ctrl is not None and len(ctrl):
                with ctrl.step():
                    out = ref_model(x)
            else:
                out = ref_model(x)
            loss = F.cross_entropy(out["out"], y, ignore_index=255)
            if "aux" in out:
                loss = loss + aux_w * F.cross_entropy(out["aux"], y, ignore_index=255)
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
            sync(device)
            return time.perf_counter() - start

        timers = interleaved({"snc": snc_step, "reference": reference_step},
                             opt_b["steps"], opt_b["warmup"], cuda, lead=opt_b["lead"],
                             rounds=opt_b["rounds"])

        # evaluation: the first eval_images of the source val split
        from snc.data.segmentation.base import PairDataset

        val = task.val["source"]
        n_eval = min(len(val), opt_b["eval_images"] or 8)
        val = PairDataset(val.pairs[:n_eval], "source")
        stride, window_batch = t.eval.get("stride"), int(t.eval.window_batch)

        def snc_eval(protocol: str) -> Callable[[], float]:
            def run() -> float:
                _, stats = evaluate_segmentation(
                    model, task._batches(val, protocol), protocol, task.normalize, device,
                    crop=crop, stride=stride, flip=bool(t.eval.flip),
                    base_size=t.eval.get("base_size"), window_batch=window_batch,
                    num_classes=int(t.num_classes), expected=len(val))
                return stats["seconds"]
            return run

        ref_center = torch.utils.data.DataLoader(
            _SemsegReferenceTrain(val, crop, (1.0, 1.0), 0.0, 0.0, 0.0, list(d.mean),
                                  list(d.std), train=False),
            batch_size=int(t.eval.batch_size), num_workers=workers,
            persistent_workers=workers > 0)
        mean255, std255 = [255 * m for m in d.mean], [255 * s for s in d.std]

        def ref_eval_center() -> float:
            sync(device)
            start = time.perf_counter()
            ref_model.eval()
            with torch.no_grad():
                for x, y in ref_center:
                    pred = logits_of(ref_model, x.to(device)).argmax(1)
                    keep = y.to(device) != 255
                    torch.bincount(y.to(device)[keep] * 19 + pred[keep], minlength=19 * 19)
            ref_model.train()
            sync(device)
            return time.perf_counter() - start

        def ref_eval_sliding() -> float:
            sync(device)
            start = time.perf_counter()
            ref_model.eval()
            for k in range(len(val)):
                image, label = val[k]
                pred = _semseg_sliding(ref_model, np.float32(image), crop, mean255, std255,
                                       device)
                keep = label != 255
                np.bincount(label[keep].astype(np.int64) * 19 + pred[keep], minlength=19 * 19)
            ref_model.train()
            sync(device)
            return time.perf_counter() - start

        evals = interleaved({"snc center": snc_eval("center"), "ref center": ref_eval_center,
                             "snc sliding": snc_eval("sliding"),
                             "ref sliding": ref_eval_sliding},
                            opt_b["repeats"], 1, cuda)
    print(header(cfg, device, f"backbone={cfg.backbone.name} width="
                 f"{(cfg.backbone.get('overrides') or {}).get('width', 64)} crop={crop} "
                 f"batch={b} augment={task.augment} workers={workers} "
                 f"steps={len(timers['snc'].times)} rounds={opt_b['rounds']} lead={opt_b['lead']} "
                 f"warmup={opt_b['warmup']} threads={torch.get_num_threads()}"))
    for line in table(timers, {"snc": b, "reference": b}, "train img"):
        print(line)
    print(f"train img/s: snc {b / timers['snc'].center:.2f}, reference "
          f"{b / timers['reference'].center:.2f}")
    rate = {k: n_eval / v.center for k, v in evals.items()}
    print(f"eval img/s ({n_eval} source val images, median of {opt_b['repeats']}): centre crop "
          f"{crop}: snc {rate['snc center']:.2f}, reference {rate['ref center']:.2f}; sliding "
          f"window (stride {stride or -(-2 * crop // 3)}) + flip: snc {rate['snc sliding']:.2f}, "
          f"reference {rate['ref sliding']:.2f}")
    print(f"speedup_vs_reference={timers['reference'].center / timers['snc'].center:.3f}")
    return 0


# ----- text ----------------------------------------------------------------------------------

def bench_text(argv: Sequence[str]) -> int:
    from snc.data.text.glove import load_glove
    from snc.tasks.text import TextTask, binary_metrics

    cfg = compose("text", argv)
    device = select_device(str(cfg.device))
    cuda = device.type == "cuda"
    opt_b = bench_options(cfg, cuda)
    with ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="snc-bench-")))
        torch.manual_seed(int(cfg.seed))
        task = TextTask(cfg)
        task.setup(RunContext(device=device, run_dir=run_dir, seed=int(cfg.seed)))
        model = task.model
        opt = optimizer_for(cfg, task.param_groups(model))
        batches = forever(lambda: iter(task.train))
        sizes: List[int] = []

        train_step = task_step_timer(task, model, opt, batches, device, str(cfg.amp),
                                     after=lambda batch: sizes.append(len(batch[1])))

        glove_src = Path(str(cfg.dataset.glove_path))
        dim = int(cfg.dataset.glove_dim)
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="snc-glove-")))
        copies = [0]
        loaded: Dict[str, bool] = {}

        def glove_parse() -> float:  # a fresh copy: no cache beside it
            copies[0] += 1
            folder = scratch / str(copies[0])
            folder.mkdir()
            shutil.copy2(glove_src, folder / glove_src.name)
            g = load_glove(folder / glove_src.name, dim, md5=None, cache=True)
            loaded["parse"] = g.from_cache
            return g.seconds

        def glove_cached() -> float:  # the copy just parsed, now with its cache
            g = load_glove(scratch / str(copies[0]) / glove_src.name, dim, md5=None, cache=True)
            loaded["cached"] = g.from_cache
            return g.seconds

        timers = interleaved({"train": train_step}, opt_b["steps"], opt_b["warmup"], cuda)
        n_sent = statistics.median(sizes[opt_b["warmup"]:] or sizes)
        loaders = task.eval_loaders

        def eval_run() -> float:
            sync(device)
            start = time.perf_counter()
            for loader in loaders.values():
                binary_metrics(model, loader, device)
            sync(device)
            return time.perf_counter() - start

        n_eval = sum(loader.num_samples for loader in loaders.values())
        other = interleaved({"eval": eval_run, "glove parse": glove_parse,
                             "glove cached": glove_cached}, opt_b["repeats"], 1, cuda)
        if loaded.get("parse") or not loaded.get("cached"):
            raise RuntimeError(f"GloVe timing did not see parse then cache: {loaded}")
        vocab, glove_rows = len(task.vocab), None
        with open(glove_src, "rb") as f:
            glove_rows = sum(1 for _ in f)
    tr = timers["train"]
    print(header(cfg, device, f"backbone={cfg.backbone.name} sn={cfg.sn.name} cn={cfg.cn.name} "
                 f"batch={cfg.batch_size} eval_batch={cfg.eval_batch_size} vocab={vocab} "
                 f"tokenizer={task.info.get('tokenizer')} steps={opt_b['steps']} "
                 f"warmup={opt_b['warmup']} threads={torch.get_num_threads()}"))
    print(f"train: {'median ms' if not cuda else 'step ms'} {1000 * tr.center:.1f} ± "
          f"{1000 * tr.spread:.1f}  sentences/s {n_sent / tr.center:.1f}")
    ev = other["eval"]
    print(f"eval sentences/s ({n_eval} sentences: val + source + target, median of "
          f"{opt_b['repeats']}): {n_eval / ev.center:.1f}")
    parse, cached = other["glove parse"].center, other["glove cached"].center
    print(f"glove load ({glove_rows} vectors x {dim}): first parse {1000 * parse:.1f} ms, "
          f"cached {1000 * cached:.1f} ms")
    print(f"glove_cache_speedup={parse / cached:.3f}")
    return 0


MODES = {"fixmatch": bench_fixmatch, "segment": bench_segment, "text": bench_text}


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
