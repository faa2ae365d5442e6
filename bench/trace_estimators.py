"""Hessian-vector products that Hutch++ and Hutchinson need for 1% trace error.

Run: .venv/bin/python -m bench.trace_estimators [--quick]

Ground truth is the trace of the exact Hessian of the trained 64 -> 32 -> 10
MLP (P = 2,410) on the digits training split, float64. For each budget of
products, both estimators run with at least 20 seeds, and the budget counts
as enough once the median relative error |estimate - tr(H)| / |tr(H)| is at
most 1% there and at the next budget. The goal is Hutch++ at most 0.5x
Hutchinson's products.

Products here are multiplications by the exact Hessian, which give what a
Hessian-vector product gives up to rounding, at a fraction of the cost. The
sweep over seeds and budgets uses batched replicas of
:func:`worker.analysis.trace.hutchinson_trace` and
:func:`worker.analysis.trace.hutchpp_trace`: the same probe draws from the
same seeds, with one matrix product per batch of probes instead of one
product per probe. :func:`check_replicas` compares them with the real
functions, fed by the exact Hessian and by real Hessian-vector products,
before the sweep, and the results record the differences.
"""

import argparse
import itertools
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from worker.analysis.hessian import hessian_matrix
from worker.analysis.linalg import make_double_backward_operator, random_vectors
from worker.analysis.trace import hutchinson_trace, hutchpp_trace

try:
    from bench import common
except ModuleNotFoundError:
    # Run as a file, python bench/trace_estimators.py: the repository root is
    # not on the path yet.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import common

TARGET_ERROR = 0.01
GOAL_RATIO = 0.5
# Budgets are 3 k for these k, about 25% apart, so that Hutch++ gives its
# sketch, projection and probes a third each.
BUDGET_MULTIPLES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 64, 80)
BUDGET_MULTIPLES += (100, 128, 160, 200, 256, 320, 400, 512, 640, 800, 1024)
BUDGET_MULTIPLES += (1280, 1600, 2048, 2560, 3200, 4096, 5120, 6400)
BUDGETS = [3 * k for k in BUDGET_MULTIPLES]
# Largest Hutchinson budget swept; the normal approximation covers beyond it.
HUTCHINSON_MAX_QUERIES = 20_000


def rademacher(count: int, dim: int, generator: torch.Generator) -> Tensor:
    """Draw (count, dim) ±1 vectors exactly as the trace estimators do."""
    return random_vectors(
        count,
        dim,
        distribution="rademacher",
        generator=generator,
        dtype=torch.float64,
        device="cpu",
    )


def hutchinson_prefix_estimates(hessian: Tensor, queries: int, seed: int) -> Tensor:
    """Return Hutchinson's estimate after 1, 2, ..., ``queries`` probes, (queries,).

    The probes are the rows of one draw of ``queries`` vectors from a
    generator seeded with ``seed``, as :func:`hutchinson_trace` draws them.
    Entry n - 1 is therefore its estimate with n queries, provided the first
    n rows of a larger draw equal a draw of n rows, which
    :func:`check_replicas` verifies.
    """
    generator = torch.Generator().manual_seed(seed)
    probes = rademacher(queries, hessian.shape[0], generator)
    samples = (probes * (probes @ hessian)).sum(dim=1)
    counts = torch.arange(1, queries + 1, dtype=torch.float64)
    return samples.cumsum(dim=0) / counts


def hutchpp_estimate(hessian: Tensor, queries: int, seed: int) -> float:
    """Return the Hutch++ estimate that :func:`hutchpp_trace` gives, batched."""
    generator = torch.Generator().manual_seed(seed)
    dim = hessian.shape[0]
    sketch_size = queries // 3
    sketch = rademacher(sketch_size, dim, generator)
    probes = rademacher(queries - 2 * sketch_size, dim, generator)

    # H is symmetric, so the rows of S H are the products H s_i.
    q, _ = torch.linalg.qr((sketch @ hessian).T)
    exact_part = float((q.T * (q.T @ hessian)).sum())
    remainder = probes - (probes @ q) @ q.T
    samples = (remainder * (remainder @ hessian)).sum(dim=1)
    return exact_part + float(samples.mean())


def check_replicas(problem: common.Problem, hessian: Tensor) -> dict[str, float]:
    """Compare the replicas with the real estimators and return the largest gaps.

    Relative gaps against |tr(H)|: with the exact Hessian as the operator at
    several budgets and seeds, and with real Hessian-vector products (double
    backward) at one budget.
    """
    dim = hessian.shape[0]
    scale = abs(float(hessian.trace()))

    def matrix_product(v: Tensor) -> Tensor:
        return hessian @ v

    gaps = {"hutchinson_matrix": 0.0, "hutchpp_matrix": 0.0}
    for seed in (0, 1):
        prefix = hutchinson_prefix_estimates(hessian, 30, seed)
        for queries in (3, 12, 30):
            real = hutchinson_trace(matrix_product, dim, queries, generator=seed)
            gap = abs(real.estimate - float(prefix[queries - 1])) / scale
            gaps["hutchinson_matrix"] = max(gaps["hutchinson_matrix"], gap)
            real = hutchpp_trace(matrix_product, dim, queries, generator=seed)
            gap = abs(real.estimate - hutchpp_estimate(hessian, queries, seed)) / scale
            gaps["hutchpp_matrix"] = max(gaps["hutchpp_matrix"], gap)

    hvp = make_double_backward_operator(problem.f, problem.theta)
    real = hutchpp_trace(hvp, dim, 30, generator=0)
    gaps["hutchpp_real_hvp"] = (
        abs(real.estimate - hutchpp_estimate(hessian, 30, 0)) / scale
    )
    real = hutchinson_trace(hvp, dim, 30, generator=0)
    prefix = hutchinson_prefix_estimates(hessian, 30, 0)
    gaps["hutchinson_real_hvp"] = abs(real.estimate - float(prefix[-1])) / scale
    return gaps


def spectrum_facts(hessian: Tensor) -> dict[str, float]:
    """Return the numbers that decide how hard a relative trace error is."""
    eigenvalues = torch.linalg.eigvalsh(hessian)
    trace = float(hessian.trace())
    frobenius_squared = float((hessian**2).sum())
    diagonal_squared = float((hessian.diagonal() ** 2).sum())
    # Var(z^T H z) for Rademacher z: 2 (||H||_F^2 - sum_j H_jj^2).
    variance = 2 * (frobenius_squared - diagonal_squared)
    # Median |mean of n samples - tr| is about 0.6745 sqrt(variance / n).
    predicted = variance * (0.6745 / (TARGET_ERROR * abs(trace))) ** 2
    return {
        "trace": trace,
        "sum_abs_eigenvalues": float(eigenvalues.abs().sum()),
        "sum_negative_eigenvalues": float(eigenvalues[eigenvalues < 0].sum()),
        "negative_count": int((eigenvalues < 0).sum()),
        "frobenius_norm": math.sqrt(frobenius_squared),
        "hutchinson_sample_variance": variance,
        "hutchinson_predicted_queries": predicted,
        "min_eigenvalue": float(eigenvalues[0]),
        "max_eigenvalue": float(eigenvalues[-1]),
    }


def first_sufficient(median_errors: dict[int, float]) -> int | None:
    """Return the first budget whose median error and the next one's are on target.

    With 20 or so seeds the median error still fluctuates from one budget to
    the next, so one budget below the target by chance does not count.
    """
    budgets = sorted(median_errors)
    for budget, following in itertools.pairwise(budgets):
        if max(median_errors[budget], median_errors[following]) <= TARGET_ERROR:
            return budget
    return None


def sweep_hutchinson(
    hessian: Tensor, seeds: list[int], max_queries: int
) -> dict[str, Any]:
    """Return Hutchinson's median relative error at each budget up to max_queries.

    Each seed runs once with ``max_queries`` probes, and the estimate with
    fewer queries is the mean of the first probes.
    """
    truth = float(hessian.trace())
    errors = torch.stack(
        [
            (hutchinson_prefix_estimates(hessian, max_queries, seed) - truth).abs()
            / abs(truth)
            for seed in seeds
        ]
    )  # (seeds, max_queries)
    medians = errors.median(dim=0).values
    median_errors = {
        budget: float(medians[budget - 1])
        for budget in BUDGETS
        if budget <= max_queries
    }
    return {
        "queries_needed": first_sufficient(median_errors),
        "max_queries_swept": max_queries,
        "median_error_at": median_errors,
    }


def sweep_hutchpp(hessian: Tensor, seeds: list[int]) -> dict[str, Any]:
    """Return Hutch++'s median relative error at each budget until it is on target.

    The sweep stops once two budgets in a row are within the target, or
    when the sketch would exceed P vectors, where Hutch++ is exact.
    """
    truth = float(hessian.trace())
    dim = hessian.shape[0]
    median_errors: dict[int, float] = {}
    for queries in BUDGETS:
        if queries // 3 > dim:
            break
        errors = [
            abs(hutchpp_estimate(hessian, queries, seed) - truth) / abs(truth)
            for seed in seeds
        ]
        median_errors[queries] = statistics.median(errors)
        if first_sufficient(median_errors) is not None:
            break
    return {
        "queries_needed": first_sufficient(median_errors),
        "median_error_at": median_errors,
    }


def print_report(
    facts: dict[str, float],
    hutchinson: dict[str, Any],
    hutchpp: dict[str, Any],
    ratio: float | None,
) -> None:
    print(
        f"tr(H) = {facts['trace']:.6g}, sum |lambda| = "
        f"{facts['sum_abs_eigenvalues']:.6g}, sum of the {facts['negative_count']} "
        f"negative eigenvalues = {facts['sum_negative_eigenvalues']:.4g}, "
        f"||H||_F = {facts['frobenius_norm']:.4g}"
    )
    rows = [
        [
            "Hutchinson",
            hutchinson["queries_needed"] or f"> {hutchinson['max_queries_swept']}",
            f"{facts['hutchinson_predicted_queries']:.0f}",
        ],
        ["Hutch++", hutchpp["queries_needed"] or "not reached", ""],
    ]
    headers = ["estimator", "products for 1% (median)", "normal approximation"]
    print(common.format_table(headers, rows))
    for name, sweep in (("Hutchinson", hutchinson), ("Hutch++", hutchpp)):
        errors = ", ".join(f"{q}: {e:.2%}" for q, e in sweep["median_error_at"].items())
        print(f"{name} median relative error by products: {errors}")
    if ratio is None:
        print("Hutch++ / Hutchinson products: not measured")
    else:
        met = common.verdict(ratio <= GOAL_RATIO)
        print(
            f"Hutch++ / Hutchinson products: {ratio:.2f} (goal <= {GOAL_RATIO}, {met})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument(
        "--seeds", type=int, default=21, help="seeds per budget (default 21)"
    )
    parser.add_argument(
        "--hidden",
        type=int,
        help="hidden width (default 32, P = 2,410; 8, P = 610, with --quick)",
    )
    args = parser.parse_args(argv)
    common.apply_settings(args)
    hidden = args.hidden or (8 if args.quick else 32)
    if args.seeds < 20 and not args.quick:
        raise SystemExit(
            f"--seeds must be at least 20 for a full run, got {args.seeds}"
        )
    seeds = list(range(args.seeds))

    inputs, targets = common.load_digits()
    problem = common.make_problem(hidden, inputs, targets)
    hessian = hessian_matrix(problem.f, problem.theta)
    facts = spectrum_facts(hessian)
    gaps = check_replicas(problem, hessian)
    print(
        f"P = {problem.parameter_count}, N = {inputs.shape[0]}, float64, "
        f"{len(seeds)} seeds per budget; replica gaps (relative to |tr|): "
        + ", ".join(f"{name} {gap:.1e}" for name, gap in gaps.items())
    )

    max_queries = int(
        min(HUTCHINSON_MAX_QUERIES, max(300, 3 * facts["hutchinson_predicted_queries"]))
    )
    hutchinson = sweep_hutchinson(hessian, seeds, max_queries)
    hutchpp = sweep_hutchpp(hessian, seeds)
    ratio = None
    if hutchinson["queries_needed"] and hutchpp["queries_needed"]:
        ratio = hutchpp["queries_needed"] / hutchinson["queries_needed"]
    print_report(facts, hutchinson, hutchpp, ratio)

    path = common.write_results(
        "trace_estimators",
        args,
        {
            "parameters": problem.parameter_count,
            "samples": inputs.shape[0],
            "seeds": len(seeds),
            "target_relative_error": TARGET_ERROR,
            "spectrum": facts,
            "replica_gaps": gaps,
            "hutchinson": hutchinson,
            "hutchpp": hutchpp,
            "products_ratio": ratio,
            "goal_ratio": GOAL_RATIO,
            "goal_met": ratio is not None and ratio <= GOAL_RATIO,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
