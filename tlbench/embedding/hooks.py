"""Forward hooks that reduce each tapped tensor at once, so memory stays proportional to the batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tlbench.models.taps import Tap, token_layout


def channel_dim_of(module: nn.Module) -> int | None:
    """Where a module puts channels in a 4-D output: 1 for convolutions and BatchNorm (NCHW),
    -1 for Linear and LayerNorm (applied to NHWC maps, as in ConvNeXt); None if it cannot tell."""
    if type(module).__name__ == "LayerNorm2d":  # timm: LayerNorm over the channels of an NCHW map
        return 1
    if isinstance(module, nn.Linear | nn.LayerNorm):
        return -1
    if isinstance(module, nn.modules.conv._ConvNd | nn.modules.batchnorm._BatchNorm | nn.GroupNorm):
        return 1
    return None


def guess_channel_dim(shape: Sequence[int]) -> int:
    """For modules that do not say (activations): square maps tell NCHW (N, C, S, S) from
    NHWC (N, S, S, C); tlbench's eval transforms produce square inputs. NCHW when in doubt."""
    _, a, b, c = shape
    if a == b and b != c:
        return -1
    return 1


def reduce_activation(tensor: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """4-D maps -> spatial mean per channel (N, C); (N, L, C) tokens -> mean over all L (taps
    without a token read; see `reduce_tokens`); (N, D) as it is.

    Runs inside the hook: an in-place ReLU after a tapped conv would otherwise overwrite the
    tensor before anyone read it.
    """
    tensor = tensor.detach()
    if tensor.dim() == 4:
        reduced = tensor.mean(dim=(2, 3)) if channel_dim == 1 else tensor.mean(dim=(1, 2))
    elif tensor.dim() == 3:
        reduced = tensor.mean(dim=1)
    elif tensor.dim() == 2:
        reduced = tensor.clone()
    else:
        reduced = tensor.flatten(1).clone()
    return reduced.float()


def reduce_tokens(tensor: torch.Tensor, tokens: str, prefix: int) -> torch.Tensor:
    """(N, L, C) tokens -> (N, C): token 0 ("cls") or the mean of tokens [prefix:] ("patches"),
    the class token and the patch pooling of timm's global_pool_nlc (vision_transformer.py)."""
    if tensor.dim() != 3 or tensor.shape[1] <= prefix:
        raise RuntimeError(
            f"a ':{tokens}' tap reads (N, L, C) tokens with more than {prefix} prefix tokens; got {tuple(tensor.shape)}"
        )
    tensor = tensor.detach()
    reduced = tensor[:, 0].clone() if tokens == "cls" else tensor[:, prefix:].mean(dim=1)
    return reduced.float()


class TapRecorder:
    """Registers one hook per tap; `collect()` returns the batch's features concatenated in tap
    order (and, for a module called several times, in call order)."""

    def __init__(self, model: nn.Module, taps: Sequence[Tap]) -> None:
        self.taps = list(taps)
        self._records: dict[Tap, list[torch.Tensor]] = {tap: [] for tap in self.taps}
        # Channel position of each tap's 4-D tensors, fixed at the first call so that every batch
        # is reduced the same way.
        self._channel_dims: dict[Tap, int | None] = {}
        # Prefix tokens (class, distillation, register) that a ':patches' tap leaves out.
        self._prefix = token_layout(model).prefix if any(tap.tokens for tap in self.taps) else 0
        self._handles = []
        self.layout: list[tuple[str, int]] | None = None
        for tap in self.taps:
            module = model.get_submodule(tap.module)
            self._channel_dims[tap] = channel_dim_of(module) if tap.read == "output" else None
            if tap.read == "input":
                self._handles.append(module.register_forward_pre_hook(self._input_hook(tap)))
            else:
                self._handles.append(module.register_forward_hook(self._output_hook(tap)))

    def _output_hook(self, tap: Tap):
        def hook(module: nn.Module, inputs: tuple, output) -> None:
            tensor = output[0] if isinstance(output, tuple | list) else output
            self._record(tap, tensor)

        return hook

    def _input_hook(self, tap: Tap):
        def hook(module: nn.Module, inputs: tuple) -> None:
            self._record(tap, inputs[0])

        return hook

    def _record(self, tap: Tap, tensor: torch.Tensor) -> None:
        if tap.tokens is not None:
            self._records[tap].append(reduce_tokens(tensor, tap.tokens, self._prefix))
            return
        if tensor.dim() == 4 and self._channel_dims.get(tap) is None:
            self._channel_dims[tap] = guess_channel_dim(tensor.shape)
        self._records[tap].append(reduce_activation(tensor, self._channel_dims.get(tap) or 1))

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
