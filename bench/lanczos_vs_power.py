"""Our Lanczos against PyHessian's power iteration and hessian-eigenthings.

Run: .venv/bin/python -m bench.lanczos_vs_power [--quick]

Every solver gets the same float64 64 -> 32 -> 10 MLP, the full digits
training split as one batch and cross-entropy. Ground truth is the exact
spectrum (hessian_matrix + eigvalsh), and the target is 1e-3 relative error.
Per seed the solvers run back to back in a rotating order. Time includes each
solver's setup, because PyHessian records the gradient graph in its
constructor and our operator does the same.

(a) top eigenvalue: goals at most 0.5x PyHessian's products and 0.6x its
time. (b) top 5, against PyHessian's deflated power iteration (top_n=5): goal
at most 0.25x its products. Each goal is judged twice. At equal tolerance
both solvers run with tol 1e-3, although the tolerances mean different things:
a relative Ritz residual for our Lanczos, the relative change of the
eigenvalue between steps for PyHessian. At matched accuracy each solver runs
at the loosest tolerance of its sweep at which every seed ends within 1e-3 of
the exact eigenvalues.

PyHessian 0.1 and hessian-eigenthings 1.0.0a5 come from PyPI (``pip install
-e .[bench]``). PyHessian computes H v by double backward through the
gradient graph it keeps (``torch.autograd.grad(gradsH, params, grad_outputs=v,
retain_graph=True)``). Its products are counted by wrapping
``pyhessian.hessian.hessian_vector_product``, which every power step calls
once. Our Lanczos uses the same kind of product
(:func:`worker.analysis.linalg.make_double_backward_operator`), so the time
ratio compares the algorithms, not the differentiation.
"""

import argparse
import contextlib
import importlib
import statistics
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.analysis.hessian import hessian_matrix
from worker.analysis.lanczos import LanczosProcess, lanczos_extremes, power_iteration
from worker.analysis.linalg import (
    CountingOperator,
    make_double_backward_operator,
    make_generator,
    random_vectors,
)

try:
    from bench import common
except ModuleNotFoundError:
    # Run as a file, python bench/lanczos_vs_power.py: the repository root is
    # not on the path yet.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import common

TOLERANCE = 1e-3
# Solver tolerances swept for the accuracy-matched comparison: the loosest one
# at which every seed lands within TOLERANCE of the exact eigenvalues counts.
OUR_TOLERANCES = (1e-2, 1e-3)
PYHESSIAN_TOLERANCES = (1e-3, 1e-4, 1e-5)
TOP_N = 5
PYHESSIAN_MAX_ITER = 100
LANCZOS_MAX_ITER = 300
# max_iter values tried for hessian-eigenthings' fixed-length Lanczos.
EIGENTHINGS_LANCZOS_STEPS = (5, 10, 15, 20, 30, 40, 60, 80, 100, 150, 200)
GOAL_TOP1_PRODUCTS = 0.5
GOAL_TOP1_TIME = 0.6
GOAL_TOP5_PRODUCTS = 0.25


@dataclass
class Run:
    """One solver run: eigenvalues found (descending), cost and time."""

    method: str
    eigenvalues: list[float]
    hvp_count: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    # Products until the estimate was first within TOLERANCE of the truth.
    oracle_hvp_count: int | None = None
    note: str | None = None
    relative_error: float = field(default=float("nan"))


class PyHessianCounter:
    """Count and record PyHessian's Hessian-vector products while active.

    Replaces ``hessian_vector_product`` in ``pyhessian.hessian``, where its
    power iteration looks the function up on every step. Each product also
    records the Rayleigh quotient v . H v, the estimate PyHessian compares
    between steps.
    """

    def __init__(self) -> None:
        self.module = importlib.import_module("pyhessian.hessian")
        self.original = self.module.hessian_vector_product
        self.count = 0
        self.rayleigh_quotients: list[float] = []

    def product(self, gradients: Any, params: Any, v: list[Tensor]) -> Any:
        self.count += 1
        hv = self.original(gradients, params, v)
        quotient = sum(float((a * b).sum()) for a, b in zip(hv, v, strict=True))
        self.rayleigh_quotients.append(quotient)
        return hv

    @contextlib.contextmanager
    def active(self) -> Iterator["PyHessianCounter"]:
        self.module.hessian_vector_product = self.product
        try:
            yield self
        finally:
            self.module.hessian_vector_product = self.original


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Set torch's default dtype inside the block.

    PyHessian draws its start vectors with ``torch.randn(p.size())``, which
    would be float32 against our float64 model otherwise.
    """
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def clear_gradients(model: nn.Module) -> None:
    """Drop ``.grad``, which PyHessian fills with a graph-carrying gradient."""
    for parameter in model.parameters():
        parameter.grad = None


def run_pyhessian(
    problem: common.Problem, top_n: int, seed: int, true_top: float, tol: float
) -> Run:
    """Run PyHessian's ``eigenvalues(top_n=..., tol=...)`` and count its products.

    For ``top_n`` 1 the run also reports the products until its Rayleigh
    quotient was first within TOLERANCE of ``true_top``.
    """
    pyhessian = importlib.import_module("pyhessian")
    counter = PyHessianCounter()
    torch.manual_seed(seed)
    clear_gradients(problem.model)
    with counter.active(), default_dtype(torch.float64), warnings.catch_warnings():
        # Its constructor calls backward(create_graph=True), which warns about
        # a reference cycle through .grad. clear_gradients breaks the cycle.
        warnings.simplefilter("ignore", UserWarning)
        solver = pyhessian.hessian(
            problem.model,
            nn.CrossEntropyLoss(),
            data=(problem.inputs, problem.targets),
            cuda=False,
        )
        eigenvalues, _ = solver.eigenvalues(
            maxIter=PYHESSIAN_MAX_ITER, tol=tol, top_n=top_n
        )
    clear_gradients(problem.model)
    method = f"PyHessian power iteration, tol {tol:.0e}"
    run = Run(method, sorted(eigenvalues, reverse=True), counter.count)
    if top_n == 1:
        run.oracle_hvp_count = first_within(counter.rayleigh_quotients, true_top)
    return run


def first_within(estimates: list[float], truth: float) -> int | None:
    """Return the 1-based index of the first estimate within TOLERANCE of truth."""
    for index, estimate in enumerate(estimates, start=1):
        if abs(estimate - truth) <= TOLERANCE * abs(truth):
            return index
    return None


def run_ours(problem: common.Problem, k: int, seed: int, tol: float) -> Run:
    """Run :func:`lanczos_extremes` for the k largest at residual tolerance ``tol``."""
    operator = make_double_backward_operator(problem.f, problem.theta)
    result = lanczos_extremes(
        operator,
        problem.parameter_count,
        k,
        "largest",
        generator=seed,
        tol=tol,
        max_iter=LANCZOS_MAX_ITER,
    )
    eigenvalues = sorted(result.eigenvalues.tolist(), reverse=True)
    note = None if result.converged else result.message
    method = f"our lanczos_extremes, tol {tol:.0e}"
    return Run(method, eigenvalues, result.hvp_count, note=note)


def lanczos_oracle_count(
    problem: common.Problem, seed: int, true_top: float
) -> int | None:
    """Return the Lanczos steps until the largest Ritz value is within TOLERANCE.

    Starts from the vector :func:`lanczos_extremes` draws for ``seed``, so it
    follows the same Krylov space as the timed run.
    """
    operator = CountingOperator(
        make_double_backward_operator(problem.f, problem.theta),
        problem.parameter_count,
    )
    rng = make_generator(seed)
    (start,) = random_vectors(
        1,
        problem.parameter_count,
        distribution="gaussian",
        generator=rng,
        dtype=problem.theta.dtype,
        device=problem.theta.device,
    )
    process = LanczosProcess(
        operator, start, LANCZOS_MAX_ITER, restart_on_breakdown=True, generator=rng
    )
    while process.size < LANCZOS_MAX_ITER and not process.exhausted:
        process.step()
        theta, _ = process.ritz_decomposition()
        if abs(theta[-1] - true_top) <= TOLERANCE * abs(true_top):
            return operator.count
    return None


def run_our_power(problem: common.Problem, seed: int) -> Run:
    """Run our :func:`power_iteration`, PyHessian's algorithm with a residual rule."""
    operator = make_double_backward_operator(problem.f, problem.theta)
    result = power_iteration(
        operator,
        problem.parameter_count,
        generator=seed,
        tol=TOLERANCE,
        max_iter=1000,
    )
    note = None if result.converged else result.message
    return Run(
        "our power_iteration (PyHessian's iteration, residual rule)",
        result.eigenvalues.tolist(),
        result.hvp_count,
        note=note,
    )


def eigenthings_operator(problem: common.Problem) -> tuple[Any, list[int]]:
    """Build hessian-eigenthings' HessianOperator with a product counter."""
    eigenthings = importlib.import_module("hessian_eigenthings")
    operator = eigenthings.HessianOperator(
        problem.model,
        [(problem.inputs, problem.targets)],
        eigenthings.supervised_loss(F.cross_entropy),
    )
    count = [0]
    matvec = operator.matvec

    def counted(v: Tensor) -> Tensor:
        count[0] += 1
        return matvec(v)

    operator.matvec = counted
    return operator, count


def run_eigenthings_power(problem: common.Problem, k: int, seed: int) -> Run:
    """Run hessian-eigenthings' (deflated) power iteration at tol 1e-3."""
    eigenthings = importlib.import_module("hessian_eigenthings")
    operator, count = eigenthings_operator(problem)
    result = eigenthings.deflated_power_iteration(
        operator, k=k, tol=TOLERANCE, seed=seed
    )
    converged = bool(result.converged.all())
    return Run(
        "hessian-eigenthings deflated_power_iteration",
        sorted(result.eigenvalues.tolist(), reverse=True),
        count[0],
        note=None if converged else "its own convergence flag is False",
    )


def run_eigenthings_lanczos(problem: common.Problem, k: int, seed: int) -> Run:
    """Run hessian-eigenthings' fixed-length Lanczos at the smallest max_iter
    from EIGENTHINGS_LANCZOS_STEPS whose result passes its own residual test.

    Only the successful run is returned, so its cost assumes the user knew
    that max_iter in advance.
    """
    eigenthings = importlib.import_module("hessian_eigenthings")
    result, count = None, [0]
    for steps in EIGENTHINGS_LANCZOS_STEPS:
        if steps < k or steps > problem.parameter_count:
            continue
        operator, count = eigenthings_operator(problem)
        result = eigenthings.lanczos(
            operator, k=k, max_iter=steps, tol=TOLERANCE, which="LA", seed=seed
        )
        if bool(result.converged.all()):
            break
    assert result is not None
    converged = bool(result.converged.all())
    return Run(
        "hessian-eigenthings lanczos (smallest max_iter that converged)",
        sorted(result.eigenvalues.tolist(), reverse=True),
        count[0],
        note=None if converged else "no max_iter tried converged",
    )


def timed(run: Callable[[], Run]) -> Run:
    """Call ``run`` once and store its wall and CPU time on the result."""
    result: list[Run] = []
    sample = common.time_call(lambda: result.append(run()))
    result[0].wall_s = sample.wall_s
    result[0].cpu_s = sample.cpu_s
    return result[0]


def solvers(
    problem: common.Problem, k: int, true_top: float
) -> dict[str, Callable[[int], Run]]:
    """Name the solvers compared for the top ``k`` eigenvalues.

    Keys start with "ours" or "pyhessian" followed by the solver tolerance,
    which :func:`matched_key` relies on.
    """
    table: dict[str, Callable[[int], Run]] = {}
    for tol in OUR_TOLERANCES:
        table[f"ours {tol:.0e}"] = lambda seed, tol=tol: run_ours(problem, k, seed, tol)
    for tol in PYHESSIAN_TOLERANCES:
        table[f"pyhessian {tol:.0e}"] = lambda seed, tol=tol: run_pyhessian(
            problem, k, seed, true_top, tol
        )
    table["eigenthings power"] = lambda seed: run_eigenthings_power(problem, k, seed)
    table["eigenthings lanczos"] = lambda seed: run_eigenthings_lanczos(
        problem, k, seed
    )
    if k == 1:
        table["our power"] = lambda seed: run_our_power(problem, seed)
    return table


def matched_key(rows: list[dict[str, Any]], prefix: str) -> str | None:
    """Return the key of the loosest ``prefix`` tolerance with every seed on target."""
    candidates = [row for row in rows if row["key"].startswith(prefix + " ")]
    candidates.sort(key=lambda row: float(row["key"].split()[-1]), reverse=True)
    for row in candidates:
        if row["runs_within_tolerance"] == row["runs"]:
            return str(row["key"])
    return None


def run_seeds(
    problem: common.Problem, k: int, seeds: list[int], truth: list[float]
) -> dict[str, list[Run]]:
    """Run every solver once per seed, rotating the order, and score the errors."""
    table = solvers(problem, k, truth[0])
    names = list(table)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for index, seed in enumerate(seeds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            run = timed(lambda name=name, seed=seed: table[name](seed))
            run.relative_error = max(
                abs(found - true) / abs(true)
                for found, true in zip(run.eigenvalues, truth, strict=True)
            )
            runs[name].append(run)
    if k == 1:
        oracle = [lanczos_oracle_count(problem, seed, truth[0]) for seed in seeds]
        for name in names:
            if name.startswith("ours "):
                for run, count in zip(runs[name], oracle, strict=True):
                    run.oracle_hvp_count = count
    return runs


def median_if_all(values: list[int | None]) -> float | None:
    """Return the median, or None when some run never reached the target.

    A median over only the runs that reached it would favour the solver.
    """
    known = [value for value in values if value is not None]
    if not known or len(known) < len(values):
        return None
    return statistics.median(known)


def summarize(runs: dict[str, list[Run]]) -> list[dict[str, Any]]:
    """Summarize each solver's runs as medians and ratios against PyHessian.

    The baseline is PyHessian at tolerance 1e-3, the tolerance all solvers get.
    """
    baseline = runs[f"pyhessian {TOLERANCE:.0e}"]
    baseline_products = statistics.median(run.hvp_count for run in baseline)
    baseline_wall = statistics.median(run.wall_s for run in baseline)
    baseline_cpu = statistics.median(run.cpu_s for run in baseline)
    rows = []
    for key, solver_runs in runs.items():
        products = statistics.median(run.hvp_count for run in solver_runs)
        wall = statistics.median(run.wall_s for run in solver_runs)
        cpu = statistics.median(run.cpu_s for run in solver_runs)
        rows.append(
            {
                "key": key,
                "method": solver_runs[0].method,
                "median_hvp_count": products,
                "median_oracle_hvp_count": median_if_all(
                    [run.oracle_hvp_count for run in solver_runs]
                ),
                "median_wall_s": wall,
                "median_relative_error": statistics.median(
                    run.relative_error for run in solver_runs
                ),
                "runs_within_tolerance": sum(
                    run.relative_error <= TOLERANCE for run in solver_runs
                ),
                "runs": len(solver_runs),
                "products_ratio": products / baseline_products,
                "wall_ratio": wall / baseline_wall,
                "cpu_ratio": cpu / baseline_cpu,
                "notes": sorted({run.note for run in solver_runs if run.note}),
                "per_seed": [
                    {
                        "hvp_count": run.hvp_count,
                        "oracle_hvp_count": run.oracle_hvp_count,
                        "wall_s": run.wall_s,
                        "relative_error": run.relative_error,
                        "eigenvalues": run.eigenvalues,
                    }
                    for run in solver_runs
                ],
            }
        )
    return rows


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print(title)
    table = []
    for row in rows:
        oracle = row["median_oracle_hvp_count"]
        table.append(
            [
                row["method"],
                f"{row['median_hvp_count']:g}",
                "-" if oracle is None else f"{oracle:g}",
                f"{row['median_wall_s']:.3f}",
                f"{row['median_relative_error']:.1e}",
                f"{row['runs_within_tolerance']}/{row['runs']}",
                f"{row['products_ratio']:.2f}",
                f"{row['wall_ratio']:.2f}",
                f"{row['cpu_ratio']:.2f}",
            ]
        )
    headers = [
        "method",
        "products",
        "to 1e-3",
        "wall s",
        "rel error",
        "within 1e-3",
        "x products",
        "x wall",
        "x CPU",
    ]
    print(common.format_table(headers, table))
    for row in rows:
        for note in row["notes"]:
            print(f"  {row['method']}: {note}")


def judge_goals(
    top1: list[dict[str, Any]], top5: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Judge each goal at equal tolerance and at matched accuracy.

    Equal tolerance compares both solvers at tol 1e-3, whatever error that
    leaves. Matched accuracy compares each solver at its loosest swept
    tolerance that put every seed within 1e-3 of the exact eigenvalues.
    """
    goals: dict[str, dict[str, Any]] = {}
    specs = (
        ("top1_products", top1, "median_hvp_count", GOAL_TOP1_PRODUCTS),
        ("top1_time", top1, "median_wall_s", GOAL_TOP1_TIME),
        ("top5_products", top5, "median_hvp_count", GOAL_TOP5_PRODUCTS),
    )
    for name, rows, field_name, goal in specs:
        by_key = {row["key"]: row for row in rows}
        equal = (f"ours {TOLERANCE:.0e}", f"pyhessian {TOLERANCE:.0e}")
        matched = (matched_key(rows, "ours"), matched_key(rows, "pyhessian"))
        for label, (ours, theirs) in (("equal_tol", equal), ("matched", matched)):
            if ours is None or theirs is None:
                continue
            ratio = by_key[ours][field_name] / by_key[theirs][field_name]
            goals[f"{name}_{label}"] = {
                "ratio": ratio,
                "goal": goal,
                "met": ratio <= goal,
                "compares": f"{ours} vs {theirs}",
            }
    return goals


def exact_spectrum(problem: common.Problem) -> Tensor:
    """Return every eigenvalue of the problem's Hessian, ascending."""
    return torch.linalg.eigvalsh(hessian_matrix(problem.f, problem.theta))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--seeds", type=int, help="seeds (default 5, 2 with --quick)")
    parser.add_argument(
        "--hidden",
        type=int,
        help="hidden width (default 32, P = 2,410; 8, P = 610, with --quick)",
    )
    args = parser.parse_args(argv)
    common.apply_settings(args)
    seeds = list(range(args.seeds or (2 if args.quick else 5)))
    hidden = args.hidden or (8 if args.quick else 32)

    inputs, targets = common.load_digits()
    problem = common.make_problem(hidden, inputs, targets)
    eigenvalues = exact_spectrum(problem)
    by_magnitude = eigenvalues[eigenvalues.abs().argsort(descending=True)]
    top = sorted(by_magnitude[:TOP_N].tolist(), reverse=True)
    print(
        f"P = {problem.parameter_count}, N = {inputs.shape[0]}, float64, "
        f"seeds {seeds}, torch threads {args.threads}; exact top {TOP_N} by "
        f"magnitude {[f'{v:.6g}' for v in top]}, smallest {float(eigenvalues[0]):.4g}"
    )

    top1 = summarize(run_seeds(problem, 1, seeds, top[:1]))
    top5 = summarize(run_seeds(problem, TOP_N, seeds, top))
    print_rows("(a) top eigenvalue, ratios against PyHessian at tol 1e-3", top1)
    print_rows(
        f"(b) top {TOP_N} eigenvalues, ratios against PyHessian at tol 1e-3", top5
    )
    print(
        "to 1e-3: median products until the estimate was first within 1e-3 of "
        "the exact value; '-' where not tracked or not reached in every run"
    )
    goals = judge_goals(top1, top5)
    for name, goal in goals.items():
        print(
            f"{name}: {goal['ratio']:.2f}x (goal <= {goal['goal']}x, "
            f"{common.verdict(goal['met'])}; {goal['compares']})"
        )

    path = common.write_results(
        "lanczos_vs_power",
        args,
        {
            "parameters": problem.parameter_count,
            "samples": inputs.shape[0],
            "seeds": seeds,
            "tolerance": TOLERANCE,
            "exact_top": top,
            "exact_min": float(eigenvalues[0]),
            "top1": top1,
            "top5": top5,
            "goals": goals,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
