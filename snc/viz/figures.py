"""The paper's figures: image-space CN/SN (Figs 1, 13) and feature inversions (Figs 5-7, 10).

Each function takes images (uint8 ``(N, H, W, 3)``) and, where it needs one, a
:class:`~snc.viz.model.Network`; it writes one PNG grid (and a ``.json`` beside it naming the
rows, columns and final losses) and returns the PNG path. ``docs/figures.md`` gives the
commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from snc.errors import ConfigError
from snc.models.units import IMAGE
from snc.ops import CROSSNORM_EPS, cross_norm
from snc.viz.image import style_boxes, swap_stats, to_tensor, to_uint8, write_png
from snc.viz.inversion import InversionOptions, SiteReader, invert
from snc.viz.model import Network, Site

CN_LOCATIONS = ("image", "block1_start", "block1_end", "block2_start", "block2_end",
                "block3_start")
SN_OFF_LOCATIONS = ("block1_start", "block1_end", "block2_end", "block3_end")
SN_ACCUMULATED_LOCATIONS = ("block1_end", "block2_end", "block3_end")


def _pick(images: np.ndarray, indices: Sequence[int], what: str) -> np.ndarray:
    bad = [i for i in indices if not 0 <= int(i) < len(images)]
    if bad:
        raise ConfigError(f"{what}={list(indices)}: indices {bad} are outside 0..{len(images) - 1}")
    return images[[int(i) for i in indices]]


def _options(net: Network, opts: Optional[InversionOptions], clamp: bool) -> InversionOptions:
    """The inversion options with the projection onto the valid image range when asked."""
    opts = opts or InversionOptions()
    if clamp:
        lo = net.normalize(torch.zeros(1, 3, 1, 1, device=net.device))
        hi = net.normalize(torch.ones(1, 3, 1, 1, device=net.device))
        opts = opts.with_(bounds=(lo, hi))
    return opts


# --------------------------------------------------------------------------------- Fig. 1a/13
def image_cn(images: np.ndarray, out: Path, *, pairs: Sequence[Tuple[int, int]],
             crops: int = 3, threshold: float = 0.1, seed: int = 0, scale: int = 4) -> Path:
    """Image-space 2-instance CrossNorm (Fig. 1a) and style crop (Fig. 13).

    One row per ``(content, style)`` pair: content, style, the content with the style's
    whole-image per-RGB-channel mean/std (no crop), then ``crops`` outputs that take the
    statistics of random boxes of the style image (area ratio > ``threshold``), each box shown
    outlined on the style image after its output.
    """
    gen = torch.Generator().manual_seed(seed)
    rows, meta_rows = [], []
    for c, s in pairs:
        content = to_tensor(_pick(images, [c], "content"))
        style = to_tensor(_pick(images, [s], "style"))
        if content.shape != style.shape:
            raise ConfigError(f"images {c} and {s} differ in size: {tuple(content.shape)} vs "
                              f"{tuple(style.shape)}")
        row = [to_uint8(content)[0], to_uint8(style)[0], to_uint8(swap_stats(content, style))[0]]
        boxes = style_boxes(content.shape[2:], crops, gen, threshold) if crops else []
        for box in boxes:
            row.append(to_uint8(swap_stats(content, style, box))[0])
            row.append(_outline(to_uint8(style)[0], box))
        rows.append(row)
        meta_rows.append({"content": int(c), "style": int(s), "boxes": boxes})
    columns = ["content", "style", "CN (no crop)"] + [
        name for k in range(crops) for name in (f"CN style crop {k + 1}", f"style box {k + 1}")]
    return write_png(Path(out) / "image_cn.png", rows, scale,
                     {"figure": "image_cn (paper Fig. 1a, Fig. 13)", "columns": columns,
                      "rows": meta_rows, "threshold": threshold, "seed": seed})


def _outline(img: np.ndarray, box) -> np.ndarray:
    out = img.copy()
    (r0, r1), (c0, c1) = box
    red = np.array([255, 0, 0], np.uint8)
    out[r0, c0:c1] = red
    out[max(r1 - 1, r0), c0:c1] = red
    out[r0:r1, c0] = red
    out[r0:r1, max(c1 - 1, c0)] = red
    return out


# ------------------------------------------------------------------------------------ Fig. 1b
def require_sn(net: Network, figure: str) -> None:
    if not net.selfnorm_sites():
        raise ConfigError(f"{figure} needs a model with SelfNorm units; this run has none "
                          "(train one with sn=on, see docs/figures.md)")


def image_sn(net: Network, images: np.ndarray, out: Path, *, scale: int = 4) -> Path:
    """Images recalibrated by the model's trained image-space SelfNorm unit (Fig. 1b).

    The paper gives no procedure for Fig. 1b; this figure shows what a trained SN at the
    ``image`` position (paper Table 6, "Image") does to test images: top row the originals,
    bottom row SN's output de-normalised (clipped to [0, 1]).
    """
    require_sn(net, "image_sn")
    site = net.resolve(IMAGE)
    if not net.has_selfnorm(site):
        where = sorted({s.position for s in net.selfnorm_sites()})
        raise ConfigError(f"image_sn needs SelfNorm on the input image (sn=on position=image); "
                          f"this model's SelfNorm units are at {', '.join(where)}")
    x = to_tensor(images).to(net.device)
    with torch.no_grad():
        y = net.denormalize(net.module(site)(net.normalize(x)))
    stats = {
        "mean_before": x.mean((2, 3)).tolist(), "mean_after": y.mean((2, 3)).tolist(),
        "std_before": x.std((2, 3)).tolist(), "std_after": y.std((2, 3)).tolist()}
    return write_png(Path(out) / "image_sn.png", [list(to_uint8(x)), list(to_uint8(y))], scale,
                     {"figure": "image_sn (paper Fig. 1b)",
                      "rows": ["original", "image-space SelfNorm"], **stats})


# ---------------------------------------------------------------------------------- inversions
def _site_reader(net: Network, site: Site, off: bool = False) -> SiteReader:
    return SiteReader(net.model, net.module(site), off=off)


def cn_inversion(net: Network, images: np.ndarray, out: Path, *, content: int,
                 styles: Sequence[int], locations: Sequence[str] = CN_LOCATIONS,
                 position: Optional[str] = None, opts: Optional[InversionOptions] = None,
                 clamp: bool = True, scale: int = 4) -> Path:
    """Feature CrossNorm made visible (Figs 5 and 10).

    For each location, the target is the content image's representation standardised per
    channel (whole map) and given each style image's mean/std (:func:`snc.ops.cross_norm`);
    the inversion starts from the content image. Grid: the first row holds the content and
    the style images, then one row per location: the content, then one result per style.
    """
    opts = _options(net, opts, clamp)
    sites = [(loc, net.resolve(loc, position)) for loc in locations]
    c = net.normalize(to_tensor(_pick(images, [content], "content")).to(net.device))
    s = net.normalize(to_tensor(_pick(images, styles, "styles")).to(net.device))
    k = s.shape[0]
    rows: List[List[Optional[np.ndarray]]] = [[to_uint8(net.denormalize(c))[0]]
                                              + list(to_uint8(net.denormalize(s)))]
    losses: Dict[str, List[float]] = {}
    for loc, site in sites:
        read = _site_reader(net, site)
        with torch.no_grad():
            fc, fs = read(c), read(s)
        both = torch.cat([fc.expand(k, *fc.shape[1:]), fs])
        perm = torch.cat([torch.arange(k, 2 * k), torch.arange(k)]).to(net.device)
        target = cross_norm(both, perm=perm, eps=CROSSNORM_EPS)[:k]
        res = invert(read, target, c.expand(k, *c.shape[1:]), opts)
        rows.append([to_uint8(net.denormalize(c))[0]] + list(to_uint8(net.denormalize(res.image))))
        losses[f"{loc} ({site.name})"] = [res.losses[0], res.losses[-1]]
    return write_png(Path(out) / "cn_inversion.png", rows, scale, {
        "figure": "cn_inversion (paper Figs 5, 10)", "content": int(content),
        "styles": [int(i) for i in styles], "rows": ["content | styles"] + list(losses),
        "loss_first_last": losses, "options": _describe(opts)})


def sn_off_inversion(net: Network, images: np.ndarray, out: Path, *,
                     locations: Sequence[str] = SN_OFF_LOCATIONS,
                     position: Optional[str] = None, opts: Optional[InversionOptions] = None,
                     clamp: bool = True, scale: int = 4) -> Path:
    """What one SelfNorm unit does (Fig. 6).

    The target is the representation right after one SN unit; that unit is switched off (its
    site returns its input) and the image optimised from the original to match the target.
    Grid: originals on top, then one row of results per location.
    """
    require_sn(net, "sn_off_inversion")
    opts = _options(net, opts, clamp)
    position = position or _sn_site_position(net)
    x = net.normalize(to_tensor(images).to(net.device))
    rows: List[List[Optional[np.ndarray]]] = [list(to_uint8(net.denormalize(x)))]
    losses: Dict[str, List[float]] = {}
    for loc in locations:
        site = net.resolve(loc, position)
        if not net.has_selfnorm(site):
            where = ", ".join(s.name for s in net.selfnorm_sites())
            raise ConfigError(f"location {loc!r} ({site.name}) holds no SelfNorm unit; this "
                              f"model's SelfNorm units are at: {where}")
        with torch.no_grad():
            target = _site_reader(net, site)(x)
        res = invert(_site_reader(net, site, off=True), target, x, opts)
        rows.append(list(to_uint8(net.denormalize(res.image))))
        losses[f"{loc} ({site.name})"] = [res.losses[0], res.losses[-1]]
    return write_png(Path(out) / "sn_off_inversion.png", rows, scale, {
        "figure": "sn_off_inversion (paper Fig. 6)", "rows": ["original"] + list(losses),
        "loss_first_last": losses, "options": _describe(opts)})


def sn_accumulated(sn_net: Network, plain_net: Network, images: np.ndarray, out: Path, *,
                   locations: Sequence[str] = SN_ACCUMULATED_LOCATIONS,
                   position: Optional[str] = None, opts: Optional[InversionOptions] = None,
                   clamp: bool = True, seed: int = 0, scale: int = 4) -> Path:
    """Accumulated SelfNorm effect (Fig. 7): reconstruction from noise (0.1 N(0, 1) in the
    input space, the inversion code's start) of the representation at each location, for a
    plain model and an SN model. One row per image: the original, the plain model's results
    (one per location), then the SN model's."""
    require_sn(sn_net, "sn_accumulated")
    position = position or _sn_site_position(sn_net)
    gen = torch.Generator().manual_seed(seed)
    x = to_tensor(images)
    noise = 0.1 * torch.randn(x.shape, generator=gen)
    columns: List[np.ndarray] = []
    losses: Dict[str, List[float]] = {}
    for label, net in (("plain", plain_net), ("sn", sn_net)):
        o = _options(net, opts, clamp)
        xn = net.normalize(x.to(net.device))
        for loc in locations:
            site = net.resolve(loc, position)
            read = _site_reader(net, site)
            with torch.no_grad():
                target = read(xn)
            res = invert(read, target, noise.to(net.device), o)
            columns.append(to_uint8(net.denormalize(res.image)))
            losses[f"{label} {loc} ({site.name})"] = [res.losses[0], res.losses[-1]]
    originals = to_uint8(x)
    rows = [[originals[i]] + [col[i] for col in columns] for i in range(len(originals))]
    return write_png(Path(out) / "sn_accumulated.png", rows, scale, {
        "figure": "sn_accumulated (paper Fig. 7)",
        "columns": ["original"] + list(losses), "loss_first_last": losses,
        "options": _describe(_options(sn_net, opts, clamp)), "seed": seed})


def _sn_site_position(net: Network) -> Optional[str]:
    """The site the block aliases use in SN figures: the model's SN position (unless that is
    the input image, then the backbone default)."""
    return net.sn_position if net.sn_position not in (None, IMAGE) else None


def _describe(opts: InversionOptions) -> Dict[str, object]:
    d = {k: v for k, v in vars(opts).items() if k != "bounds"}
    d["clamp"] = opts.bounds is not None
    return d
