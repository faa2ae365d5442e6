"""Search for a critical point by minimizing the squared gradient norm.

Gradient descent on the loss stops near minima; minimizing
q(theta) = 0.5 * |grad L(theta)|^2 instead converges to any point where the
gradient vanishes, saddle points included, because grad q = H grad L is zero
there. Minimum-ratio studies collect critical points this way and then
classify them with the Hessian.

Two methods: ``newton_mr`` takes Gauss-Newton steps on q. The Jacobian of
grad L is H, so the step d minimizes |H d + grad L|, which MINRES solves from
Hessian-vector products for symmetric indefinite or singular H (Newton-MR,
Roosta, Liu, Xu and Mahoney, 2022). A backtracking line search on q keeps
every step a decrease. ``adam`` descends q with Adam: one gradient and one
product per step, but slow, since the curvature of q is H squared.
"""

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg
import torch
from torch import Tensor

from saddlepoint.spec.analysis import CriticalSearchSpec
from worker.analysis.objective import LossObjective

logger = logging.getLogger(__name__)

LINE_SEARCH_HALVINGS = 20


@dataclass(frozen=True)
class CriticalSearchResult:
    """End point of the search (P,) and how it got there."""

    theta: Tensor
    steps: int
    gradient_norm: float
    initial_gradient_norm: float
    loss: float
    converged: bool
    hvp_count: int
    elapsed_s: float


def find_critical_point(
    objective: LossObjective, spec: CriticalSearchSpec
) -> CriticalSearchResult:
    """Minimize 0.5 * |grad L|^2 from the objective's ``theta``.

    Stops when the gradient norm is at most ``spec.gradient_tolerance`` or
    after ``spec.max_steps`` steps; ``converged`` records which. Cost per step:
    newton_mr up to ``max_inner_iterations`` Hessian-vector products plus one
    gradient per line-search trial; adam one gradient and one product.
    Deterministic: no randomness.
    """
    started = time.perf_counter()
    initial_norm = float(objective.gradient().norm())
    if spec.method == "newton_mr":
        theta, steps, products = _newton_mr(objective, spec)
    else:
        theta, steps, products = _adam(objective, spec)

    end = objective.at(theta)
    norm = float(end.gradient().norm())
    result = CriticalSearchResult(
        theta=theta,
        steps=steps,
        gradient_norm=norm,
        initial_gradient_norm=initial_norm,
        loss=end.loss(),
        converged=norm <= spec.gradient_tolerance,
        hvp_count=products,
        elapsed_s=time.perf_counter() - started,
    )
    logger.info(
        "critical-point search (%s): gradient norm %.3g -> %.3g in %d steps, "
        "%d products (%s)",
        spec.method,
        initial_norm,
        norm,
        steps,
        products,
        "converged" if result.converged else "not converged",
    )
    return result


def _newton_mr(
    objective: LossObjective, spec: CriticalSearchSpec
) -> tuple[Tensor, int, int]:
    theta = objective.theta
    point = objective
    norm = float(point.gradient().norm())
    products = 0
    steps = 0
    while norm > spec.gradient_tolerance and steps < spec.max_steps:
        g = point.gradient()
        direction = _minres_direction(point, g, spec.max_inner_iterations)
        theta, norm, moved = _line_search(objective, theta, direction, norm)
        if not moved:
            # Near-singular H can make the minimum-residual step useless; the
            # steepest descent direction of q, -H g, always descends unless
            # H g = 0, where q is stationary.
            descent = -point.hvp(g)
            theta, norm, moved = _line_search(objective, theta, descent, norm)
        products += point.hvp_count
        steps += 1
        if not moved:
            break
        point = objective.at(theta)
    return theta, steps, products


def _minres_direction(point: LossObjective, g: Tensor, max_iterations: int) -> Tensor:
    """Return d minimizing |H d + g| by MINRES on Hessian-vector products."""
    dtype = g.dtype

    def apply(v: np.ndarray) -> np.ndarray:
        vector = torch.from_numpy(np.ascontiguousarray(v).reshape(-1)).to(
            g.device, dtype
        )
        return point.hvp(vector).cpu().numpy()

    operator = scipy.sparse.linalg.LinearOperator(
        (point.dim, point.dim), matvec=apply, dtype=np.float64
    )
    solution, _ = scipy.sparse.linalg.minres(
        operator, -g.cpu().numpy(), maxiter=max_iterations
    )
    return torch.from_numpy(solution).to(g.device, dtype)


def _line_search(
    objective: LossObjective, theta: Tensor, direction: Tensor, norm: float
) -> tuple[Tensor, float, bool]:
    """Halve the step until the gradient norm drops; return the new point."""
    step = 1.0
    for _ in range(LINE_SEARCH_HALVINGS):
        candidate = theta + step * direction
        candidate_norm = float(objective.at(candidate).gradient().norm())
        if candidate_norm < norm:
            return candidate, candidate_norm, True
        step /= 2
    return theta, norm, False


def _adam(
    objective: LossObjective, spec: CriticalSearchSpec
) -> tuple[Tensor, int, int]:
    theta = objective.theta.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=spec.learning_rate)
    steps = 0
    while steps < spec.max_steps:
        optimizer.zero_grad()
        gradient = _gradient_with_graph(objective, theta)
        half_squared_norm = 0.5 * gradient.square().sum()
        if float(half_squared_norm.detach().mul(2).sqrt()) <= spec.gradient_tolerance:
            break
        half_squared_norm.backward()
        optimizer.step()
        steps += 1
    return theta.detach(), steps, steps


def _gradient_with_graph(objective: LossObjective, theta: Tensor) -> Tensor:
    """Return grad L (P,) at ``theta`` with its graph, weighted over chunks."""
    total: Tensor | None = None
    for inputs, targets in objective.chunks:
        value = objective.chunk_loss(theta, inputs, targets)
        (part,) = torch.autograd.grad(value, theta, create_graph=True)
        weighted = part * (inputs.shape[0] / objective.samples)
        total = weighted if total is None else total + weighted
    assert total is not None
    return total
