"""Warnings for fits that stopped short of their tolerance: a non-converged model is not the optimum
the configuration names, so the log says so, with what the stopping rule saw.

Every fit reports a `convergence` dict: converged, iterations, max_iter, gradient (the quantity its
stopping rule bounds) and tolerance (the bound); gradient and tolerance may be None where the solver
does not expose them."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)
LISTED = 5  # unconverged grid fits named in the C=auto warning (all are recorded in C_selection)


def convergence_record(
    converged: bool, iterations: int, max_iter: int, gradient: float | None = None, tolerance: float | None = None
) -> dict[str, Any]:
    """The `convergence` dict every fit reports (see the module docstring)."""
    return {
        "converged": converged,
        "iterations": iterations,
        "max_iter": max_iter,
        "gradient": gradient,
        "tolerance": tolerance,
    }


def shortfall(record: dict[str, Any]) -> str:
    """'1000 iterations (max_iter 1000), gradient 3.2 > tolerance 1.4'."""
    text = f"{record['iterations']} iterations (max_iter {record['max_iter']})"
    if record.get("gradient") is not None:
        text += f", gradient {record['gradient']:.3g} > tolerance {record['tolerance']:.3g}"
    return text


def warn_fit(name: str, C: float, record: dict[str, Any]) -> None:
    """One warning for a final model that did not converge."""
    if record["converged"]:
        return
    stalled = record["iterations"] < record["max_iter"]
    log.warning(
        "%s did not converge at C=%g: %s; %s",
        name,
        C,
        shortfall(record),
        "the line search made no more progress" if stalled else "raise classifier.max_iter",
    )


def warn_grid(name: str, unconverged: list[dict[str, Any]], fits: int) -> None:
    """One warning line for the C=auto fits (fold x C) that did not converge."""
    if not unconverged:
        return
    listed = "; ".join(f"fold {r['fold']} C={r['C']:g}: {shortfall(r)}" for r in unconverged[:LISTED])
    more = f"; and {len(unconverged) - LISTED} more" if len(unconverged) > LISTED else ""
    log.warning(
        "%s C=auto: %d of %d grid fits did not converge, their held-out scores are of inexact models (%s%s)",
        name,
        len(unconverged),
        fits,
        listed,
        more,
    )
