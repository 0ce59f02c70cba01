"""Multi-process runs see what the official runs saw: BatchNorm batches of the official
per-GPU size (``distributed.bn_batch``), the official AugMix view layout
(``distributed.augmix_bn=official``) and augmentation that differs per rank.

The references are single-process emulations of ``nn.DataParallel``: the batch of one forward
cut into contiguous chunks, each normalized with its own statistics, the running statistics
taken from the first chunk (GPU 0's replica).
"""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from omegaconf import OmegaConf

from snc.distributed import (
    BNPlan,
    ChunkBatchNorm,
    DistInfo,
    bn_rank_groups,
    convert_batch_norm,
    forward_views,
    plan_bn,
    prepare_batch_norm,
)
from snc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def dataparallel_bn(x: torch.Tensor, chunk: int, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    """What DataParallel's replicas compute: ``chunk``-row pieces normalized separately; the
    running statistics of ``bn`` updated from the first piece only."""
    pieces = list(torch.split(x, chunk))
    out = [bn(pieces[0])]
    for p in pieces[1:]:
        out.append(F.batch_norm(p, None, None, bn.weight, bn.bias, True, 0.0, bn.eps))
    return torch.cat(out)


def tiny_bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                               torch.nn.ReLU(), torch.nn.Flatten(1),
                               torch.nn.Linear(4 * 5 * 5, 6), torch.nn.BatchNorm1d(6))


# ---------------------------------------------------------------------------- single process

def test_plan_groups_ranks_or_refuses():
    assert plan_bn(None, 128, 8) == BNPlan(None, 16, 8)
    assert plan_bn(128, 128, 8).group_size == 8      # SN/CN/SNCN on 8 GPUs: one group of 8
    assert plan_bn(32, 128, 8).group_size == 2       # consistency (4 GPUs x 32) on 8
    assert plan_bn(32, 128, 4).group_size == 1 and not plan_bn(32, 128, 4).needed  # as official
    assert plan_bn(128, 128, 1).needed is False      # one GPU at 128: nothing to do
    assert plan_bn(32, 128, 1).needed and plan_bn(32, 128, 1).group_size == 0  # 4 chunks
    joint = plan_bn(96, 256, 8, views=3)             # AugMix per rank: 3 x 32 rows = 96
    assert not joint.needed
    official = plan_bn(96, 256, 8, views=3, follow_views=True)
    assert official.needed and official.follow_views and official.rows_per_rank == 32
    assert bn_rank_groups(8, 2) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ConfigError, match="cannot be met"):
        plan_bn(128, 64, 2)
    with pytest.raises(ConfigError, match=">= 2 rows"):
        plan_bn(1, 64, 1)


def test_one_process_emulates_dataparallel_chunks():
    """Consistency preset on one GPU: 128 rows in 4 BN batches of 32, running stats from the
    first (the official 4-GPU run)."""
    torch.manual_seed(1)
    x = torch.randn(128, 4, 5, 5, dtype=torch.float64) * 3 + 1
    ref = torch.nn.BatchNorm2d(4).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2)
        ref.bias.uniform_(-1, 1)
    mine = convert_batch_norm(torch.nn.Sequential(torch.nn.BatchNorm2d(4).double()),
                              plan_bn(32, 128, 1), rank=0)[0]
    mine.load_state_dict(ref.state_dict())
    xr, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out = dataparallel_bn(xr, 32, ref), mine(xm)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(mine.running_mean, ref.running_mean)
    torch.testing.assert_close(mine.running_var, ref.running_var)
    (out_ref * torch.arange(out.numel(), dtype=x.dtype).view_as(out)).sum().backward()
    (out * torch.arange(out.numel(), dtype=x.dtype).view_as(out)).sum().backward()
    torch.testing.assert_close(xm.grad, xr.grad)
    mine.eval()
    ref.eval()
    torch.testing.assert_close(mine(x), ref(x))


def test_augmix_official_layout_in_one_process():
    """SNCN+AugMix on one GPU: the 3-view batch cut as the 8-GPU run cut it (96-row chunks of
    cat(clean, aug1, aug2), stats from the clean chunk); without forward_views it is too."""
    torch.manual_seed(2)
    x = torch.randn(3 * 16, 4, 3, 3)
    ref = torch.nn.BatchNorm2d(4)
    mine = convert_batch_norm(torch.nn.BatchNorm2d(4),
                              plan_bn(12, 16, 1, views=3, follow_views=True), rank=0)
    with forward_views(3):
        out = mine(x)
    torch.testing.assert_close(out, dataparallel_bn(x, 12, ref))
    torch.testing.assert_close(mine.running_mean, ref.running_mean)


def test_converted_model_keeps_parameters_and_checkpoint_keys():
    model = tiny_bn_net()
    params = list(model.parameters())
    keys = set(model.state_dict())
    cfg = OmegaConf.create({"batch_size": 8, "augmix": {"enabled": False},
                            "distributed": {"bn_batch": 4, "sync_bn": False}})
    out = prepare_batch_norm(model, cfg, DistInfo())
    assert out is model and isinstance(model[1], ChunkBatchNorm)
    assert isinstance(model[5], ChunkBatchNorm)  # BatchNorm1d (SelfNorm's kind) too
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert set(model.state_dict()) == keys
    model(torch.randn(8, 3, 5, 5)).sum().backward()
    cfg.distributed.bn_batch = None
    plain = tiny_bn_net()
    assert prepare_batch_norm(plain, cfg, DistInfo()) is plain
    assert type(plain[1]) is torch.nn.BatchNorm2d


# ------------------------------------------------------------------------ two gloo processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather(t: torch.Tensor) -> torch.Tensor:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.stack(out)


def _check_bn(rank: int, world: int) -> None:
    """Item 1: two ranks with 4 rows each, BN batch 8 = one BatchNorm over both ranks
    (SyncBatchNorm of a group of 2): outputs, input and parameter gradients and running
    statistics equal one process on 8 rows. BN batch 2: each rank's 4 rows in 2 batches."""
    torch.manual_seed(3)
    x_all = torch.randn(world * 4, 4, 3, 3, dtype=torch.float64) * 2 + 0.5
    w_all = torch.randn_like(x_all)
    for bn_batch in (8, 2):
        ref = torch.nn.BatchNorm2d(4).double()
        with torch.no_grad():
            ref.weight.uniform_(0.5, 2)
        mine = torch.nn.BatchNorm2d(4).double()
        mine.load_state_dict(ref.state_dict())
        mine = convert_batch_norm(mine, plan_bn(bn_batch, world * 4, world), rank)
        xr = x_all.clone().requires_grad_()
        out_ref = dataparallel_bn(xr, bn_batch, ref)
        (out_ref * w_all).sum().backward()
        mine_x = x_all[rank * 4:(rank + 1) * 4].clone().requires_grad_()
        out = mine(mine_x)
        (out * w_all[rank * 4:(rank + 1) * 4]).sum().backward()
        torch.testing.assert_close(out, out_ref[rank * 4:(rank + 1) * 4])
        torch.testing.assert_close(mine_x.grad, xr.grad[rank * 4:(rank + 1) * 4])
        grad_w = _gather(mine.weight.grad).sum(0)  # what DDP sums (then averages)
        torch.testing.assert_close(grad_w, ref.weight.grad)
        if bn_batch == 8 or rank == 0:  # chunk 0 lives on rank 0 (DDP broadcasts its buffers)
            torch.testing.assert_close(mine.running_mean, ref.running_mean)
            torch.testing.assert_close(mine.running_var, ref.running_var)
    # through DDP, as the engine wraps it: a batch-8 preset on 2 processes x 4 rows trains as
    # one process on 8 rows (DDP averages the gradients of the ranks' mean losses)
    torch.manual_seed(5)
    x_all = torch.randn(world * 4, 3, 5, 5)
    y_all = torch.randint(0, 6, (world * 4,))
    ref_net = tiny_bn_net()
    F.cross_entropy(ref_net(x_all), y_all).backward()
    net = tiny_bn_net()
    cfg = OmegaConf.create({"batch_size": world * 4, "augmix": {"enabled": False},
                            "distributed": {"bn_batch": world * 4}})
    ddp = torch.nn.parallel.DistributedDataParallel(
        prepare_batch_norm(net, cfg, DistInfo(rank=rank, world=world)))
    part = slice(rank * 4, (rank + 1) * 4)
    F.cross_entropy(ddp(x_all[part]), y_all[part]).backward()
    for (name, p), q in zip(net.named_parameters(), ref_net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    torch.testing.assert_close(net[1].running_var, ref_net[1].running_var)
    # the SyncBatchNorm process groups of the CUDA path form on any backend
    groups = [dist.new_group(r) for r in bn_rank_groups(world, world)]
    assert len(groups) == 1


def _check_augmix(rank: int, world: int) -> None:
    """Item 2: with augmix_bn=official the rows of both ranks are laid out as DataParallel's
    cat(clean, aug1, aug2) and cut into bn_batch rows (8: one view per BN batch; 6: chunks
    that straddle views and ranks); running stats come from the clean chunk. The default
    (per_rank) normalizes each rank's three views together."""
    b = 4
    torch.manual_seed(4)
    views = torch.randn(3, world * b, 2, 3, 3, dtype=torch.float64)  # view, image, ...
    order = views.reshape(3 * world * b, 2, 3, 3)  # DataParallel's global batch
    local = views[:, rank * b:(rank + 1) * b].reshape(3 * b, 2, 3, 3)
    for bn_batch in (8, 6):
        ref = torch.nn.BatchNorm2d(2).double()
        out_ref = dataparallel_bn(order, bn_batch, ref).reshape(3, world * b, 2, 3, 3)
        cfg = OmegaConf.create({"batch_size": world * b, "augmix": {"enabled": True},
                                "distributed": {"bn_batch": bn_batch,
                                                "augmix_bn": "official"}})
        mine = prepare_batch_norm(torch.nn.Sequential(torch.nn.BatchNorm2d(2).double()), cfg,
                                  DistInfo(rank=rank, world=world))[0]
        with forward_views(3):
            out = mine(local)
        expected = out_ref[:, rank * b:(rank + 1) * b].reshape(3 * b, 2, 3, 3)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(mine.running_mean, ref.running_mean)
        # the stats come from the clean view only
        torch.testing.assert_close(mine.running_mean, 0.1 * views[0, :bn_batch].mean((0, 2, 3)))
    # per_rank: 12 local rows in one BatchNorm (not converted: bn_batch 12 = 3 x 4)
    cfg = OmegaConf.create({"batch_size": world * b, "augmix": {"enabled": True},
                            "distributed": {"bn_batch": 12, "augmix_bn": "per_rank"}})
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(2))
    assert type(prepare_batch_norm(net, cfg, DistInfo(rank=rank, world=world))[0]) \
        is torch.nn.BatchNorm2d


def _check_folder_loader(rank: int, world: int, root: str) -> None:
    """Item 3: ranks draw different crops, flips and AugMix parameters (the global torch
    generator is seeded alike on both, as seed_everything does), reproducibly."""
    from torchvision.datasets import ImageFolder

    from snc.augment.augmix import AugMix
    from snc.data.imagenet import FolderLoader, imagenet_transform

    def first_batch(workers: int):
        torch.manual_seed(1)  # seed_everything: the same global state on every rank
        ds = ImageFolder(root, imagenet_transform(True, 16))
        loader = FolderLoader(ds, 4, [0.5] * 3, [0.25] * 3, train=True, seed=1, workers=workers,
                              rank=rank, world=world, augmix=AugMix([0.5] * 3, [0.25] * 3))
        (clean, aug1, aug2), y = next(iter(loader))
        return clean, aug1 - clean

    clean, aug = first_batch(0)
    both_clean, both_aug = _gather(clean), _gather(aug)
    # every image of the folder is the same picture: only the augmentation tells them apart
    assert not torch.equal(both_clean[0], both_clean[1])
    assert not torch.allclose(both_aug[0], both_aug[1])
    again, _ = first_batch(0)
    torch.testing.assert_close(again, clean)
    in_worker, _ = first_batch(1)  # the same draws in a worker process
    torch.testing.assert_close(in_worker, clean)


def _worker(rank: int, world: int, port: int, root: str, errors) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        _check_bn(rank, world)
        _check_augmix(rank, world)
        _check_folder_loader(rank, world, root)
    except Exception:  # pragma: no cover - reported by the parent
        errors.put(f"rank {rank}:\n{traceback.format_exc()}")
        raise
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_bn_batch_augmix_layout_and_rank_augmentation(tmp_path):
    from PIL import Image

    picture = (np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)
    for c in range(2):
        (tmp_path / "train" / f"c{c}").mkdir(parents=True)
        for i in range(8):
            Image.fromarray(picture).save(tmp_path / "train" / f"c{c}" / f"{i}.png")
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    try:
        mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "train"), errors), nprocs=2,
                 join=True)
    except Exception as err:  # the rank's traceback, not only "process 1 terminated"
        messages = []
        while not errors.empty():
            messages.append(errors.get())
        raise AssertionError("\n".join(messages) or str(err)) from None


# ------------------------------------------------------------------ presets and the grid

def _compose(*overrides, hydra_cfg=False):
    from hydra import compose, initialize_config_dir

    import snc.config  # noqa: F401  (registers the config schemas)

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra_cfg)


def _grid_jobs(name):
    """The (active_num, prob) of every job of ``-m experiment=<name> sweep=appendix_grid``,
    as Hydra's basic sweeper expands them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = _compose(f"experiment={name}", "sweep=appendix_grid", hydra_cfg=True)
    params = cfg.hydra.sweeper.params
    sweep = [f"{k}={v}" for k, v in params.items()]
    (override,) = OverridesParser.create().parse_overrides(sweep)
    jobs = []
    for value in override.sweep_string_iterator():
        job = _compose(f"experiment={name}", "sweep=appendix_grid",
                       f"{override.get_key_element()}={value}")
        jobs.append((job.cn.active_num, job.cn.prob))
    return cfg.paper.official, jobs


def test_appendix_grid_adds_the_official_setting_only_when_outside():
    official, jobs = _grid_jobs("table1_cifar10_wrn40_2_sncn_augmix")  # official prob 0.75
    assert (official.active_num, official.prob) == (1, 0.75)
    assert jobs == [(1, 0.25), (1, 0.5), (2, 0.25), (2, 0.5), (1, 0.75)]
    official, jobs = _grid_jobs("table1_cifar100_wrn40_2_sncn")  # official (2, 0.25): in grid
    assert (official.active_num, official.prob) == (2, 0.25)
    assert jobs == [(1, 0.25), (1, 0.5), (2, 0.25), (2, 0.5)]


@pytest.mark.parametrize("name, bn_batch, augmix_bn", [
    ("imagenet_table2_sn", 128, "per_rank"), ("imagenet_table2_cn", 128, "per_rank"),
    ("imagenet_table2_sncn", 128, "per_rank"), ("imagenet_table2_sncn_augmix", 96, "official"),
    ("imagenet_table2_standard", None, "per_rank"),
    ("official_imagenet_resnet50_sncn_consistency", 32, "per_rank"),
    ("table15_imagenet_resnet50_ibn_a_cn_consistency", 32, "per_rank"),
    ("table1_cifar10_wrn40_2_sncn", 128, "per_rank"),
    ("table1_cifar10_wrn40_2_sncn_augmix", 384, "per_rank"),
    ("official_cifar100_densenet40_12_sncn_consistency", 64, "per_rank"),
])
def test_presets_carry_the_official_bn_batch(name, bn_batch, augmix_bn):
    cfg = _compose(f"experiment={name}")
    assert cfg.distributed.bn_batch == bn_batch and cfg.distributed.augmix_bn == augmix_bn
    if bn_batch is not None:  # every world size that splits the batch can meet it
        views = 3 if cfg.augmix.enabled else 1
        for world in (1, 2, 4, 8):
            plan_bn(bn_batch, cfg.batch_size, world, views=views,
                    follow_views=augmix_bn == "official")


def test_official_consistency_presets():
    cfg = _compose("experiment=official_imagenet_resnet50_sncn_consistency")
    assert cfg.objective.name == "consistency" and cfg.cn.crop == "both"
    assert cfg.cn.consist_wt == 10 and cfg.cn.prob == 0.5 and cfg.batch_size == 128
    assert cfg.position.sn == "post_addition" and cfg.position.cn == "image"
    names = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob(
        "official_cifar*_sncn_consistency.yaml"))
    assert len(names) == 8
    cfg = _compose("experiment=official_cifar100_resnext29_4x32d_sncn_consistency")
    assert (cfg.batch_size, cfg.optimizer.lr, cfg.cn.active_num, cfg.cn.prob) == (
        64, 0.05, 1, 0.25)


def test_reference_loader_keeps_the_last_partial_batch():
    """Item 6: the benchmark's official-style loader steps over every image, as cifar.py's."""
    from snc.reference.cifar import reference_loader

    cfg = OmegaConf.create({"batch_size": 4, "dataset": {"mean": [0.5] * 3, "std": [0.5] * 3},
                            "augmix": {"enabled": False, "severity": 3}})
    images = np.zeros((10, 32, 32, 3), dtype=np.uint8)
    sizes = [len(y) for _, y in reference_loader(images, np.arange(10), cfg, workers=0)]
    assert sizes == [4, 4, 2]
