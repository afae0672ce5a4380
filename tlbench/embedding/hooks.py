"""Forward hooks that reduce each tapped tensor at once, so memory stays proportional to the batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tlbench.models.taps import Tap


def reduce_activation(tensor: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> spatial mean (N, C); (N, L, C) tokens -> mean over L; (N, D) as it is.

    Runs inside the hook: an in-place ReLU after a tapped conv would otherwise overwrite the
    tensor before anyone read it.
    """
    tensor = tensor.detach()
    if tensor.dim() == 4:
        reduced = tensor.mean(dim=(2, 3))
    elif tensor.dim() == 3:
        reduced = tensor.mean(dim=1)
    elif tensor.dim() == 2:
        reduced = tensor.clone()
    else:
        reduced = tensor.flatten(1).clone()
    return reduced.float()


class TapRecorder:
    """Registers one hook per tap; `collect()` returns the batch's features concatenated in tap
    order (and, for a module called several times, in call order)."""

    def __init__(self, model: nn.Module, taps: Sequence[Tap]) -> None:
        self.taps = list(taps)
        self._records: dict[Tap, list[torch.Tensor]] = {tap: [] for tap in self.taps}
        self._handles = []
        self.layout: list[tuple[str, int]] | None = None
        for tap in self.taps:
            module = model.get_submodule(tap.module)
            if tap.read == "input":
                self._handles.append(module.register_forward_pre_hook(self._input_hook(tap)))
            else:
                self._handles.append(module.register_forward_hook(self._output_hook(tap)))

    def _output_hook(self, tap: Tap):
        def hook(module: nn.Module, inputs: tuple, output) -> None:
            tensor = output[0] if isinstance(output, tuple | list) else output
            self._records[tap].append(reduce_activation(tensor))

        return hook

    def _input_hook(self, tap: Tap):
        def hook(module: nn.Module, inputs: tuple) -> None:
            self._records[tap].append(reduce_activation(inputs[0]))

        return hook

    def collect(self) -> torch.Tensor:
        """The features of the last forward pass, (batch, dim); clears the records."""
        parts: list[torch.Tensor] = []
        layout: list[tuple[str, int]] = []
        for tap in self.taps:
            calls = self._records[tap]
            if not calls:
                raise RuntimeError(f"tap {tap} was not reached by the forward pass")
            for k, tensor in enumerate(calls):
                parts.append(tensor)
                layout.append((str(tap) if k == 0 else f"{tap}#{k}", tensor.shape[1]))
            self._records[tap] = []
        if self.layout is None:
            self.layout = layout
        elif layout != self.layout:
            raise RuntimeError("the tapped layers changed between batches; taps must be static")
        return torch.cat(parts, dim=1)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@torch.no_grad()
def feature_layout(model: nn.Module, taps: Sequence[Tap], input_size: Sequence[int]) -> list[tuple[str, int]]:
    """(tap, dimension) for each tapped tensor, from one forward pass on a zero image."""
    was_training = model.training
    model.eval()
    recorder = TapRecorder(model, taps)
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *input_size, device=device))
        recorder.collect()
        return list(recorder.layout or [])
    finally:
        recorder.remove()
        model.train(was_training)
