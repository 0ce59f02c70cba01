"""Training/evaluation speed of snc against a reference pipeline written like the official code.

    python scripts/bench.py backbone=wrn40_2 sn=on cn=on device=cpu
    python scripts/bench.py backbone=wrn40_2 sn=on cn=on augmix=on amp=bf16 device=cuda

Takes the overrides of train.py (same configs). Random uint8 data of the real shapes.
For the chosen backbone it times one training step (data + forward + backward + update) of

- ``plain`` / ``+sn`` / ``+cn`` / the requested variant on snc's path: the dataset resident on
  the device, batched crop/flip (and AugMix) there, the configured precision; CN is measured
  switched on at every step (``prob=1``, the worst case), and also reported at the configured
  ``prob``; each is the requested config with SN and CN switched (:func:`switched_config`);
- ``reference``: the requested variant as the official scripts run it: torchvision PIL
  transforms (and PIL AugMix) in a 2-worker DataLoader, fp32, SelfNorm with the official
  unfused statistics (:mod:`snc.reference.cifar`).

With ``compile=true`` (and by default on CUDA) the four snc variants are timed a second time
with the whole training step compiled as train.py compiles it (``snc.engine.loop.CompiledStep``:
forward + loss as one graph, its backward, the optimizer update; ``compile_mode`` applies).
On a GPU, and when compiled, CN draws on the device (capture mode), as train.py does there.
Each row gives the step time, images/s and the minutes of 100 epochs of 50,000 images.

It also times evaluation (inference mode, ``eval_batch_size``) with the time of a 750,000-image
corrupted set at that rate, and reports peak memory (CUDA: allocator peak; CPU: process max
RSS). Timing (:mod:`snc.cli.bench_harness`, as for the other tasks): warm-up steps first, then
the mean and standard deviation of the timed steps (the median on CPU, where two busy cores
make single steps noisy), variants interleaved so slow drifts hit all alike; synchronisation
on GPUs. The last line is ``speedup_vs_reference=<reference step time /
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

import copy
import sys
from typing import List, Optional, Tuple

import numpy as np
import torch
from omegaconf import open_dict

from snc.augment.augmix import AugMix
from snc.cli.bench_harness import Variant, print_table, time_variants, timed
from snc.config import compose_config
from snc.data.loader import ArrayLoader, forever
from snc.engine.loop import CompiledStep
from snc.engine.runner import select_device, validate
from snc.eval.robustness import count_errors
from snc.precision import autocast_context
from snc.reference.cifar import reference_loader, use_official_ops
from snc.tasks import objectives
from snc.tasks.classify import build_network


def compose_cfg(argv: List[str]):
    return compose_config(["logger=none", "dataset=cifar10"] + list(argv))


def switched_config(cfg, sn: bool, cn: bool, prob: float = 1.0):
    """``cfg`` with SelfNorm and CrossNorm switched on or off, as train.py would compose it: a
    unit switched off gets its ``off`` group (CN's crop group back to ``neither``, a CN
    objective back to ``auto``); one switched on from off its ``on`` group; one already on
    keeps the user's options; CN steps with probability ``prob``."""
    groups = compose_cfg([f"sn={'on' if sn else 'off'}", f"cn={'on' if cn else 'off'}",
                          "objective=auto"])
    out = copy.deepcopy(cfg)
    with open_dict(out):
        if (cfg.sn.name != "off") != sn:
            out.sn = groups.sn
        if (cfg.cn.name != "off") != cn:
            out.cn = groups.cn
            if not cn:
                out.crop = groups.crop
        if not cn and cfg.objective.name in ("cn", "consistency"):
            out.objective = groups.objective
        if cn:
            out.cn.prob = prob
    return out


class ClassifyStep:
    """One model + data path whose training step (a call) can be timed repeatedly: snc's, or
    with ``reference`` the official-style pipeline of :mod:`snc.reference.cifar`."""

    def __init__(self, cfg, device, images, labels, reference: bool = False,
                 compiled: bool = False, backend: str = "inductor"):
        self.cfg, self.device, self.reference = cfg, device, reference
        torch.manual_seed(0)
        task = validate(cfg)
        self.objective_name = task.objective
        self.model = build_network(cfg, 10).to(device)
        if reference:
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
            forever(self._snc_loader(images, labels))

    def _snc_loader(self, images, labels) -> ArrayLoader:
        d = self.cfg.dataset
        augmix = None
        if self.cfg.augmix.enabled:
            augmix = AugMix(list(d.mean), list(d.std), severity=self.cfg.augmix.severity)
        return ArrayLoader(images, labels, batch_size=self.cfg.batch_size, mean=list(d.mean),
                           std=list(d.std), train=True, augmix=augmix, device=self.device,
                           drop_last=True, channels_last=self.cfg.channels_last)

    def _reference_batches(self, images, labels):
        for x, y in forever(reference_loader(images, labels, self.cfg)):
            if isinstance(x, (list, tuple)):
                x = tuple(v.to(self.device, non_blocking=True) for v in x)
            else:
                x = x.to(self.device, non_blocking=True)
            yield x, y.to(self.device, non_blocking=True)

    def training_step(self, model, batch):
        """The task's step as train.py runs it (the objective with the model's controller)."""
        return self.objective(model, batch, self.model.cn_controller, self.obj_cfg)

    def __call__(self) -> None:
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


def time_eval(variant: ClassifyStep, images, labels, batches: int) -> float:
    d = variant.cfg.dataset
    n = min(len(images), batches * variant.cfg.eval_batch_size)
    loader = ArrayLoader(images[:n], labels[:n], batch_size=variant.cfg.eval_batch_size,
                         mean=list(d.mean), std=list(d.std), device=variant.device,
                         channels_last=variant.cfg.channels_last)
    warm = ArrayLoader(images[:64], labels[:64], batch_size=64, mean=list(d.mean),
                       std=list(d.std), device=variant.device,
                       channels_last=variant.cfg.channels_last)
    count_errors(variant.forward, warm, variant.amp)  # warm-up
    return n / timed(lambda: count_errors(variant.forward, loader, variant.amp), variant.device)


def time_shifts(variant: ClassifyStep, images, labels, n: int = 100, n224: int = 2) -> None:
    """-C-bar generation images/s at 32 px (a set of ``n`` images in the published layout) and
    224 px (``n224`` images per ImageNet-C-bar corruption), and evaluation images/s over the
    generated set as the shift suite reads it (memory-mapped files, loader, model)."""
    import tempfile
    from pathlib import Path

    from snc.corruptions import CBAR_CORRUPTIONS, corrupt
    from snc.corruptions.sets import generate_cifar_style
    from snc.data.datasets import ArrayCorruptedSets
    from snc.eval.robustness import evaluate_corruptions

    d, names, cpu = variant.cfg.dataset, CBAR_CORRUPTIONS["cifar"], torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        made = 5 * len(names) * n / timed(lambda: generate_cifar_style(
            images[:n], labels[:n], Path(tmp), corruptions=names, preset="cifar", workers=0,
            progress=False), cpu)
        big = np.random.default_rng(1).integers(0, 256, (n224, 224, 224, 3), dtype=np.uint8)
        made224 = len(CBAR_CORRUPTIONS["imagenet"]) * n224 / timed(lambda: [
            corrupt(big, name, 3, preset="imagenet") for name in CBAR_CORRUPTIONS["imagenet"]],
            cpu)

        def loader(x, y):
            return ArrayLoader(x, y, batch_size=variant.cfg.eval_batch_size, mean=list(d.mean),
                               std=list(d.std), device=variant.device,
                               channels_last=variant.cfg.channels_last)

        sets = ArrayCorruptedSets(root=Path(tmp), corruptions=names, mode="published",
                                  make_loader=loader, generate=lambda: None)
        evaluated = 5 * len(names) * n / timed(lambda: evaluate_corruptions(
            variant.forward, sets, variant.amp, per_image={}), variant.device)
    print(f"-C-bar generation img/s (one process): 32 px {made:.0f}, 224 px {made224:.1f}; "
          f"shift-set eval img/s (generated CIFAR-C-bar, {5 * len(names) * n:,} images, "
          f"per-image rows kept): {evaluated:.0f}")


def classify_variants(cfg, device, images, labels, compiled: bool
                      ) -> Tuple[List[Variant], str, float]:
    """``plain``, ``+sn``, ``+cn``, ``requested`` (where SN and CN are both on; else the
    requested one is among the first three), eager (and ``compiled``), and ``reference``;
    the name of the requested variant and its CN probability."""
    bench = cfg.get("bench") or {}
    want = (cfg.sn.name != "off", cfg.cn.name != "off")
    prob = float(cfg.cn.prob) if want[1] else 0.5
    switches = {"plain": (False, False), "+sn": (True, False), "+cn": (False, True),
                "requested": (True, True)}
    requested = next(n for n, s in switches.items() if s == want)
    backend = str(bench.get("backend", "inductor"))

    def snc_variant(name: str, comp: bool) -> Variant:
        def build() -> ClassifyStep:
            step = ClassifyStep(switched_config(cfg, *switches[name]), device, images, labels,
                                compiled=comp, backend=backend)
            if comp:  # the optimizer's state-made recompile falls in the warm-up too
                step()
            return step
        return Variant(name + (" compiled" if comp else ""), build, cfg.batch_size)

    names = [n for n in switches if n != "requested" or requested == "requested"]
    variants = [snc_variant(n, comp) for comp in ((False, True) if compiled else (False,))
                for n in names]
    variants.append(Variant("reference", lambda: ClassifyStep(
        switched_config(cfg, *want, prob), device, images, labels, reference=True),
        cfg.batch_size))
    return variants, requested, prob


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from snc.cli import bench_tasks  # fixmatch / segment / text / dg: snc/cli/bench_tasks.py

    task = bench_tasks.task_name(argv)
    if task != "classify":
        return bench_tasks.main(argv, task=task)
    cfg = compose_cfg(argv)
    if cfg.backbone.get("source"):  # torchvision/timm ImageNet stems leave 1x1 maps on the
        cfg = compose_cfg(["backbone.cifar_stem=true"] + argv)  # 32-px images (unless given)
    device = select_device(cfg.device)
    bench = cfg.get("bench") or {}
    if int(bench.get("epochs", 0)) > 0:
        return time_epochs(cfg, int(bench.epochs), int(bench.get("images", 5_000)))
    cuda = device.type == "cuda"
    steps = int(bench.get("steps", 20 if cuda else 3))
    warmup = int(bench.get("warmup", 5 if cuda else 1))
    n_images = int(bench.get("images", 50_000 if cuda else 4 * cfg.batch_size))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n_images)
    if cuda:
        torch.backends.cudnn.benchmark = True
    torch.set_num_threads(torch.get_num_threads())

    variants, requested, prob = classify_variants(cfg, device, images, labels,
                                                  bool(bench.get("compiled", cfg.compile or cuda)))
    timings = time_variants(variants, device, steps, warmup)
    report(cfg, device, timings, requested, prob, f"steps={steps} warmup={warmup}")
    snc = timings[requested].step
    eval_snc = time_eval(snc, images, labels, int(bench.get("eval_batches", 10 if cuda else 1)))
    print(f"eval img/s (inference, batch {cfg.eval_batch_size}): snc {eval_snc:.0f}; "
          f"a 750,000-image corrupted set (CIFAR-C) at this rate: {750_000 / eval_snc:.0f} s")
    if bench.get("shifts", True):
        time_shifts(snc, images, labels, n=int(bench.get("shift_images", 100)))
    mean = {name: t.center for name, t in timings.items()}
    if requested + " compiled" in mean:
        print(f"speedup_vs_reference_compiled="
              f"{mean['reference'] / mean[requested + ' compiled']:.3f}")
    print(f"speedup_vs_reference={mean['reference'] / mean[requested]:.3f}")
    return 0


def report(cfg, device, timings, requested: str, prob: float, counts: str) -> None:
    """The header, the table and the SN and CN overheads (eager, and compiled if timed)."""
    stem = " cifar_stem=true" if cfg.backbone.get("cifar_stem") else ""
    snc = timings[requested].step
    print(f"device={device} backbone={cfg.backbone.name}{stem} batch={cfg.batch_size} "
          f"amp={cfg.amp} channels_last={cfg.channels_last} compile={cfg.compile} "
          f"compile_mode={cfg.get('compile_mode', 'default')} "
          f"augmix={cfg.augmix.enabled} objective={snc.objective_name} "
          f"{counts}")
    epoch_images = 50_000
    print_table(timings, [
        ("train img/s", 13, ".0f", lambda t: t.items / t.center),
        ("100 ep min", 12, ".1f", lambda t: 100 * epoch_images / t.items * t.center / 60),
        ("peak MB", 10, ".0f", lambda t: t.peak_mb)], name_width=20)
    mean = {name: t.center for name, t in timings.items()}
    for suffix in ("", " compiled") if "plain compiled" in timings else ("",):
        sn_over = 100 * (mean["+sn" + suffix] / mean["plain" + suffix] - 1)
        cn_over = 100 * (mean["+cn" + suffix] / mean["plain" + suffix] - 1)
        both = mean[requested + suffix] / mean["plain" + suffix]
        print(f"{suffix.strip() or 'eager'}: sn_overhead={sn_over:.1f}%  "
              f"cn_overhead(prob=1)={cn_over:.1f}%  cn_overhead(prob={prob})={cn_over * prob:.1f}%"
              f"  {requested}/plain={both:.3f}")
    cn_objective = timings["+cn"].step.objective_name
    if cn_objective in ("consistency", "augmix"):
        print(f"(objective {cn_objective}: when CN fires the step runs two "
              "more CN forwards for the consistency term, which the CN overhead includes)")


def time_epochs(cfg, epochs: int, images: int) -> int:
    """``+bench.epochs=N``: N epochs of the requested config through train.py's own path
    (:func:`snc.engine.runner.run`) on synthetic CIFAR-sized data; prints images/s."""
    import tempfile

    from snc.engine.runner import run

    synthetic = compose_cfg(["dataset=synthetic", f"dataset.num_train={images}",
                             "dataset.num_test=100"]).dataset
    with tempfile.TemporaryDirectory() as tmp:
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            cfg.pop("bench", None)
            cfg.dataset = synthetic
            cfg.merge_with({"epochs": epochs, "evaluate_corruptions": False, "progress": False,
                            "evaluate": {"shifts": [], "bootstrap": 0},
                            "paths": {"output_dir": tmp}})
        results = run(cfg)
    seconds = float(results["time/train_seconds"])
    print(f"train.py path: {epochs} epoch(s) of {images:,} images in {seconds:.1f} s: "
          f"{epochs * images / seconds:.0f} img/s (compile={cfg.compile}, first epoch includes "
          f"any compilation); 100 epochs of 50,000 images at this rate: "
          f"{100 * 50_000 / (epochs * images / seconds) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
