"""Stochastic estimates of the Hessian trace from Hessian-vector products.

:func:`hutchinson_trace` averages z^T H z over Rademacher vectors z.
:func:`hutchpp_trace` (Hutch++) spends a third of its budget on a sketch of
the dominant range of H and takes the trace there exactly. It runs Hutchinson
only on the rest, so on a spectrum that decays fast it needs far fewer
products for the same error.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from worker.analysis.linalg import (
    CountingOperator,
    GeneratorOrSeed,
    HessianVectorProduct,
    make_generator,
    random_vectors,
)


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate, its standard error and its cost.

    ``standard_error`` is the sample standard deviation of the averaged
    Rademacher terms divided by the square root of their number, and None
    when fewer than two terms were averaged. For Hutch++ it covers only the
    Hutchinson part, which is the whole randomness once the sketch is fixed.
    """

    estimate: float
    standard_error: float | None
    hvp_count: int


def hutchinson_trace(
    hvp: HessianVectorProduct,
    dim: int,
    num_queries: int,
    *,
    generator: GeneratorOrSeed,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> TraceEstimate:
    """Estimate tr(H) by Hutchinson's estimator with Rademacher vectors.

    Algorithm: tr(H) ≈ (1/n) Σ_i z_i^T H z_i, with n = ``num_queries``
    independent vectors z_i (P,) of ±1 entries drawn with ``generator``. The
    estimate is unbiased, with variance 2 (||H||_F^2 - Σ_j H_jj^2) / n.

    Shapes: ``hvp`` maps (P,) to (P,) with P = ``dim``. Cost: exactly
    ``num_queries`` Hessian-vector products. Raises ValueError when
    ``num_queries`` is below 1.
    """
    if num_queries < 1:
        raise ValueError(f"num_queries must be at least 1, got {num_queries}")
    operator = CountingOperator(hvp, dim)
    rng = make_generator(generator)
    probes = random_vectors(
        num_queries,
        dim,
        distribution="rademacher",
        generator=rng,
        dtype=dtype,
        device=device,
    )
    samples = _quadratic_forms(operator, probes)
    return TraceEstimate(
        estimate=float(samples.mean()),
        standard_error=_standard_error(samples),
        hvp_count=operator.count,
    )


def hutchpp_trace(
    hvp: HessianVectorProduct,
    dim: int,
    num_queries: int,
    *,
    generator: GeneratorOrSeed,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> TraceEstimate:
    """Estimate tr(H) by Hutch++ with Rademacher sketch and probe vectors.

    Algorithm 1 of Meyer, Musco, Musco and Woodruff, "Hutch++: Optimal
    Stochastic Trace Estimation" (SOSA 2021). With s = ``num_queries`` // 3
    sketch vectors S (P, s) and g = ``num_queries`` - 2 s probe vectors G
    (P, g), both Rademacher:

        Q = qr(H S),   tr(H) ≈ tr(Q^T H Q) + (1/g) tr(G^T (I - QQ^T) H (I - QQ^T) G)

    The first term is exact on the range of Q, so the Hutchinson part only
    estimates the trace of the remainder of H, whose Frobenius norm is small when few
    eigenvalues dominate. The estimate is unbiased for any Q, because
    tr(H) = tr(Q^T H Q) + tr((I - QQ^T) H (I - QQ^T)).

    Shapes: ``hvp`` maps (P,) to (P,) with P = ``dim``. Cost: s products for
    H S, min(s, P) for H Q and g for the remainder, so exactly
    ``num_queries`` when s <= P. Raises ValueError when ``num_queries`` is
    below 3.
    """
    if num_queries < 3:
        raise ValueError(
            f"num_queries must be at least 3 for Hutch++ (a sketch, its "
            f"projection and one probe), got {num_queries}"
        )
    operator = CountingOperator(hvp, dim)
    rng = make_generator(generator)
    sketch_size = num_queries // 3
    probe_count = num_queries - 2 * sketch_size

    # S (P, s) and G (P, g), stored as rows.
    sketch = random_vectors(
        sketch_size,
        dim,
        distribution="rademacher",
        generator=rng,
        dtype=dtype,
        device=device,
    )
    probes = random_vectors(
        probe_count,
        dim,
        distribution="rademacher",
        generator=rng,
        dtype=dtype,
        device=device,
    )

    # Q (P, r) with r = min(s, P): an orthonormal basis of the sketched range.
    q, _ = torch.linalg.qr(_apply(operator, sketch).T)
    exact_part = float(_quadratic_forms(operator, q.T).sum())

    remainder = probes - (probes @ q) @ q.T
    samples = _quadratic_forms(operator, remainder)
    return TraceEstimate(
        estimate=exact_part + float(samples.mean()),
        standard_error=_standard_error(samples),
        hvp_count=operator.count,
    )


def _apply(operator: CountingOperator, vectors: Tensor) -> Tensor:
    """Return H v for each row v of ``vectors`` (n, P), shape (n, P)."""
    return torch.stack([operator(v) for v in vectors])


def _quadratic_forms(operator: CountingOperator, vectors: Tensor) -> Tensor:
    """Return v^T H v for each row v of ``vectors`` (n, P), shape (n,)."""
    return (vectors * _apply(operator, vectors)).sum(dim=1)


def _standard_error(samples: Tensor) -> float | None:
    if samples.numel() < 2:
        return None
    return float(samples.std(correction=1)) / math.sqrt(samples.numel())
