"""The engine without classification: a toy task through epochs and steps, best/last
bookkeeping, mid-stream resume; schedules, optimizer groups, typed options end to end."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import ConfigCompositionException

from snc.config import unit_options
from snc.engine import run
from snc.engine.optim import build_optimizer
from snc.engine.schedule import build_scheduler
from snc.errors import ConfigError
from snc.ops import CrossNorm, CrossNormOptions, SelfNorm
from snc.tasks import list_tasks
from snc.tasks.base import Task, register_task
from snc.tasks.classify import build_network


class Stream:
    """An endless, seeded stream of regression batches; resumable between any two batches."""

    def __init__(self, seed: int, batch: int = 16) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.batch = batch
        self.weights = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def __len__(self) -> int:
        return 5  # "batches per epoch" in epoch mode

    def __iter__(self):
        epoch_mode = getattr(self, "epoch_mode", False)
        for _ in range(len(self)) if epoch_mode else iter(int, 1):
            x = torch.randn(self.batch, 4, generator=self.generator)
            yield x, x @ self.weights

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


@register_task("toy_regression")
class ToyRegression(Task):
    monitor = ("val/loss", "min")

    def run_name(self):
        return "toy"

    def setup(self, ctx):
        torch.manual_seed(ctx.seed)
        self.model = torch.nn.Linear(4, 1).to(ctx.device)
        self.train = Stream(ctx.seed)
        self.train.epoch_mode = self.cfg.get("max_steps") is None
        self.steps_seen = 0

    def training_step(self, model, batch):
        x, y = batch
        loss = F.mse_loss(model(x), y)
        return loss, {"mse": loss.detach()}

    def after_step(self, model, step):
        self.steps_seen += 1

    def evaluate(self, model):
        x = torch.linspace(-1, 1, 32).repeat(4, 1).T
        with torch.no_grad():
            return {"val/loss": float(F.mse_loss(model(x), x @ self.train.weights))}

    def final_evaluate(self, model, best_state):
        out = {"final/val_loss": self.evaluate(model)["val/loss"],
               "steps_seen": self.steps_seen}
        if best_state is not None:
            out["has_best"] = True
        return out

    def summary(self, results):
        return f"val loss {results['final/val_loss']:.4f}"

    def state_dict(self):
        return {"steps_seen": self.steps_seen}

    def load_state_dict(self, state):
        self.steps_seen = int(state.get("steps_seen", 0))


TOY = ["task.name=toy_regression", "optimizer.lr=0.05", "optimizer.momentum=0.0",
       "optimizer.nesterov=false", "optimizer.weight_decay=0", "evaluate_corruptions=false"]


def test_the_toy_task_is_registered_beside_classify():
    assert {"classify", "toy_regression"} <= set(list_tasks())


def test_epoch_mode_trains_evaluates_and_keeps_the_best(make_cfg):
    results = run(make_cfg(*TOY, "epochs=3", "eval_every=1"))
    run_dir = Path(results["run_dir"])
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert all("val/loss" in r for r in epochs)  # a monitored task is evaluated every epoch
    assert results["steps_seen"] == 15 and results["has_best"]
    assert results["best/val/loss"] == min(r["val/loss"] for r in epochs)
    assert results["train/final_epoch_loss"] < results["train/first_epoch_loss"]
    assert (run_dir / "ckpt" / "best.pt").exists() and results["task"] == "toy_regression"


def test_step_mode_runs_max_steps_in_periods(make_cfg):
    results = run(make_cfg(*TOY, "max_steps=10", "eval_every_steps=4", "schedule.name=poly"))
    rows = [json.loads(x) for x in (Path(results["run_dir"]) / "metrics.jsonl").read_text()
            .splitlines()]
    periods = [r for r in rows if "period" in r]
    assert [(r["period"], r["step"]) for r in periods] == [(1, 4), (2, 8), (3, 10)]
    assert all("val/loss" in r and "train_period/steps_per_second" in r for r in periods)
    assert results["steps_seen"] == 10 and results["max_steps"] == 10


def test_step_mode_kill_and_resume_is_bit_identical(make_cfg, tmp_path, kill_run):
    overrides = [*TOY, "max_steps=12", "eval_every_steps=4", "schedule.name=fixmatch"]
    straight = run(make_cfg(*overrides, f"paths.output_dir={tmp_path / 'a'}"))
    cfg = make_cfg(*overrides, f"paths.output_dir={tmp_path / 'b'}")
    kill_run(cfg, at=2)
    resumed = run(cfg)
    assert resumed["final/val_loss"] == straight["final/val_loss"]
    assert resumed["steps_seen"] == 12  # the task's own state came back from the checkpoint
    a = torch.load(Path(straight["run_dir"]) / "ckpt/last.pt", weights_only=True)
    b = torch.load(Path(resumed["run_dir"]) / "ckpt/last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_schedules_follow_their_formulas():
    params = [torch.nn.Parameter(torch.zeros(1))]

    def lrs(name, total=8, **kw):
        opt = torch.optim.SGD(params, lr=0.1)
        sched = build_scheduler(opt, name, total_steps=total, steps_per_epoch=2, epochs=4,
                                base_lr=0.1, **kw)
        out = []
        for _ in range(total):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs("poly", power=0.9)[3] == pytest.approx(0.1 * (1 - 3 / 8) ** 0.9)
    assert lrs("fixmatch")[5] == pytest.approx(0.1 * math.cos(7 * math.pi * 5 / (16 * 8)))
    assert lrs("constant") == [pytest.approx(0.1)] * 8
    assert lrs("step")[:6] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    with pytest.raises(ConfigError, match="choose one of cosine, step, poly"):
        lrs("linear")


def test_optimizer_groups_scale_the_learning_rate(make_cfg):
    cfg = make_cfg("optimizer.name=adam")
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer(cfg.optimizer, [{"params": [a]}, {"params": [b], "lr_scale": 10.0,
                                                             "weight_decay": 0.0}], 0.01)
    assert isinstance(opt, torch.optim.Adam)
    assert [g["lr"] for g in opt.param_groups] == [0.01, pytest.approx(0.1)]
    assert opt.param_groups[1]["weight_decay"] == 0.0


def test_cn_off_carries_no_cn_field(make_cfg):
    with pytest.raises(ConfigCompositionException, match="cn.prob"):
        make_cfg("cn=off", "cn.prob=0.9")
    with pytest.raises(ConfigCompositionException, match="gates"):
        make_cfg("sn=se", "sn.gates=2")  # SE has a reduction, not gates
    with pytest.raises(ConfigCompositionException):
        make_cfg("cn=on", "cn.prob=often")  # typed: a float


def test_typed_options_reach_the_units_unchanged(make_cfg):
    cfg = make_cfg("sn=on", "sn.gates=2", "cn=on", "crop=style", "cn.threshold=0.2",
                   "cn.active_num=2", "position=post_residual")
    units = unit_options(cfg)
    cn, placement = units.cn, units.placement
    assert cn == CrossNormOptions(crop="style", threshold=0.2, active_num=2)
    model = build_network(cfg, 10)
    units = [m for m in model.modules() if isinstance(m, CrossNorm)]
    assert units and all(u.options == cn for u in units)
    assert all(m.gates == 2 for m in model.modules() if isinstance(m, SelfNorm))
    assert model.cn_controller.active_num == 2 and placement.name == "post_residual"


@pytest.mark.parametrize("overrides, match", [
    (["sn=on", "position=after_conv"], "unknown position 'after_conv' for backbone wrn16_2"),
    (["cn=on", "cn.active_num=99"], "cn.active_num=99 but the model has"),
    (["cn=on", "cn.prob=1.5"], r"cn.prob must be in \[0, 1\]"),
    (["crop=both"], "but cn=off: add cn=on"),
    (["task.name=segmentation_typo"], "unknown task 'segmentation_typo'; choose one of"),
    (["optimizer.name=rmsprop"], "optimizer.name='rmsprop'; choose one of sgd, adam"),
    (["task=text", "augment=mixup"], "augment=mixup is a classification baseline"),
])
def test_invalid_options_fail_before_a_run_folder_exists(make_cfg, tmp_path, overrides,
                                                           match):
    with pytest.raises(ConfigError, match=match):
        run(make_cfg(*overrides))
    assert not (tmp_path / "outputs").exists()
