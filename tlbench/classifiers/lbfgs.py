"""L-BFGS on a (K, D+1) weight matrix, in float32 and finished in float64 when float32 cannot reach
the tolerance.

Why: the stopping rules (liblinear's relative gradient norm, scikit-learn's max |gradient|) ask
for a gradient about 1e-5 of its size at zero, and float32 is too coarse for that on large problems:
at 20,000 x 64 with 100 classes the strong-Wolfe line search stopped at 2.7-5.5x the tolerance (the
objective, rounded to float32 for the line search, no longer resolved the decreases; the float32
gradient's rounding was of the tolerance's size). So the float32 run (fast, and on consumer GPUs the
only fast precision) goes as far as it can, with the objective's value accumulated and handed to the
line search in float64; its result is checked in float64, and only if it falls short does L-BFGS
continue in float64 from there, for the iterations left. Features stay float32/int8: the objective
converts them a row chunk at a time to the weights' dtype (tlbench/classifiers/chunks.py).

"As far as it can" is L-BFGS's own stop: its line search finds no decrease. A rule that also stopped
float32 when the objective's progress slowed (under 1e-6 or 1e-7 relative per 20 evaluations) was
measured and dropped: it never helped on the problems tried, and at 1e-6 it cost up to 1.7x the time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tlbench.classifiers.convergence import convergence_record

HISTORY = 20

# w -> (value as a float64 scalar, gradient in w's dtype), computed in w's dtype
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Minimum:
    weights: torch.Tensor  # float64
    value: float
    grad: torch.Tensor  # float64, at `weights`
    converged: bool  # `done(grad)` in float64
    iterations: int  # L-BFGS iterations in all
    float64_iterations: int  # of which in float64 (0 when float32 sufficed)
    evaluations: int  # objective evaluations in all

    def record(self, gradient_key: str, gradient: float, target: float, device: torch.device) -> dict[str, Any]:
        """A torch fit's `info`: the objective, the stopping rule's gradient (`gradient_key`: its name in
        results.json) against its target, and the solver's counts."""
        return {
            "objective": self.value,
            gradient_key: gradient,
            "target": target,
            "converged": self.converged,
            "iterations": self.iterations,
            "float64_iterations": self.float64_iterations,
            "evaluations": self.evaluations,
            "device": str(device),
        }


def convergence(info: dict[str, Any], gradient_key: str, max_iter: int) -> dict[str, Any]:
    """The stopping rule's quantities of a fit's `info`, as every classifier's fits report them."""
    return convergence_record(info["converged"], info["iterations"], max_iter, info[gradient_key], info["target"])


def _run(objective: Objective, w: torch.Tensor, done: Callable[[torch.Tensor], bool], max_iter: int) -> list:
    """L-BFGS on w in place, in w's dtype, until `done`, max_iter or L-BFGS's own stop; returns
    [iterations, evaluations, (w, value, grad) of the last evaluation]."""
    optimizer = torch.optim.LBFGS(
        [w.requires_grad_()],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=0,  # the stop is `done` (a zero gradient makes L-BFGS stop)
        tolerance_change=0,
        history_size=HISTORY,
        line_search_fn="strong_wolfe",
    )
    last: list = [None]
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        value, grad = objective(w.detach())
        evaluations += 1
        last[0] = (w.detach().clone(), value, grad)
        w.grad = torch.zeros_like(grad) if done(grad) else grad
        return value  # float64: L-BFGS reads it as a Python float

    optimizer.step(closure)
    w.requires_grad_(False)
    return [optimizer.state[w].get("n_iter", 0), evaluations, last[0]]


def minimize(objective: Objective, w0: torch.Tensor, done: Callable[[torch.Tensor], bool], max_iter: int) -> Minimum:
    """Minimise from w0: float32 L-BFGS, a float64 evaluation of its result, and float64 L-BFGS from
    there (at most max_iter iterations in all) if the float64 gradient is not `done`."""
    w = w0.detach().to(torch.float32).clone()
    iterations, evaluations, _ = _run(objective, w, done, max_iter)
    w = w.double()
    value, grad = objective(w)
    evaluations += 1
    float64_iterations = 0
    if not done(grad) and iterations < max_iter:
        float64_iterations, more, last = _run(objective, w, done, max_iter - iterations)
        iterations, evaluations = iterations + float64_iterations, evaluations + more
        if torch.equal(last[0], w):  # the last evaluation was at the final weights
            value, grad = last[1], last[2]
        else:
            value, grad = objective(w)
            evaluations += 1
    return Minimum(w, float(value), grad, done(grad), iterations, float64_iterations, evaluations)
