"""Ordered block groups of a backbone (input side first), the unit of progressive unfreezing.

- timm models: `group_matcher(coarse=True)` (stem, stages..., final conv), as timm defines them;
- torchvision VGG16: its five conv blocks (split at the max-pools), then fc6 and fc7;
- any other model (documented fallback): each top-level child with parameters is one group.
The classifier head is never part of a group: it is always trained.
"""

from __future__ import annotations

from torch import nn


def block_groups(model: nn.Module, head: str) -> list[list[str]]:
    """Parameter names per group, ordered from the input to the output, head excluded."""
    if hasattr(model, "group_matcher"):
        from timm.models._manipulate import group_parameters

        grouped = group_parameters(model, model.group_matcher(coarse=True))
        groups = [list(grouped[k]) for k in sorted(grouped)]
    elif _is_torchvision_vgg(model):
        groups = _vgg_groups(model)
    else:
        groups = [
            [f"{name}.{p}" for p, _ in child.named_parameters()]
            for name, child in model.named_children()
            if any(True for _ in child.parameters())
        ]
    in_head = lambda n: n == head or n.startswith(head + ".")  # noqa: E731
    groups = [[n for n in g if not in_head(n)] for g in groups]
    return [g for g in groups if g]


def head_parameter_names(model: nn.Module, head: str) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith(head + ".")]


def _is_torchvision_vgg(model: nn.Module) -> bool:
    return type(model).__name__ == "VGG" and hasattr(model, "features") and hasattr(model, "classifier")


def _vgg_groups(model: nn.Module) -> list[list[str]]:
    groups: list[list[str]] = []
    current: list[str] = []
    for index, layer in enumerate(model.features):
        current += [f"features.{index}.{p}" for p, _ in layer.named_parameters()]
        if isinstance(layer, nn.MaxPool2d) and current:
            groups.append(current)
            current = []
    for index, layer in enumerate(model.classifier):
        if isinstance(layer, nn.Linear):  # fc6, fc7 (and fc8, the head, removed by the caller)
            groups.append([f"classifier.{index}.{p}" for p, _ in layer.named_parameters()])
    return groups
