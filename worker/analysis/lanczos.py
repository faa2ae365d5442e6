"""Extreme eigenpairs of a symmetric operator from Hessian-vector products.

:func:`lanczos_extremes` finds the algebraically largest or smallest
eigenvalues, so it finds negative curvature that power iteration misses
whenever the largest magnitude belongs to a positive eigenvalue.
:func:`power_iteration` is the baseline that PyHessian uses for its top
eigenvalue. Both return an :class:`EigenpairResult` that states whether every
requested pair met the residual tolerance.

Notation inside the numeric kernels: ``q`` is the current Lanczos vector,
``w`` the next one before normalization, ``alpha`` and ``beta`` the diagonal
and off-diagonal entries of the tridiagonal matrix T = Qᵀ H Q, ``theta`` a
Ritz value and ``s`` an eigenvector of T.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from worker.analysis.linalg import (
    CountingOperator,
    GeneratorOrSeed,
    HessianVectorProduct,
    inner,
    make_generator,
    normalize,
    orthogonalize,
    random_vectors,
)

Which = Literal["largest", "smallest", "both"]


@dataclass(frozen=True, eq=False)
class EigenpairResult:
    """Approximate eigenpairs of H and the evidence for their accuracy.

    ``eigenvalues`` (k,) is ascending and column i of ``eigenvectors`` (P, k)
    is the unit vector paired with ``eigenvalues[i]``. ``ritz_residuals``
    (k,) contains ||H v - theta v|| for each pair, and ``relative_residuals``
    (k,) the same divided by ``spectral_scale``, the largest |theta| seen,
    which is a lower bound on the spectral norm of H. ``converged`` is True
    only when every relative residual is at most the requested tolerance,
    and ``message`` then is None. Otherwise ``message`` states how many pairs
    missed the tolerance, the largest relative residual and what to change.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    ritz_residuals: Tensor
    relative_residuals: Tensor
    spectral_scale: float
    iterations: int
    hvp_count: int
    converged: bool
    message: str | None


class LanczosProcess:
    """Lanczos tridiagonalization of H with full reorthogonalization.

    Starting from the unit vector ``start`` (P,), each :meth:`step` costs one
    Hessian-vector product and appends one row to the orthonormal basis Q
    (m, P) and one entry to the tridiagonal T (m, m), with H Q^T = Q^T T +
    beta q_next e_m^T. The new vector is orthogonalized against all previous
    ones twice, so Q stays orthonormal to rounding level and T has no
    spurious copies of converged eigenvalues. Memory: ``max_steps`` vectors
    of length P.

    When beta is at most sqrt(machine epsilon) times the largest |alpha| or
    beta so far, the Krylov space counts as invariant under H (breakdown).
    Rounding keeps beta well above machine epsilon after a true breakdown,
    hence the square root: about 1e-10 relative in float64 was measured for
    eigenvalues from -1 to 100. The dropped beta is kept and enters
    :meth:`residual_estimates`. With ``restart_on_breakdown`` the process
    continues from a random vector orthogonal to Q, which leaves a zero
    off-diagonal entry in T, so that eigenvalues outside the first Krylov
    space, including further copies of a repeated eigenvalue, can still be
    found. Without it, or once Q spans all P dimensions, the process is
    ``exhausted``.
    """

    def __init__(
        self,
        operator: CountingOperator,
        start: Tensor,
        max_steps: int,
        *,
        restart_on_breakdown: bool,
        generator: torch.Generator,
    ) -> None:
        q, norm = normalize(start)
        if norm == 0.0:
            raise ValueError("the Lanczos start vector is zero")
        self.operator = operator
        self.generator = generator
        self.restart_on_breakdown = restart_on_breakdown
        self.basis = start.new_zeros((max_steps, start.numel()))
        self.basis[0] = q
        self.alphas: list[float] = []
        self.couplings: list[float] = []
        self.beta = 0.0
        # (index of the last vector of a finished block, its dropped beta)
        self.dropped: list[tuple[int, float]] = []
        self.scale = 0.0
        self.exhausted = False
        # Index in Q of the first vector of each Krylov block: 0, then one
        # more per breakdown restart.
        self.block_starts = [0]

    @property
    def size(self) -> int:
        """Number of completed steps m, the order of T."""
        return len(self.alphas)

    def step(self) -> None:
        """Apply H to the newest basis vector and extend T and Q by one."""
        m = self.size
        q = self.basis[m]
        w = self.operator(q)
        alpha = inner(q, w)
        w = w - alpha * q
        if m > 0 and self.couplings[-1] != 0.0:
            w = w - self.couplings[-1] * self.basis[m - 1]
        w = orthogonalize(w, self.basis[: m + 1])
        w, beta = normalize(w)

        self.alphas.append(alpha)
        self.beta = beta
        self.scale = max(self.scale, abs(alpha), beta)
        if m + 1 == self.operator.dim:
            self.exhausted = True
            return
        if beta <= torch.finfo(q.dtype).eps ** 0.5 * self.scale:
            if not self.restart_on_breakdown:
                self.exhausted = True
                return
            self.dropped.append((m, beta))
            w = self._restart_vector()
            beta = 0.0
            if self.exhausted:
                return
            self.block_starts.append(m + 1)
        if m + 1 < self.basis.shape[0]:
            self.couplings.append(beta)
            self.basis[m + 1] = w

    def _restart_vector(self) -> Tensor:
        """Return a random unit vector orthogonal to the basis Q.

        Sets ``exhausted`` instead when rounding leaves no direction outside Q.
        """
        m = self.size
        start = self.basis[0]
        (draw,) = random_vectors(
            1,
            start.numel(),
            distribution="gaussian",
            generator=self.generator,
            dtype=start.dtype,
            device=start.device,
        )
        w, norm = normalize(orthogonalize(draw, self.basis[:m]))
        if norm <= torch.finfo(start.dtype).eps ** 0.5 * float(draw.norm()):
            self.exhausted = True
        return w

    def residual_estimates(self, s: np.ndarray) -> np.ndarray:
        """Bound ||H y - theta y|| for the Ritz vectors y = Q^T s, s (m, j) -> (j,).

        The bound is sqrt(Σ_b (beta_b s[end_b])^2) + beta_m |s[m - 1]|, where
        each dropped beta_b sits at the end of a finished block. It costs no
        Hessian-vector product.
        """
        dropped = np.zeros(s.shape[1])
        for end, beta in self.dropped:
            dropped += (beta * s[end]) ** 2
        return np.sqrt(dropped) + self.beta * np.abs(s[-1])

    def tridiagonal(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the diagonal (m,) and off-diagonal (m - 1,) of T in float64."""
        m = self.size
        diagonal = np.array(self.alphas, dtype=np.float64)
        off_diagonal = np.array(self.couplings[: m - 1], dtype=np.float64)
        return diagonal, off_diagonal

    def ritz_decomposition(
        self, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the Ritz values theta ascending and the eigenvectors S of T.

        ``start`` and ``stop`` select the diagonal block T[start:stop,
        start:stop], all of T by default. The cost is one symmetric
        tridiagonal eigensolve by LAPACK through
        :func:`scipy.linalg.eigh_tridiagonal` and no Hessian-vector product.
        """
        diagonal, off_diagonal = self.tridiagonal()
        stop = self.size if stop is None else stop
        theta, s = scipy.linalg.eigh_tridiagonal(
            diagonal[start:stop], off_diagonal[start : stop - 1]
        )
        return theta, s


def lanczos_extremes(
    hvp: HessianVectorProduct,
    dim: int,
    k: int,
    which: Which = "both",
    *,
    generator: GeneratorOrSeed,
    tol: float = 1e-6,
    max_iter: int = 100,
    verify: bool = True,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> EigenpairResult:
    """Find the k largest, k smallest or both extreme eigenpairs of H by Lanczos.

    Algorithm: the Lanczos process (:class:`LanczosProcess`) with full
    reorthogonalization from one Gaussian start vector drawn with
    ``generator``, restarting from a random orthogonal vector on breakdown.
    ``"smallest"`` means algebraically smallest, so it finds the most
    negative eigenvalues. ``"both"`` returns the k smallest and the k largest
    (2k pairs).

    Stopping rule: after each step with at least as many Ritz values as
    requested pairs, the residual of each requested Ritz pair is estimated as
    beta_m |s_m|, with s_m the last entry of its eigenvector of T, plus the
    betas dropped at breakdowns (:meth:`LanczosProcess.residual_estimates`),
    at no Hessian-vector product. The process stops when every estimate is
    at most ``tol`` times the largest |theta|, when it has taken
    ``min(max_iter, dim)`` steps, or when its basis spans all ``dim``
    dimensions, in which case the Ritz values are the exact eigenvalues.
    With ``verify`` the returned residuals are then recomputed as
    ||H v - theta v|| with one Hessian-vector product per pair, and
    ``converged`` is decided on those.

    Shapes: ``hvp`` maps (P,) to (P,) with P = ``dim``. The result has k or
    2k pairs, ascending. Cost: at most ``min(max_iter, dim)`` Hessian-vector
    products for the process plus k or 2k for ``verify``, ``hvp_count``
    reports the exact number. Memory: ``min(max_iter, dim)`` vectors of
    length P.

    After a breakdown restart the process also waits until the extreme Ritz
    values of the new block converge. After a breakdown that ends a block it
    continues whenever that block reached beyond the k-th requested value,
    because the next block may then contain another copy of a repeated
    eigenvalue. So when the basis spans all ``dim`` dimensions, or breaks
    down, every copy is found.

    NOTE: within one Krylov block, exact arithmetic finds one copy of a
    repeated eigenvalue. Further copies appear only after a breakdown, or
    late from rounding errors, so on a large operator whose extreme
    eigenvalue is repeated exactly, a result can pass the residual test with
    a copy missing from the requested k.

    Raises ValueError for k < 1, more requested pairs than ``dim``, a
    ``max_iter`` too small to produce them, or a ``tol`` that is not positive.
    """
    requested_count = 2 * k if which == "both" else k
    _check_arguments(dim, k, which, requested_count, max_iter, tol)
    steps = min(max_iter, dim)
    operator = CountingOperator(hvp, dim)
    process = _start_process(operator, steps, generator, dtype, device)

    while process.size < steps and not process.exhausted:
        process.step()
        if process.size >= requested_count and _requested_pairs_converged(
            process, k, which, tol
        ):
            break

    m = process.size
    if m < requested_count:
        raise RuntimeError(
            f"the Krylov space stopped growing after {m} steps, fewer than "
            f"the {requested_count} requested eigenpairs; check that hvp is "
            "symmetric"
        )
    theta, s = process.ritz_decomposition()
    chosen = _select(theta, k, which)
    ritz_vectors = process.basis[:m].T @ torch.from_numpy(s[:, chosen]).to(
        process.basis
    )
    eigenvalues = torch.from_numpy(theta[chosen]).to(process.basis)
    if verify:
        residuals = _explicit_residuals(operator, eigenvalues, ritz_vectors)
    else:
        residuals = torch.from_numpy(process.residual_estimates(s[:, chosen]))
    return _finish(
        eigenvalues,
        ritz_vectors,
        residuals.to(process.basis),
        scale=_spectral_scale(theta),
        tol=tol,
        iterations=m,
        hvp_count=operator.count,
        limit_note=f"after {m} Lanczos steps (max_iter={max_iter}, dim={dim})",
    )


def power_iteration(
    hvp: HessianVectorProduct,
    dim: int,
    *,
    generator: GeneratorOrSeed,
    tol: float = 1e-6,
    max_iter: int = 100,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> EigenpairResult:
    """Find the eigenvalue of H with the largest magnitude by power iteration.

    Algorithm: v_0 is a Gaussian vector drawn with ``generator``, then
    v_{i+1} = H v_i / ||H v_i||, with the Rayleigh quotient theta = v_i . H v_i
    as the eigenvalue. This is the baseline that PyHessian uses, which
    converges at rate |lambda_2 / lambda_1| per step and returns a negative
    eigenvalue only when it has the largest magnitude.

    Stopping rule: the first i with ||H v_i - theta v_i|| <= ``tol`` * |theta|,
    or ``max_iter`` steps. This is the relative Ritz residual of
    :func:`lanczos_extremes`, stricter than PyHessian's relative change of
    theta. When the two extreme eigenvalues have equal magnitude and
    opposite sign the iteration does not converge, and the result reports
    ``converged=False`` with a message.

    Shapes: ``hvp`` maps (P,) to (P,) with P = ``dim``. The result has one
    pair. Cost: one Hessian-vector product per step, at most ``max_iter``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    operator = CountingOperator(hvp, dim)
    rng = make_generator(generator)
    (start,) = random_vectors(
        1, dim, distribution="gaussian", generator=rng, dtype=dtype, device=device
    )
    v, _ = normalize(start)
    theta = 0.0
    residual = float("inf")

    for _ in range(max_iter):
        hv = operator(v)
        theta = inner(v, hv)
        residual = float(torch.linalg.vector_norm(hv - theta * v))
        if residual <= tol * abs(theta):
            break
        next_v, norm = normalize(hv)
        if norm == 0.0:
            break
        v = next_v

    return _finish(
        torch.tensor([theta], dtype=dtype, device=device),
        v.unsqueeze(1),
        torch.tensor([residual], dtype=dtype, device=device),
        scale=abs(theta),
        tol=tol,
        iterations=operator.count,
        hvp_count=operator.count,
        limit_note=f"after {operator.count} power iteration steps",
    )


def _check_arguments(
    dim: int, k: int, which: str, requested_count: int, max_iter: int, tol: float
) -> None:
    if which not in ("largest", "smallest", "both"):
        raise ValueError(
            f"which must be 'largest', 'smallest' or 'both', got {which!r}"
        )
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if requested_count > dim:
        raise ValueError(
            f"which={which!r} with k={k} requests {requested_count} "
            f"eigenpairs, but the operator has only dim={dim}; lower k"
        )
    if max_iter < requested_count:
        raise ValueError(
            f"max_iter={max_iter} Lanczos steps yield at most {max_iter} Ritz "
            f"pairs, fewer than the {requested_count} requested; raise max_iter"
        )
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")


def _start_process(
    operator: CountingOperator,
    steps: int,
    generator: GeneratorOrSeed,
    dtype: torch.dtype,
    device: torch.device | str,
) -> LanczosProcess:
    rng = make_generator(generator)
    (start,) = random_vectors(
        1,
        operator.dim,
        distribution="gaussian",
        generator=rng,
        dtype=dtype,
        device=device,
    )
    return LanczosProcess(
        operator, start, steps, restart_on_breakdown=True, generator=rng
    )


def _select(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Return the indices of the requested Ritz values in ascending ``theta``."""
    m = theta.shape[0]
    if which == "largest":
        return np.arange(m - k, m)
    if which == "smallest":
        return np.arange(k)
    return np.concatenate([np.arange(k), np.arange(m - k, m)])


def _requested_pairs_converged(
    process: LanczosProcess, k: int, which: str, tol: float
) -> bool:
    """Apply the stopping rule of :func:`lanczos_extremes` to the current T."""
    theta, s = process.ritz_decomposition()
    threshold = tol * _spectral_scale(theta)
    chosen = _select(theta, k, which)
    if np.any(process.residual_estimates(s[:, chosen]) > threshold):
        return False
    if len(process.block_starts) == 1 or process.exhausted:
        return True

    newest = process.block_starts[-1]
    if newest == process.size:
        # The last step ended in a breakdown. Eigenvalues outside the basis
        # are no more extreme than those of the block that just finished,
        # so a further copy matters only when that block reached strictly
        # beyond the k-th requested Ritz value.
        finished, _ = process.ritz_decomposition(process.block_starts[-2], newest)
        sides = _sides(which)
        beyond_low = "smallest" in sides and finished[0] < theta[k - 1] - threshold
        beyond_high = "largest" in sides and finished[-1] > theta[-k] + threshold
        return not (beyond_low or beyond_high)

    # A block started by a restart is in progress. Its own extreme Ritz values
    # approach the extremes of the space left to explore, so they must
    # converge before the requested pairs can be trusted.
    block_theta, block_s = process.ritz_decomposition(newest)
    extremes = _select(block_theta, 1, which)
    return bool(np.all(process.beta * np.abs(block_s[-1, extremes]) <= threshold))


def _sides(which: str) -> tuple[str, ...]:
    return ("smallest", "largest") if which == "both" else (which,)


def _spectral_scale(theta: np.ndarray) -> float:
    return float(np.max(np.abs(theta)))


def _explicit_residuals(
    operator: CountingOperator, eigenvalues: Tensor, vectors: Tensor
) -> Tensor:
    """Return ||H v_i - theta_i v_i|| per column, at one product per column."""
    residuals = []
    for i in range(vectors.shape[1]):
        v = vectors[:, i]
        residual = operator(v) - eigenvalues[i] * v
        residuals.append(torch.linalg.vector_norm(residual))
    return torch.stack(residuals)


def _finish(
    eigenvalues: Tensor,
    eigenvectors: Tensor,
    residuals: Tensor,
    *,
    scale: float,
    tol: float,
    iterations: int,
    hvp_count: int,
    limit_note: str,
) -> EigenpairResult:
    """Judge the residuals against ``tol`` and assemble the result."""
    if scale > 0.0:
        relative = residuals / scale
    else:
        # Every theta is zero: a zero residual is exact, any other is not.
        relative = torch.where(residuals == 0, 0.0, torch.inf).to(residuals)
    failing = int((relative > tol).sum())
    message = None
    if failing:
        message = (
            f"{failing} of {eigenvalues.numel()} eigenpairs have a relative "
            f"residual above tol={tol:.1e} {limit_note}; the largest is "
            f"{float(relative.max()):.2e}. Raise max_iter or loosen tol."
        )
    return EigenpairResult(
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        ritz_residuals=residuals,
        relative_residuals=relative,
        spectral_scale=scale,
        iterations=iterations,
        hvp_count=hvp_count,
        converged=failing == 0,
        message=message,
    )
