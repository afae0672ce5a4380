"""The unfreezing schedule (pure), the block groups of real backbones (random weights), the LR
schedules, and the fine-tuning module assembled from the `strategy` config group."""

from __future__ import annotations

import math
import pickle
import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from timm.models._manipulate import group_parameters
from torch import nn

from tlbench.cli import config_dir
from tlbench.errors import ConfigError
from tlbench.finetune.assembly import build_finetune_module
from tlbench.finetune.groups import block_groups
from tlbench.finetune.lr_schedules import Step
from tlbench.finetune.schedule import UnfreezeSchedule
from tlbench.models import create_backbone


def trainable(schedule: UnfreezeSchedule, epochs: int) -> list[list[int]]:
    """Per epoch, the indices of the groups (0 = input side) that train."""
    return [[g for g in range(schedule.num_groups) if schedule.is_trainable(g, e)] for e in range(epochs)]


# --- presets ---


def test_progressive_every_epoch_unfreezes_one_group_from_the_top():
    s = UnfreezeSchedule(num_groups=4)
    assert [s.trainable_groups(e) for e in range(7)] == [0, 1, 2, 3, 4, 4, 4]
    assert trainable(s, 6) == [[], [3], [2, 3], [1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]


def test_progressive_every_k_epochs():
    s = UnfreezeSchedule(num_groups=3, every=2)
    assert trainable(s, 9) == [[], [], [2], [2], [1, 2], [1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2]]


def test_progressive_milestones():
    s = UnfreezeSchedule(num_groups=4, milestones=[2, 3, 7])
    assert trainable(s, 9) == [[], [], [3], [2, 3], [2, 3], [2, 3], [2, 3], [1, 2, 3], [1, 2, 3]]
    # milestones take precedence over `every`
    assert trainable(UnfreezeSchedule(num_groups=4, every=1, milestones=[5]), 7) == [[]] * 5 + [[3], [3]]


def test_full_trains_every_group_from_epoch_zero():
    s = UnfreezeSchedule(num_groups=5, preset="full")
    assert trainable(s, 3) == [[0, 1, 2, 3, 4]] * 3


def test_head_only_never_trains_the_backbone():
    s = UnfreezeSchedule(num_groups=5, preset="head_only", every=1)
    assert trainable(s, 20) == [[]] * 20


def test_frozen_forever_keeps_the_bottom_groups_frozen():
    s = UnfreezeSchedule(num_groups=4, frozen_forever=2)
    assert trainable(s, 6) == [[], [3], [2, 3], [2, 3], [2, 3], [2, 3]]
    assert trainable(UnfreezeSchedule(num_groups=4, preset="full", frozen_forever=1), 2) == [[1, 2, 3]] * 2
    # all groups frozen for good: the progressive schedule degenerates to head only
    assert trainable(UnfreezeSchedule(num_groups=3, frozen_forever=3), 5) == [[]] * 5


def test_lp_epochs_come_first_then_the_schedule():
    s = UnfreezeSchedule(num_groups=3, lp_epochs=2)
    assert trainable(s, 7) == [[], [], [], [2], [1, 2], [0, 1, 2], [0, 1, 2]]
    # LP-FT proper: a linear probe, then full fine-tuning
    assert trainable(UnfreezeSchedule(num_groups=3, preset="full", lp_epochs=2), 4) == [[], [], [0, 1, 2], [0, 1, 2]]
    # milestones count from the end of the linear probe
    s = UnfreezeSchedule(num_groups=3, lp_epochs=2, milestones=[1, 3])
    assert trainable(s, 6) == [[], [], [], [2], [2], [1, 2]]


def test_schedule_is_a_pure_function_of_the_epoch():
    s = UnfreezeSchedule(num_groups=4, every=2, frozen_forever=1, lp_epochs=1)
    forward = [s.trainable_groups(e) for e in range(12)]
    backward = [s.trainable_groups(e) for e in reversed(range(12))][::-1]
    assert forward == backward
    assert forward == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 3]


# --- bad input: a ConfigError naming the setting, before any training ---


@pytest.mark.parametrize("milestones", [[3, 2], [2, 2], [1, 4, 3]])
def test_milestones_out_of_order_are_refused(milestones):
    with pytest.raises(ConfigError, match=r"strategy\.schedule\.milestones must be increasing epochs >= 1, got \["):
        UnfreezeSchedule(num_groups=5, milestones=milestones)


def test_milestone_zero_is_refused():
    with pytest.raises(ConfigError, match=r"milestones must be increasing epochs >= 1"):
        UnfreezeSchedule(num_groups=5, milestones=[0, 2])


def test_more_milestones_than_unfreezable_groups_is_refused():
    message = r"milestones names 4 unfreezing steps, but the model has only 3 groups that may unfreeze"
    with pytest.raises(ConfigError, match=message):
        UnfreezeSchedule(num_groups=3, milestones=[1, 2, 3, 4])
    # frozen_forever reduces what may unfreeze
    with pytest.raises(ConfigError, match=r"names 3 unfreezing steps.*only 2 groups.*\(4 groups, frozen_forever=2\)"):
        UnfreezeSchedule(num_groups=4, frozen_forever=2, milestones=[1, 2, 3])
    # exactly as many milestones as groups is fine
    assert UnfreezeSchedule(num_groups=3, milestones=[1, 2, 3]).trainable_groups(3) == 3


@pytest.mark.parametrize("frozen_forever", [4, -1])
def test_frozen_forever_outside_the_groups_is_refused(frozen_forever):
    with pytest.raises(ConfigError, match=rf"frozen_forever={frozen_forever}, but the model has 3 groups"):
        UnfreezeSchedule(num_groups=3, frozen_forever=frozen_forever)


def test_bad_preset_every_and_lp_epochs_are_refused():
    with pytest.raises(ConfigError, match=r"preset must be one of progressive, full, head_only, got 'gradual'"):
        UnfreezeSchedule(num_groups=3, preset="gradual")
    with pytest.raises(ConfigError, match=r"every must be >= 1, got 0"):
        UnfreezeSchedule(num_groups=3, every=0)
    with pytest.raises(ConfigError, match=r"lp_epochs must be >= 0, got -1"):
        UnfreezeSchedule(num_groups=3, lp_epochs=-1)


# --- block groups of real backbones ---


def _check_partition(model, head, groups):
    """Every non-head parameter in exactly one group, the head in none, groups non-empty."""
    names = [n for n, _ in model.named_parameters()]
    in_head = [n for n in names if n == head or n.startswith(head + ".")]
    flat = [n for g in groups for n in g]
    assert all(groups), "empty group"
    assert len(flat) == len(set(flat)), "a parameter in two groups"
    assert set(flat) == set(names) - set(in_head)
    assert in_head and not set(in_head) & set(flat)
    # groups ordered from the input: parameter order within the model is preserved across groups
    order = {n: i for i, n in enumerate(names)}
    assert [order[g[0]] for g in groups] == sorted(order[g[0]] for g in groups)


def test_vgg16_groups_are_five_conv_blocks_then_fc6_and_fc7():
    backbone = create_backbone("vgg16", source="torchvision", pretrained=False)
    assert backbone.head == "classifier.6"
    groups = block_groups(backbone.model, backbone.head)
    assert len(groups) == 7
    conv_layers_per_block = [2, 2, 3, 3, 3]
    for group, layers in zip(groups[:5], conv_layers_per_block):
        assert len(group) == 2 * layers and all(n.startswith("features.") for n in group)
    assert groups[0] == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]
    assert groups[4][-1] == "features.28.bias"
    assert groups[5] == ["classifier.0.weight", "classifier.0.bias"]  # fc6
    assert groups[6] == ["classifier.3.weight", "classifier.3.bias"]  # fc7
    _check_partition(backbone.model, backbone.head, groups)


@pytest.mark.parametrize(
    ("name", "expected_groups", "first", "last"),
    [
        ("efficientnet_lite0", 8, "conv_stem.weight", "bn2.bias"),
        ("resnet18", 5, "conv1.weight", "layer4.1.bn2.bias"),
    ],
)
def test_timm_groups_follow_group_matcher(name, expected_groups, first, last):
    backbone = create_backbone(name, source="timm", pretrained=False)
    model, head = backbone.model, backbone.head
    groups = block_groups(model, head)
    assert len(groups) == expected_groups
    assert groups[0][0] == first and groups[-1][-1] == last
    # exactly timm's coarse grouping, minus the head
    timm_groups = group_parameters(model, model.group_matcher(coarse=True))
    expected = [[n for n in timm_groups[k] if not n.startswith(head + ".")] for k in sorted(timm_groups)]
    assert groups == [g for g in expected if g]
    _check_partition(model, head, groups)
    if name == "resnet18":
        assert [sorted({n.split(".")[0] for n in g}) for g in groups] == [
            ["bn1", "conv1"],
            ["layer1"],
            ["layer2"],
            ["layer3"],
            ["layer4"],
        ]
    else:
        # one group per stage of blocks, stem first; the final conv joins the last stage (timm's MATCH_PREV_GROUP)
        stages = [sorted({".".join(n.split(".")[:2]) for n in g if n.startswith("blocks.")}) for g in groups]
        assert stages == [[]] + [[f"blocks.{i}"] for i in range(7)]
        assert any(re.match(r"conv_head\.", n) for n in groups[-1])


def test_fallback_groups_are_top_level_children():
    model = nn.Sequential()
    model.add_module("stem", nn.Conv2d(3, 4, 3))
    model.add_module("act", nn.ReLU())
    model.add_module("body", nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)))
    model.add_module("fc", nn.Linear(4, 2))
    groups = block_groups(model, "fc")
    assert groups == [
        ["stem.weight", "stem.bias"],
        ["body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias"],
    ]


# --- LR schedules and the assembly from the strategy group ---


def _finetune_strategy(*overrides: str) -> dict:
    """The resolved `strategy` group of `strategy=finetune` as run.py passes it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["strategy=finetune", *overrides])
    return OmegaConf.to_container(cfg.strategy, resolve=True)


def test_lr_schedules_warm_up_then_decay():
    cosine = instantiate(_finetune_strategy("strategy.lr_schedule.warmup_steps=2")["lr_schedule"])
    assert [cosine(s, 10, 5) for s in (0, 1)] == [0.5, 1.0]  # linear warm-up: (step + 1) / warmup_steps
    assert cosine(2, 10, 5) == 1.0 and cosine(6, 10, 5) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    assert cosine(10, 10, 5) == pytest.approx(0.0) and cosine(20, 10, 5) == pytest.approx(0.0)
    step = instantiate(
        _finetune_strategy("strategy/lr_schedule=step", "strategy.lr_schedule.step_epochs=2")["lr_schedule"]
    )
    # 5 steps per epoch: x gamma (0.1) every 2 epochs
    assert [step(s, 40, 5) for s in (0, 9, 10, 19, 20)] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    constant = instantiate(_finetune_strategy("strategy/lr_schedule=constant")["lr_schedule"])
    assert [constant(s, 10, 5) for s in (0, 5, 50)] == [1.0, 1.0, 1.0]


def test_assembly_builds_optimizer_and_schedule_from_the_strategy_group():
    strategy = _finetune_strategy("strategy/optimizer=adamw", "strategy/lr_schedule=step", "strategy.lr_decay=0.1")
    module = build_finetune_module(create_backbone("resnet18", source="timm", pretrained=False), 4, strategy)
    assert module.head_in_features == 512 and len(module.groups) == 5 and module.schedule.preset == "progressive"
    assert module.backbone.fc[-1].out_features == 4  # the new head
    assert isinstance(module.lr_schedule, Step)
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 1.0e-4
    lrs = {g["name"]: g["initial_lr"] for g in optimizer.param_groups}  # before the schedule's factor
    assert lrs == pytest.approx({"head": 0.01, **{f"group{i}": 0.01 * 0.1 ** (5 - i) for i in range(5)}})
    pickle.dumps(module.optimizer_factory), pickle.dumps(module.lr_schedule)  # DDP's spawn pickles the module


def test_assembly_needs_a_linear_head():
    backbone = create_backbone("resnet18", source="timm", pretrained=False)
    backbone.model.fc = nn.Identity()
    with pytest.raises(ConfigError, match=r"fine-tuning needs a Linear classifier at fc; set model\.head=MODULE"):
        build_finetune_module(backbone, 3, _finetune_strategy())
