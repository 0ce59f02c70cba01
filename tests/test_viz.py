"""snc.viz: image-space CN/SN, the inversion, location names, the figure command (tiny models)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from snc.errors import ConfigError
from snc.models import get_backbone_spec, list_backbones
from snc.ops import CROSSNORM_EPS, channel_stats
from snc.viz.__main__ import main
from snc.viz.image import swap_stats
from snc.viz.inversion import (
    InversionOptions,
    SiteReader,
    invert,
    learning_rates,
    total_variation,
)
from snc.viz.model import backbone_sites, load_run, network_from_config, resolve_location

FEW = ["iterations=4", "decay_every=1", "scale=1"]


def _save_run(cfg, path: Path) -> Path:
    """A run directory as train.py leaves it (config.yaml + ckpt/last.pt), without training:
    the figures read only these two files."""
    net = network_from_config(cfg)
    (path / "ckpt").mkdir(parents=True)
    (path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    state = {k: v for k, v in net.model.state_dict().items()}
    torch.save({"model": state, "step": 0}, path / "ckpt" / "last.pt")
    return path


@pytest.fixture
def runs(make_cfg, tmp_path):
    """Tiny WRN run directories: plain, SN at post_addition, SN on the input image."""
    return {
        "plain": _save_run(make_cfg(), tmp_path / "plain"),
        "sn": _save_run(make_cfg("sn=on"), tmp_path / "sn"),
        "sn_image": _save_run(make_cfg("sn=on", "position=image"), tmp_path / "sn_image"),
    }


def _png(path: Path) -> np.ndarray:
    assert path.exists()
    with Image.open(path) as img:
        img.load()
        assert img.mode == "RGB"
        return np.asarray(img)


# ------------------------------------------------------------------------ image-space CN
def test_image_cn_gives_the_partner_statistics():
    gen = torch.Generator().manual_seed(0)
    content = torch.rand(2, 3, 16, 16, generator=gen)
    style = torch.rand(2, 3, 16, 16, generator=gen) * 0.3 + 0.5
    out = swap_stats(content, style)
    m_o, s_o = channel_stats(out, CROSSNORM_EPS)
    m_s, s_s = channel_stats(style, CROSSNORM_EPS)
    torch.testing.assert_close(m_o, m_s, atol=1e-5, rtol=0)
    torch.testing.assert_close(s_o, s_s, atol=1e-4, rtol=1e-3)
    box = ((2, 10), (4, 12))
    out = swap_stats(content, style, box)
    m_b, s_b = channel_stats(style, CROSSNORM_EPS, box)
    m_o, s_o = channel_stats(out, CROSSNORM_EPS)
    torch.testing.assert_close(m_o, m_b, atol=1e-5, rtol=0)
    torch.testing.assert_close(s_o, s_b, atol=1e-4, rtol=1e-3)


def test_image_cn_writes_a_png_without_a_model(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 20, 24, 3), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", images=images)
    path = main(["image_cn", f"images={tmp_path / 'imgs.npz'}", f"out={tmp_path / 'o'}",
                 "pairs=[[0,1],[2,3]]", "crops=2", "scale=1"])
    arr = _png(path)
    # 2 rows x (3 + 2 x 2) tiles of 20x24 with 2-pixel padding
    assert arr.shape == (2 * 22 + 2, 7 * 26 + 2, 3)
    assert path.with_suffix(".json").exists()


# ------------------------------------------------------------------------------ inversion
def test_learning_rate_schedules():
    paper = learning_rates(InversionOptions())
    assert len(paper) == 200 and paper[0] == paper[39] == 1e4 and paper[40] == 1e3
    assert paper[199] == pytest.approx(1.0)
    vis = learning_rates(InversionOptions(schedule="vis"))
    assert len(vis) == 201 and vis[0] == 1e4 and vis[1] == vis[40] == pytest.approx(1e3)
    assert vis[41] == pytest.approx(1e2) and vis[200] == pytest.approx(0.1)


def test_total_variation_variants():
    # columns vary, rows and channels do not: M&V's TV sees it, the inversion code's does not
    x = torch.arange(8.0).repeat(1, 3, 8, 1)
    assert total_variation(x, kind="mv") > 0
    assert total_variation(x, kind="vis") == 0
    # rows vary: both see it
    assert total_variation(x.transpose(2, 3), kind="vis") > 0
    with pytest.raises(ConfigError):
        InversionOptions(tv="nope")


def test_inversion_lowers_its_loss_and_keeps_shape_and_range(runs):
    net = load_run(runs["sn"])
    site = net.resolve("block2_end")
    read = SiteReader(net.model, net.module(site))
    x = net.normalize(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        target = read(x)
    init = 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    lo, hi = net.normalize(torch.zeros(1, 3, 1, 1)), net.normalize(torch.ones(1, 3, 1, 1))
    opts = InversionOptions(iterations=30, decay_every=5, bounds=(lo, hi))
    res = invert(read, target, init, opts)
    assert res.losses[-1] < res.losses[0]
    assert res.image.shape == x.shape
    assert bool((res.image >= lo - 1e-6).all()) and bool((res.image <= hi + 1e-6).all())
    shown = net.denormalize(res.image)
    assert shown.shape == x.shape and shown.min() >= 0 and shown.max() <= 1
    assert not any(p.grad is not None for p in net.model.parameters())


def test_switching_a_selfnorm_unit_off_reads_its_input(runs):
    net = load_run(runs["sn"])
    site = net.resolve("block1_end")
    assert net.has_selfnorm(site)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        on = SiteReader(net.model, net.module(site))(x)
        off = SiteReader(net.model, net.module(site), off=True)(x)
        sn_of_off = net.module(site)(off)
    torch.testing.assert_close(on, sn_of_off)
    assert not torch.allclose(on, off)


# ------------------------------------------------------------------------------ locations
@pytest.mark.parametrize("name", list_backbones())
def test_every_position_resolves_on_every_backbone_that_has_it(name):
    spec = get_backbone_spec(name)
    sites = backbone_sites(name)
    present = {s.position for s in sites}
    assert "image" in present
    resolve_location(sites, "image", backbone=name)
    for pos in spec.positions:
        if pos == "image":
            continue
        if pos not in present:
            with pytest.raises(ConfigError, match="valid positions"):
                resolve_location(sites, f"{pos}@1.first", backbone=name)
            continue
        for stage in sorted({s.stage for s in sites if s.position == pos}):
            for cell in ("first", "last", "0"):
                site = resolve_location(sites, f"{pos}@{stage}.{cell}", backbone=name)
                assert (site.position, site.stage) == (pos, stage)
            for end in ("start", "end"):
                site = resolve_location(sites, f"block{stage}_{end}", backbone=name,
                                        position=pos)
                assert (site.position, site.stage) == (pos, stage)
    default = spec.default_position
    if default in present:
        for k in range(1, spec.num_stages + 1):
            if any(s.position == default and s.stage == k for s in sites):
                resolve_location(sites, f"block{k}_end", backbone=name)


def test_every_site_of_a_tiny_wrn_is_read_by_its_hook(runs):
    net = load_run(runs["plain"])
    x = torch.randn(1, 3, 32, 32)
    for site in net.sites:
        with torch.no_grad():
            out = SiteReader(net.model, net.module(site))(x)
        assert out.shape[0] == 1 and out.dim() == 4


def test_unknown_locations_list_the_valid_ones(runs):
    net = load_run(runs["plain"])
    with pytest.raises(ConfigError, match="valid positions: identity, post_addition"):
        net.resolve("after_conv@1.first")
    with pytest.raises(ConfigError, match="block1_start"):
        net.resolve("somewhere")
    with pytest.raises(ConfigError, match="stages with one"):
        net.resolve("block7_end")
    with pytest.raises(ConfigError, match="cells"):
        net.resolve("post_addition@1.5")


# ----------------------------------------------------------------------- the figure command
def test_every_figure_writes_a_readable_png(runs):
    paths = [
        main(["image_cn", f"run_dir={runs['plain']}", "scale=1"]),
        main(["image_sn", f"run_dir={runs['sn_image']}", "index=[0,1,2]", "scale=1"]),
        main(["cn_inversion", f"run={runs['plain']}", "styles=[1,2]", *FEW]),
        main(["sn_off_inversion", f"run={runs['sn']}", "index=[0,1]", *FEW]),
        main(["sn_off_inversion", f"run={runs['sn_image']}", "index=[0]", "locations=[image]",
              *FEW]),
        main(["sn_accumulated", f"run={runs['sn']}", f"plain={runs['plain']}", "index=[0,1]",
              *FEW]),
    ]
    shapes = [_png(p).shape for p in paths]
    # cn_inversion: (1 + 6 locations) rows x (1 + 2 styles) columns of 32x32 tiles
    assert shapes[2] == (7 * 34 + 2, 3 * 34 + 2, 3)
    # sn_off_inversion: originals + 4 locations, 2 images
    assert shapes[3] == (5 * 34 + 2, 2 * 34 + 2, 3)
    # sn_accumulated: 2 images x (original + 2 models x 3 locations)
    assert shapes[5] == (2 * 34 + 2, 7 * 34 + 2, 3)
    assert paths[0] == runs["plain"] / "figures" / "image_cn.png"


def test_backbone_and_checkpoint_without_a_run_dir(runs, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "i.npz", images=images)
    path = main(["cn_inversion", "backbone=wrn16_2", f"checkpoint={runs['plain']}/ckpt/last.pt",
                 "model=[+backbone.overrides.depth=10,+backbone.overrides.widen_factor=1]",
                 f"images={tmp_path / 'i.npz'}", f"out={tmp_path / 'o'}",
                 "locations=[image,block1_end]", "styles=[1]", *FEW])
    assert _png(path).shape == (3 * 34 + 2, 2 * 34 + 2, 3)


# ------------------------------------------------------------------------------ bad input
def test_bad_inputs_fail_with_a_config_error(runs, tmp_path):
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.yaml").write_text((runs["plain"] / "config.yaml").read_text())
    with pytest.raises(ConfigError, match="no checkpoint"):
        main(["cn_inversion", f"run={no_ckpt}", *FEW])
    with pytest.raises(ConfigError, match="config.yaml"):
        main(["cn_inversion", f"run={tmp_path}", *FEW])
    with pytest.raises(ConfigError, match="valid positions"):
        main(["cn_inversion", f"run={runs['plain']}", "locations=[new_features@1.first]", *FEW])
    with pytest.raises(ConfigError, match="SelfNorm"):
        main(["image_sn", f"run={runs['plain']}", "scale=1"])
    for figure in ("sn_off_inversion", "sn_accumulated"):
        more = [f"plain={runs['plain']}"] if figure == "sn_accumulated" else []
        with pytest.raises(ConfigError, match="SelfNorm"):
            main([figure, f"run={runs['plain']}", *more, *FEW])
    with pytest.raises(ConfigError, match="position=image"):
        main(["image_sn", f"run={runs['sn']}", "scale=1"])
    with pytest.raises(ConfigError, match="holds no SelfNorm"):
        main(["sn_off_inversion", f"run={runs['sn_image']}", *FEW])
    with pytest.raises(ConfigError, match="plain="):
        main(["sn_accumulated", f"run={runs['sn']}", *FEW])
    with pytest.raises(ConfigError, match="unknown option"):
        main(["cn_inversion", f"run={runs['plain']}", "iteratons=3"])
    with pytest.raises(ConfigError, match="unknown figure"):
        main(["fig99", f"run={runs['plain']}"])
    with pytest.raises(ConfigError, match="outside"):
        main(["cn_inversion", f"run={runs['plain']}", "styles=[100000]", *FEW])
