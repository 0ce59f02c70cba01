"""Clean and corruption errors, CIFAR mCE and ImageNet (AlexNet-normalized) mCE.

Protocol (Hendrycks & Dietterich, ICLR 2019; the official CrossNorm/SelfNorm and AugMix code):
errors are counted over every sample (never a mean of batch means), in eval mode and inference
mode, and reported in percent.

- CIFAR-10-C / CIFAR-100-C: ``mce`` = plain mean of the 15 x 5 (corruption, severity) errors,
  equal to the mean of the 15 per-corruption errors (no normalization).
- ImageNet-C: ``CE_c = sum_s E(c, s) / sum_s E_AlexNet(c, s)``, ``mce`` = mean of the 15 CE_c
  (x100); ``relative_mce`` uses ``E(c, s) - E_clean`` over AlexNet's ``E(c, s) - 43.478``.

Metric names (docs/architecture.md): ``clean/error``, ``corruption/<name>/s<k>/error``,
``corruption/<name>/error``, ``mce``, ``relative_mce``.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from snc.corruptions import CORRUPTIONS
from snc.distributed import all_reduce_sum
from snc.precision import autocast_context

# AlexNet mean error over the 5 severities of each ImageNet-C corruption (Hendrycks & Dietterich)
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
ALEXNET_CLEAN_ERROR = 0.43478  # torchvision AlexNet top-1 error, for relative mCE

Batches = Iterable[Tuple[torch.Tensor, torch.Tensor]]


@torch.inference_mode()
def count_errors(model: torch.nn.Module, batches: Batches, amp: str = "none",
                 topk: Sequence[int] = (1,), record: Optional[List[np.ndarray]] = None
                 ) -> Tuple[Dict[int, int], int]:
    """Wrong predictions (top-k) and the number of samples over ``batches``.

    The model is put in eval mode for the count and restored afterwards. Under
    ``torch.distributed`` each rank passes its shard and the counts are summed over ranks.
    ``record``: a list that receives each batch's per-sample top-1 correctness (bool arrays, in
    the order of ``batches``) -- what the bootstrap intervals resample.

    Returns:
        ``({k: errors}, samples)``.
    """
    was_training = model.training
    model.eval()
    # counts and per-sample hits stay on the device until the end: no host synchronisation per
    # batch, so the copy of the next batch and this batch's compute overlap on a GPU
    wrong: Dict[int, torch.Tensor] = {}
    hits_kept: List[torch.Tensor] = []
    total = 0
    try:
        for x, y in batches:
            with autocast_context(x.device, amp):
                logits = model(x)
            top = logits.float().topk(max(topk), dim=1).indices
            hits = top == y[:, None]
            for k in topk:
                missed = (~hits[:, :k].any(1)).sum()
                wrong[k] = missed if k not in wrong else wrong[k] + missed
            if record is not None:
                hits_kept.append(hits[:, 0])
            total += len(y)
    finally:
        model.train(was_training)
    if record is not None:
        record.extend(h.cpu().numpy() for h in hits_kept)
    wrong = {k: int(wrong[k]) if k in wrong else 0 for k in topk}
    # sum over ranks (a no-op in a single process): exact counts, no padding
    counts = all_reduce_sum([total] + [int(wrong[k]) for k in topk], _device_of(model))
    return dict(zip(topk, counts[1:], strict=True)), counts[0]


def _device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def error_percent(wrong: int, total: int) -> float:
    if total == 0:
        raise ValueError("no samples were evaluated")
    return 100.0 * wrong / total


def cifar_mce(errors: Mapping[Tuple[str, int], float],
              corruptions: Sequence[str] = CORRUPTIONS) -> float:
    """Mean of the (corruption, severity) errors over ``corruptions`` x 5, in percent."""
    values = [errors[(c, s)] for c in corruptions for s in range(1, 6)]
    return sum(values) / len(values)


def imagenet_ce(errors: Mapping[Tuple[str, int], float], corruption: str,
                clean_error: Optional[float] = None) -> float:
    """AlexNet-normalized CE (x100) of one corruption; relative CE when ``clean_error`` given.

    ``errors`` are in percent.
    """
    alex = ALEXNET_ERRORS[corruption]
    model = sum(errors[(corruption, s)] / 100 for s in range(1, 6))
    if clean_error is None:
        return 100.0 * model / (5 * alex)
    return 100.0 * (model - 5 * clean_error / 100) / (5 * (alex - ALEXNET_CLEAN_ERROR))


def mce_benchmark(names: Sequence[str]) -> Tuple[str, ...]:
    """The corruptions whose errors make the mCE of a set holding ``names``: the 15 of -C when
    the set has -C corruptions (held-out ones such as speckle_noise stay out), else all of
    them (a -C-bar set)."""
    names = tuple(dict.fromkeys(names))
    return tuple(CORRUPTIONS) if any(c in CORRUPTIONS for c in names) else names


def corruption_metrics(errors: Mapping[Tuple[str, int], float], protocol: str = "cifar",
                       clean_error: Optional[float] = None,
                       benchmark: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """The metric dict for per-(corruption, severity) ``errors`` in percent.

    The arithmetic is element-wise, so the values may also be NumPy arrays (one error per
    bootstrap replicate, :mod:`snc.eval.stats`): each element gets exactly what a float would.

    Args:
        errors: ``{(corruption, severity): error %}``.
        protocol: ``cifar`` (plain mean) or ``imagenet`` (AlexNet-normalized).
        clean_error: clean error in percent (for ``relative_mce`` on ImageNet).
        benchmark: the corruptions whose errors make the mCE (default
            :func:`mce_benchmark` of the names in ``errors``: the 15 of -C, so held-out
            validation corruptions get their errors only). Any other list (the -C-bar sets)
            is averaged plainly under either protocol, as published: AlexNet errors exist for
            the 15 -C corruptions only.
    """
    names = [c for c in dict.fromkeys(c for c, _ in errors)]
    out: Dict[str, float] = {}
    for (c, s), e in errors.items():
        out[f"corruption/{c}/s{s}/error"] = e
    for c in names:
        out[f"corruption/{c}/error"] = sum(errors[(c, s)] for s in range(1, 6)) / 5
    benchmark = tuple(mce_benchmark(names) if benchmark is None else benchmark)
    if not all(c in names for c in benchmark):
        return out
    if protocol == "imagenet" and benchmark == tuple(CORRUPTIONS):
        ces = [imagenet_ce(errors, c) for c in CORRUPTIONS]
        for c, ce in zip(CORRUPTIONS, ces, strict=True):
            out[f"corruption/{c}/ce"] = ce
        out["mce"] = sum(ces) / len(ces)
        if clean_error is not None:
            rel = [imagenet_ce(errors, c, clean_error) for c in CORRUPTIONS]
            out["relative_mce"] = sum(rel) / len(rel)
        out["mean_error_unnormalized"] = sum(out[f"corruption/{c}/error"]
                                             for c in CORRUPTIONS) / len(CORRUPTIONS)
    else:
        out["mce"] = cifar_mce(errors, benchmark)
    return out


def evaluate_corruptions(model: torch.nn.Module,
                         sets: Iterable[Tuple[str, int, Callable[[], Batches]]],
                         amp: str = "none",
                         expected: Optional[Callable[[str, int], int]] = None,
                         progress: Optional[Callable[[str, int], None]] = None,
                         per_image: Optional[Dict[Tuple[str, int], np.ndarray]] = None
                         ) -> Dict[Tuple[str, int], float]:
    """Error (%) per (corruption, severity).

    Args:
        model: the classifier.
        sets: ``(corruption, severity, make_batches)`` triples.
        amp: autocast mode.
        expected: optional ``(corruption, severity) -> sample count`` checked exactly.
        progress: called after each set.
        per_image: a dict that receives ``{(corruption, severity): bool[N]}`` top-1
            correctness in the set's order.
    """
    errors = {}
    for name, severity, make_batches in sets:
        record: Optional[List[np.ndarray]] = [] if per_image is not None else None
        wrong, total = count_errors(model, make_batches(), amp, record=record)
        if record is not None:
            per_image[(name, severity)] = _joined(record)
        if expected is not None and total != expected(name, severity):
            raise RuntimeError(f"{name} s{severity}: evaluated {total} samples, expected "
                               f"{expected(name, severity)}")
        errors[(name, severity)] = error_percent(wrong[1], total)
        if progress is not None:
            progress(name, severity)
    return errors


def _joined(record: List[np.ndarray]) -> np.ndarray:
    return np.concatenate(record).astype(bool) if record else np.zeros(0, bool)


def clean_error(model: torch.nn.Module, loader, num_classes: int, amp: str = "none",
                per_image: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, float]:
    """Top-1 (and top-5 when there are more than 5 classes) clean error in percent.

    ``per_image``: a dict that receives ``{"clean": bool[N]}`` top-1 correctness.
    """
    topk = (1, 5) if num_classes > 5 else (1,)
    record: Optional[List[np.ndarray]] = [] if per_image is not None else None
    wrong, total = count_errors(model, loader, amp, topk=topk, record=record)
    if record is not None:
        per_image["clean"] = _joined(record)
    if total != loader.total_samples:
        raise RuntimeError(f"evaluated {total} samples, the test set has {loader.total_samples}")
    out = {"clean/error": error_percent(wrong[1], total)}
    if 5 in wrong:
        out["clean/top5_error"] = error_percent(wrong[5], total)
    return out
