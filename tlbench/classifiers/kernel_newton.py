"""Many squared-hinge SVMs at once in kernel space: the C=auto grid (folds x C values x classes) as
columns of one batch that share a single Gram matrix.

Every problem p is LinearSVC's primal (intercept = constant feature `s`, regularised like the
weights) on a subset T_p of the rows, with labels y_p in {-1, +1} and its own C_p:

    f_p(w) = 0.5 ||w||^2 + C_p * sum_{i in T_p} max(0, 1 - y_pi w . [x_i, s])^2

Its optimum lies in the span of its rows, w = sum_i beta_i [x_i, s], so with the Gram matrix
G = X X^T + s^2 (computed once; a fold's Gram matrix is a submatrix of it) the whole grid needs only
G @ B products with one column per problem. The solver is Newton's method in that space
(Chapelle 2007, "Training a support vector machine in the primal"): on the active set A (rows
with margin < 1) the Newton iterate solves (G_AA + I / (2 C)) beta_A = y_A, solved by conjugate
gradients warm-started at the current beta (inexact: a 1000x residual reduction), then an
exact line search along the piecewise-quadratic objective. Held-out rows cost nothing extra: their
scores are rows of G @ beta.

The stopping rule is the single-fit solver's (liblinear's, over a group of columns: one fold at one
C, all its classes): ||grad f(w)|| <= tol * ||(min(pos_p, neg_p) / l_p) grad f_p(0)||, primal
gradient norms measured through G. The grid is solved one C at a time, ascending, each warm-started
from the previous solution: from zero, Newton needs many steps at large C (the active set changes a
little at each), from the neighbouring C's optimum only a few.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

CG_REDUCTION = 1e-3  # inexact Newton: CG stops once the residual has shrunk 1000x (fewest products overall)
PARALLEL_PRODUCT = 2e8  # n * n * columns from which a G @ B product runs on all CPU threads
LINE_SEARCH_STEPS = 20  # semismooth Newton on the piecewise-linear derivative; finite, usually < 5


@dataclass
class KernelNewtonResult:
    beta: torch.Tensor  # (n, P): w_p = sum_i beta_ip [x_i, s]
    scores: torch.Tensor  # (n, P): G @ beta, every row's score under every problem
    grad_ratio: torch.Tensor  # (groups,): ||grad|| / ||grad at 0||
    grad_norm0: torch.Tensor  # (groups,): ||grad at 0|| (scaled as in the stopping rule)
    converged: torch.Tensor  # (groups,) bool
    newton_steps: int
    matvecs: int


@contextmanager
def _threads_for_products_only(device: torch.device) -> Iterator[int]:
    """On a CPU, the many small elementwise steps run on one thread and only the G @ B products use
    all of them: measured on 2 cores, an OpenMP fork per (3000 x 100) elementwise op made a solve
    10x slower than one thread (20x when another process competes for the cores)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield threads
        return
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def _group_norm(sq: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """sqrt of per-group sums of per-column squared norms."""
    return torch.zeros(groups, dtype=sq.dtype, device=sq.device).index_add_(0, group, sq).clamp(min=0).sqrt()


def solve_squared_hinge_kernel(
    gram: torch.Tensor,
    signs: torch.Tensor,
    rows: torch.Tensor,
    C: torch.Tensor,
    group: torch.Tensor,
    tol: float = 1e-4,
    max_iter: int = 100,
    max_cg: int = 500,
    init: torch.Tensor | None = None,
) -> KernelNewtonResult:
    """gram (n, n); signs (n, P) in {-1, +1}; rows (n, P) bool, the problem's training rows T_p;
    C (P,); group (P,) int64 in [0, groups): columns whose stopping rule is shared; init (n, P)."""
    with _threads_for_products_only(gram.device) as threads:
        return _solve(gram, signs, rows, C, group, tol, max_iter, max_cg, init, threads)


def _solve(
    gram: torch.Tensor,
    signs: torch.Tensor,
    rows: torch.Tensor,
    C: torch.Tensor,
    group: torch.Tensor,
    tol: float,
    max_iter: int,
    max_cg: int,
    init: torch.Tensor | None,
    threads: int,
) -> KernelNewtonResult:
    n, p = signs.shape
    groups = int(group.max()) + 1
    dtype = gram.dtype
    mask = rows.to(dtype)
    y = signs.to(dtype) * mask
    half_inv_c = (0.5 / C).to(dtype)  # the ridge 1 / (2C) of the active-set system
    two_c = (2 * C).to(dtype)
    matvecs = 0

    # all threads only for products big enough to gain from them (small ones: one thread, measured faster)
    parallel = gram.device.type == "cpu" and n * n * p >= PARALLEL_PRODUCT

    def gmul(v: torch.Tensor) -> torch.Tensor:
        nonlocal matvecs
        matvecs += 1
        if parallel:
            torch.set_num_threads(threads)
        out = gram @ v
        if parallel:
            torch.set_num_threads(1)
        return out

    # ||grad f(0)||, scaled per problem by liblinear's min(pos, neg) / l; its coefficients are -2C y on T
    count = mask.sum(0).clamp(min=1)
    positives = ((signs > 0) & rows).sum(0).to(dtype)
    g0 = two_c * y * (torch.minimum(positives, count - positives) / count)
    norm0 = _group_norm((g0 * gmul(g0)).sum(0), group, groups).clamp(min=1e-30)

    beta = torch.zeros(n, p, dtype=dtype, device=gram.device) if init is None else init.to(dtype) * mask
    scores = gmul(beta) if init is not None else torch.zeros_like(beta)
    live = torch.ones(groups, dtype=torch.bool, device=gram.device)
    ratio = torch.ones(groups, dtype=dtype, device=gram.device)
    steps = 0
    for steps in range(max_iter + 1):
        slack = (1 - signs * scores).clamp(min=0) * mask  # > 0 on the active set
        active = (slack > 0).to(dtype)
        grad = beta - two_c * signs * slack  # primal gradient = X~^T grad (coefficients)
        ratio = _group_norm((grad * gmul(grad)).sum(0), group, groups) / norm0
        live = ratio > tol
        if not bool(live.any()) or steps == max_iter:
            break
        cols = live[group].to(dtype)  # frozen columns: zero step

        # CG on (G_AA + I/(2C)) z = y_A from z = beta_A (beta is 0 off A in the Newton iterate)
        z = beta * active
        r = (y * active - (gmul(z) * active + half_inv_c * z)) * cols
        d = r.clone()
        rr = (r * r).sum(0)
        stop = (CG_REDUCTION**2) * rr
        for _ in range(max_cg):
            run = (rr > stop).to(dtype)
            if not bool(run.any()):
                break
            q = gmul(d) * active + half_inv_c * d
            alpha = torch.where(run > 0, rr / (d * q).sum(0).clamp(min=1e-30), torch.zeros_like(rr))
            z = z + alpha * d
            r = r - alpha * q
            rr_new = (r * r).sum(0)
            d = r + (rr_new / rr.clamp(min=1e-30)) * d * run
            rr = torch.where(run > 0, rr_new, rr)

        # exact line search along direction = z - beta (0 for frozen columns)
        direction = (z - beta) * cols
        gd = gmul(direction)
        quad_b = (beta * gd).sum(0)  # beta^T G d
        quad_d = (direction * gd).sum(0)  # d^T G d
        yg = signs * gd * mask
        t = torch.ones(p, dtype=dtype, device=gram.device)
        lo, hi = torch.zeros_like(t), torch.full_like(t, float("inf"))  # slope < 0 at lo, > 0 at hi
        for _ in range(LINE_SEARCH_STEPS):
            viol = (1 - signs * (scores + t * gd)).clamp(min=0) * mask
            slope = quad_b + t * quad_d - two_c * (yg * viol).sum(0)
            curvature = quad_d + two_c * (yg * yg * (viol > 0)).sum(0)
            lo = torch.where(slope < 0, t, lo)
            hi = torch.where(slope > 0, t, hi)
            t_new = t - slope / curvature.clamp(min=1e-30)
            # safeguard: the derivative is piecewise linear, Newton may leave the bracket
            outside = (t_new <= lo) | (t_new >= hi)
            fallback = torch.where(hi.isinf(), 2 * t, (lo + hi) / 2)
            t_new = torch.where(outside & (slope != 0), fallback, t_new)
            done = bool(((t_new - t).abs() <= 1e-6 * t.clamp(min=1)).all())
            t = t_new
            if done:
                break
        t = t * cols
        beta = beta + t * direction
        scores = scores + t * gd
    return KernelNewtonResult(beta, scores, ratio, norm0, ~live, steps, matvecs)


def gram_matrix(x: torch.Tensor, scaling: float, device: torch.device, chunk_rows: int = 4096) -> torch.Tensor:
    """X X^T + s^2 in float32, converting int8 rows to float chunk by chunk (no whole float copy of X)."""
    n = x.shape[0]
    gram = torch.empty(n, n, device=device)
    blocks = [(s, min(s + chunk_rows, n)) for s in range(0, n, chunk_rows)]
    for i, (a0, a1) in enumerate(blocks):
        left = x[a0:a1].to(device, torch.float32)
        for b0, b1 in blocks[i:]:
            right = left if b0 == a0 else x[b0:b1].to(device, torch.float32)
            block = left @ right.T
            gram[a0:a1, b0:b1] = block
            gram[b0:b1, a0:a1] = block.T
    return gram.add_(scaling**2)  # in place: no second n x n matrix
