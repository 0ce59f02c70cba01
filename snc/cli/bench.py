"""Training/evaluation speed of snc against a reference pipeline written like the official code.

    python scripts/bench.py backbone=wrn40_2 sn=on cn=on device=cpu
    python scripts/bench.py backbone=wrn40_2 sn=on cn=on augmix=on amp=bf16 device=cuda

Takes the overrides of train.py (same configs). Random uint8 data of the real shapes.
For the chosen backbone it times one training step (data + forward + backward + update) of

- ``plain`` / ``+sn`` / ``+cn`` / the requested variant on snc's path: the dataset resident on
  the device, batched crop/flip (and AugMix) there, the configured precision; CN is measured
  switched on at every step (``prob=1``, the worst case), and also reported at the configured
  ``prob``;
- ``reference``: the requested variant as the official scripts run it: torchvision PIL
  transforms (and PIL AugMix) in a 2-worker DataLoader, fp32, SelfNorm with the official
  unfused statistics (``snc.reference``).

With ``compile=true`` (and by default on CUDA) the four snc variants are timed a second time
with the whole training step compiled as train.py compiles it (``snc.engine.loop.CompiledStep``:
forward + loss as one graph, its backward, the optimizer update; ``compile_mode`` applies).
On a GPU, and when compiled, CN draws on the device (capture mode), as train.py does there.
Each row gives the step time, images/s and the minutes of 100 epochs of 50,000 images.

It also times evaluation (inference mode, ``eval_batch_size``) with the time of a 750,000-image
corrupted set at that rate, and reports peak memory (CUDA: allocator peak; CPU: process max
RSS). Timing: warm-up steps first, then the mean and standard
deviation of the timed steps (the median on CPU, where two busy cores make single steps
noisy), variants interleaved so slow drifts hit all alike; CUDA events
with synchronisation on GPUs. The last line is ``speedup_vs_reference=<reference step time /
snc step time>``.

Bench-only options (prefix ``+bench.``): ``steps`` (timed steps per variant, default 3 on CPU,
20 on CUDA), ``warmup`` (1 / 5), ``eval_batches`` (1 / 10), ``images`` (dataset size),
``shifts`` (time -C-bar generation at 32 and 224 px and evaluation over the generated set;
default true), ``shift_images`` (images of that set, default 100), ``compiled`` (time the
compiled step too; default: ``compile`` or CUDA), ``epochs`` (N > 0: instead of single steps,
time N whole epochs of the requested config through train.py's own path,
``snc.engine.runner.run``, on synthetic data of ``images`` CIFAR-sized images, and print its
images/s), ``backend`` (the compiler backend of the compiled rows, default ``inductor``;
``aot_eager`` checks the capture without code generation).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from snc.augment.augmix import AugMix
from snc.config import compose_config
from snc.data.loader import ArrayLoader
from snc.engine.loop import CompiledStep
from snc.engine.precision import autocast_context
from snc.engine.runner import select_device, validate
from snc.eval.robustness import count_errors
from snc.tasks import objectives
from snc.tasks.classify import build_network


def compose_cfg(argv: List[str]):
    return compose_config(["logger=none", "dataset=cifar10"] + list(argv))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Variant:
    """One model + data path whose training step can be timed repeatedly."""

    def __init__(self, name: str, cfg, device, images, labels, reference: bool = False,
                 compiled: bool = False, backend: str = "inductor"):
        self.name, self.cfg, self.device, self.reference = name, cfg, device, reference
        torch.manual_seed(0)
        task = validate(cfg)
        self.objective_name = task.objective
        self.model = build_network(cfg, 10).to(device)
        if reference:
            from snc.reference import use_official_ops

            use_official_ops(self.model)
        if cfg.channels_last and not reference:
            self.model = self.model.to(memory_format=torch.channels_last)
        ctrl = self.model.cn_controller
        if len(ctrl) and not reference and (compiled or device.type != "cpu"):
            ctrl.enable_capture(device)  # as classify.setup: device draws on GPUs / compiled
        self.forward = self.model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                   weight_decay=5e-4)
        self.obj_cfg = task.objective_cfg
        self.objective = objectives.REGISTRY[self.objective_name]
        self.amp = "none" if reference else cfg.amp
        self.compiled = None
        if compiled:
            self.compiled = CompiledStep(self, self.model, self.opt, device, self.amp,
                                         mode=cfg.get("compile_mode", "default"),
                                         backend=backend)
        self.batches = self._reference_batches(images, labels) if reference else \
            self._snc_batches(images, labels)
        self.times: List[float] = []

    def _snc_batches(self, images, labels):
        d = self.cfg.dataset
        augmix = None
        if self.cfg.augmix.enabled:
            augmix = AugMix(list(d.mean), list(d.std), severity=self.cfg.augmix.severity)
        loader = ArrayLoader(images, labels, batch_size=self.cfg.batch_size, mean=list(d.mean),
                             std=list(d.std), train=True, augmix=augmix, device=self.device,
                             drop_last=True, channels_last=self.cfg.channels_last)

        def forever():
            while True:
                yield from loader
        return forever()

    def _reference_batches(self, images, labels):
        from snc.reference import reference_loader

        loader = reference_loader(images, labels, self.cfg)

        def forever():
            while True:
                for x, y in loader:
                    if isinstance(x, (list, tuple)):
                        x = tuple(v.to(self.device, non_blocking=True) for v in x)
                    else:
                        x = x.to(self.device, non_blocking=True)
                    yield x, y.to(self.device, non_blocking=True)
        return forever()

    def training_step(self, model, batch):
        """The task's step as train.py runs it (the objective with the model's controller)."""
        return self.objective(model, batch, self.model.cn_controller, self.obj_cfg)

    def step(self) -> float:
        sync(self.device)
        start = time.perf_counter()
        batch = next(self.batches)
        self.model.cn_controller.begin_step()  # capture mode: this step's device draws
        if self.compiled is not None:
            loss, _ = self.compiled.forward_loss(batch)
        else:
            with autocast_context(self.device, self.amp):
                loss, _ = self.training_step(self.forward, batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        (self.compiled.update if self.compiled is not None else self.opt.step)()
        sync(self.device)
        return time.perf_counter() - start


def time_eval(variant: Variant, images, labels, batches: int) -> float:
    d = variant.cfg.dataset
    n = min(len(images), batches * variant.cfg.eval_batch_size)
    loader = ArrayLoader(images[:n], labels[:n], batch_size=variant.cfg.eval_batch_size,
                         mean=list(d.mean), std=list(d.std), device=variant.device,
                         channels_last=variant.cfg.channels_last)
    warm = ArrayLoader(images[:64], labels[:64], batch_size=64, mean=list(d.mean),
                       std=list(d.std), device=variant.device,
                       channels_last=variant.cfg.channels_last)
    count_errors(variant.forward, warm, variant.amp)  # warm-up
    sync(variant.device)
    start = time.perf_counter()
    count_errors(variant.forward, loader, variant.amp)
    sync(variant.device)
    return n / (time.perf_counter() - start)


def time_shifts(variant: Variant, images, labels, n: int = 100, n224: int = 2) -> None:
    """-C-bar generation images/s at 32 px (a set of ``n`` images in the published layout) and
    224 px (``n224`` images per ImageNet-C-bar corruption), and evaluation images/s over the
    generated set as the shift suite reads it (memory-mapped files, loader, model)."""
    import tempfile
    from pathlib import Path

    from snc.corruptions import CBAR_CORRUPTIONS, corrupt
    from snc.corruptions.sets import generate_cifar_style
    from snc.data.datasets import ArrayCorruptedSets
    from snc.eval.robustness import evaluate_corruptions

    d, names = variant.cfg.dataset, CBAR_CORRUPTIONS["cifar"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_cifar_style(images[:n], labels[:n], Path(tmp), corruptions=names,
                             preset="cifar", workers=0, progress=False)
        made = 5 * len(names) * n / (time.perf_counter() - start)
        big = np.random.default_rng(1).integers(0, 256, (n224, 224, 224, 3), dtype=np.uint8)
        start = time.perf_counter()
        for name in CBAR_CORRUPTIONS["imagenet"]:
            corrupt(big, name, 3, preset="imagenet")
        made224 = len(CBAR_CORRUPTIONS["imagenet"]) * n224 / (time.perf_counter() - start)

        def loader(x, y):
            return ArrayLoader(x, y, batch_size=variant.cfg.eval_batch_size, mean=list(d.mean),
                               std=list(d.std), device=variant.device,
                               channels_last=variant.cfg.channels_last)

        sets = ArrayCorruptedSets(root=Path(tmp), corruptions=names, mode="published",
                                  make_loader=loader, generate=lambda: None)
        sync(variant.device)
        start = time.perf_counter()
        evaluate_corruptions(variant.forward, sets, variant.amp, per_image={})
        sync(variant.device)
        evaluated = 5 * len(names) * n / (time.perf_counter() - start)
    print(f"-C-bar generation img/s (one process): 32 px {made:.0f}, 224 px {made224:.1f}; "
          f"shift-set eval img/s (generated CIFAR-C-bar, {5 * len(names) * n:,} images, "
          f"per-image rows kept): {evaluated:.0f}")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from snc.cli import bench_tasks  # fixmatch / segment / text: snc/cli/bench_tasks.py

    task = bench_tasks.task_name(argv)
    if task != "classify":
        return bench_tasks.main(argv, task=task)
    cfg = compose_cfg(argv)
    if cfg.backbone.get("source") and not any(a.startswith("backbone.cifar_stem") for a in argv):
        # torchvision/timm ImageNet stems leave 1x1 maps on the bench's 32-px images
        argv = argv + ["backbone.cifar_stem=true"]
        cfg = compose_cfg(argv)
    device = select_device(cfg.device)
    bench = cfg.get("bench") or {}
    if int(bench.get("epochs", 0)) > 0:
        return time_epochs(argv, int(bench.epochs), int(bench.get("images", 5_000)))
    cuda = device.type == "cuda"
    steps = int(bench.get("steps", 20 if cuda else 3))
    warmup = int(bench.get("warmup", 5 if cuda else 1))
    eval_batches = int(bench.get("eval_batches", 10 if cuda else 1))
    n_images = int(bench.get("images", 50_000 if cuda else 4 * cfg.batch_size))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n_images)
    if cuda:
        torch.backends.cudnn.benchmark = True
    torch.set_num_threads(torch.get_num_threads())

    want_sn, want_cn = cfg.sn.name != "off", cfg.cn.name != "off"
    sn_choice = cfg.sn.name if want_sn else "on"
    prob = float(cfg.cn.prob) if want_cn else 0.5

    def variant_cfg(sn: bool, cn: bool, prob: float = 1.0):
        """The requested config with SN/CN switched, composed as train.py would."""
        switched = ("sn=", "cn=", "objective=") + (() if sn else ("sn.",)) + \
            (("cn.prob=",) if cn else ("cn.", "crop="))
        keep = [a for a in argv if not a.lstrip("+~").startswith(switched)]
        extra = [f"sn={sn_choice if sn else 'off'}", f"cn={'on' if cn else 'off'}"]
        objective = cfg.objective.name
        if not cn and objective in ("cn", "consistency"):
            objective = "auto"
        extra.append(f"objective={objective}")
        if cn:
            extra.append(f"cn.prob={prob}")
        return compose_cfg(keep + extra)
    specs: Dict[str, Callable[[], Variant]] = {}
    requested = "requested"
    if (want_sn, want_cn) == (False, False):
        requested = "plain"
    elif (want_sn, want_cn) == (True, False):
        requested = "+sn"
    elif (want_sn, want_cn) == (False, True):
        requested = "+cn"
    compiled = bool(bench.get("compiled", cfg.compile or cuda))
    switches = {"plain": (False, False), "+sn": (True, False), "+cn": (False, True),
                "requested": (True, True)}
    for suffix, comp in (("", False), (" compiled", True)) if compiled else (("", False),):
        for name, (sn, cn) in switches.items():
            if name == "requested" and requested != "requested":
                continue

            def make(name=name + suffix, sn=sn, cn=cn, comp=comp):
                return Variant(name, variant_cfg(sn, cn), device, images, labels, compiled=comp,
                               backend=str(bench.get("backend", "inductor")))
            specs[name + suffix] = make
    specs["reference"] = lambda: Variant("reference", variant_cfg(want_sn, want_cn, prob),
                                         device, images, labels, reference=True)
    variants = {name: make() for name, make in specs.items()}
    for i in range(warmup + (1 if compiled else 0)):
        for v in variants.values():
            if i < warmup or v.compiled is not None:  # compiled: the optimizer's state-made
                v.step()  # recompile falls in the warm-up too
    peaks = {}
    for _ in range(steps):
        for v in variants.values():
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            v.times.append(v.step())
            peaks[v.name] = max(peaks.get(v.name, 0.0), peak_memory_mb(device))
    stem = " cifar_stem=true" if cfg.backbone.get("cifar_stem") else ""
    print(f"device={device} backbone={cfg.backbone.name}{stem} batch={cfg.batch_size} "
          f"amp={cfg.amp} channels_last={cfg.channels_last} compile={cfg.compile} "
          f"compile_mode={cfg.get('compile_mode', 'default')} "
          f"augmix={cfg.augmix.enabled} objective={variants[requested].objective_name} "
          f"steps={steps} warmup={warmup}")
    print(f"{'variant':<20}{'step ms' if cuda else 'median ms':>10}{'± ms':>8}"
          f"{'train img/s':>13}{'100 ep min':>12}{'peak MB':>10}")
    mean = {}
    center = statistics.mean if cuda else statistics.median
    epoch_images = 50_000
    for name, v in variants.items():
        mean[name] = center(v.times)
        sd = statistics.stdev(v.times) if len(v.times) > 1 else 0.0
        minutes = 100 * epoch_images * mean[name] / cfg.batch_size / 60
        print(f"{name:<20}{1000 * mean[name]:>10.1f}{1000 * sd:>8.1f}"
              f"{cfg.batch_size / mean[name]:>13.0f}{minutes:>12.1f}{peaks[name]:>10.0f}")
    for suffix in ("", " compiled") if compiled else ("",):
        sn_over = 100 * (mean["+sn" + suffix] / mean["plain" + suffix] - 1)
        cn_over = 100 * (mean["+cn" + suffix] / mean["plain" + suffix] - 1)
        both = mean[requested + suffix] / mean["plain" + suffix]
        print(f"{suffix.strip() or 'eager'}: sn_overhead={sn_over:.1f}%  "
              f"cn_overhead(prob=1)={cn_over:.1f}%  cn_overhead(prob={prob})={cn_over * prob:.1f}%"
              f"  {requested}/plain={both:.3f}")
    if variants["+cn"].objective_name in ("consistency", "augmix"):
        print(f"(objective {variants['+cn'].objective_name}: when CN fires the step runs two "
              "more CN forwards for the consistency term, which the CN overhead includes)")
    eval_snc = time_eval(variants[requested], images, labels, eval_batches)
    print(f"eval img/s (inference, batch {cfg.eval_batch_size}): snc {eval_snc:.0f}; "
          f"a 750,000-image corrupted set (CIFAR-C) at this rate: {750_000 / eval_snc:.0f} s")
    if bench.get("shifts", True):
        time_shifts(variants[requested], images, labels, n=int(bench.get("shift_images", 100)))
    if compiled:
        print(f"speedup_vs_reference_compiled="
              f"{mean['reference'] / mean[requested + ' compiled']:.3f}")
    print(f"speedup_vs_reference={mean['reference'] / mean[requested]:.3f}")
    return 0


def time_epochs(argv: List[str], epochs: int, images: int) -> int:
    """``+bench.epochs=N``: N epochs of the requested config through train.py's own path
    (:func:`snc.engine.runner.run`) on synthetic CIFAR-sized data; prints images/s."""
    import tempfile

    from snc.engine.runner import run

    keep = [a for a in argv if not a.lstrip("+~").startswith(("bench.", "dataset"))]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(keep + [
            "logger=none", "dataset=synthetic", f"dataset.num_train={images}",
            "dataset.num_test=100", f"epochs={epochs}", "evaluate_corruptions=false",
            "evaluate.shifts=[]", "evaluate.bootstrap=0", f"paths.output_dir={tmp}",
            "progress=false"])
        results = run(cfg)
    seconds = float(results["time/train_seconds"])
    print(f"train.py path: {epochs} epoch(s) of {images:,} images in {seconds:.1f} s: "
          f"{epochs * images / seconds:.0f} img/s (compile={cfg.compile}, first epoch includes "
          f"any compilation); 100 epochs of 50,000 images at this rate: "
          f"{100 * 50_000 / (epochs * images / seconds) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
