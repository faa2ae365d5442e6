"""Parameter count where the iterative analysis becomes cheaper than the exact one.

Run: .venv/bin/python -m bench.auto_threshold [--quick] [--all-sizes]

For 64 -> h -> 10 ReLU MLPs of growing width h on the digits training split
(float64, full batch), each round times four paths back to back:

- exact, hessian_matrix: :func:`worker.analysis.hessian.hessian_matrix`
  (forward-over-reverse, vmapped in chunks of 256) and
  ``torch.linalg.eigvalsh``, eigenvalues only;
- exact, rev-over-rev: the Hessian from vmapped reverse-over-reverse rows in
  chunks of 64, as ``LossObjective.hessian`` builds it, and
  ``torch.linalg.eigh``, eigenvalues and eigenvectors, as the service's
  exact analysis needs them for the escape direction;
- iterative: :func:`worker.analysis.lanczos.lanczos_extremes` for the 5
  smallest and 5 largest eigenvalues (tolerance 1e-6, at most 300 steps),
  :func:`worker.analysis.trace.hutchpp_trace` with 30 queries and
  :func:`worker.analysis.density.spectral_density` with 10 probes of 80
  Lanczos steps, the settings of the service's iterative analysis. It runs
  once with products by double backward through a gradient graph recorded
  once (:func:`worker.analysis.linalg.make_double_backward_operator`), and
  once with ``torch.func.vjp`` of the gradient, which records the graph again
  for every product, as ``LossObjective.hvp`` does.

A crossover is where exact time / iterative time passes 1, interpolated
linearly in log P and log ratio between the two sizes around it. Exact cost
grows as P^2 (build) to P^3 (eigensolver) and iterative cost about as P. So
once a pairing's ratio is above 1 at two sizes in a row and above 2 at the
second, larger sizes skip that pairing. Paths in no remaining pairing are no
longer timed. ``--all-sizes`` turns this off.
"""

import argparse
import itertools
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, vjp

from worker.analysis.density import spectral_density
from worker.analysis.hessian import LossFunction, hessian_matrix
from worker.analysis.lanczos import lanczos_extremes
from worker.analysis.linalg import HessianVectorProduct, make_double_backward_operator
from worker.analysis.trace import hutchpp_trace

try:
    from bench import common
except ModuleNotFoundError:
    # Run as a file, python bench/auto_threshold.py: the repository root is
    # not on the path yet.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import common

WIDTHS = (3, 6, 12, 20, 32, 48, 64, 80)
QUICK_WIDTHS = (3, 6, 12)
TOP_K = 5
LANCZOS_TOLERANCE = 1e-6
LANCZOS_MAX_ITER = 300
TRACE_QUERIES = 30
DENSITY_PROBES = 10
DENSITY_LANCZOS_STEPS = 80
STOP_RATIO = 2.0
EXACT_MATRIX = "exact, hessian_matrix chunk 256 + eigvalsh"
EXACT_REVERSE = "exact, rev-over-rev chunk 64 + eigh"
ITERATIVE_REUSED = "iterative, double backward (graph reused)"
ITERATIVE_VJP = "iterative, vjp of grad (graph per product)"
# Pairs of (exact, iterative) paths whose crossover is reported.
ALL_PATHS = (EXACT_MATRIX, EXACT_REVERSE, ITERATIVE_REUSED, ITERATIVE_VJP)
PAIRINGS = {
    "hessian_matrix vs double backward": (EXACT_MATRIX, ITERATIVE_REUSED),
    "rev-over-rev + eigh vs vjp": (EXACT_REVERSE, ITERATIVE_VJP),
    "rev-over-rev + eigh vs double backward": (EXACT_REVERSE, ITERATIVE_REUSED),
}


def vjp_operator(f: LossFunction, theta: Tensor) -> HessianVectorProduct:
    """Build ``v -> H v`` by ``torch.func.vjp`` of the gradient, per product."""

    def hvp(v: Tensor) -> Tensor:
        _, pullback = vjp(grad(f), theta)
        return pullback(v)[0]

    return hvp


def run_iterative(
    make_operator: Callable[[LossFunction, Tensor], HessianVectorProduct],
    f: LossFunction,
    theta: Tensor,
) -> dict[str, Any]:
    """Run the extremes, trace and density estimates and return their costs."""
    hvp = make_operator(f, theta)
    dim = theta.numel()
    pairs = lanczos_extremes(
        hvp,
        dim,
        min(TOP_K, max(dim // 2, 1)),
        "both",
        generator=0,
        tol=LANCZOS_TOLERANCE,
        max_iter=min(LANCZOS_MAX_ITER, dim),
    )
    trace = hutchpp_trace(hvp, dim, TRACE_QUERIES, generator=1)
    density = spectral_density(
        hvp, dim, DENSITY_PROBES, DENSITY_LANCZOS_STEPS, generator=2
    )
    return {
        "lanczos_hvp_count": pairs.hvp_count,
        "lanczos_converged": pairs.converged,
        "hvp_count": pairs.hvp_count + trace.hvp_count + density.hvp_count,
        "min_eigenvalue": float(pairs.eigenvalues[0]),
        "max_eigenvalue": float(pairs.eigenvalues[-1]),
    }


def measure_width(
    hidden: int,
    inputs: Tensor,
    targets: Tensor,
    rounds: int,
    pairings: list[str],
) -> dict[str, Any]:
    """Time the paths of ``pairings`` at one width, interleaved.

    The error columns compare the extremes of whichever iterative path ran
    with the eigenvalues of whichever exact path ran.
    """
    problem = common.make_problem(hidden, inputs, targets)
    f, theta = problem.f, problem.theta
    outcome: dict[str, Any] = {}

    def exact_matrix() -> None:
        outcome["eigenvalues"] = torch.linalg.eigvalsh(hessian_matrix(f, theta))

    def exact_reverse() -> None:
        hessian = common.reverse_over_reverse_hessian(f, theta, 64)
        outcome["eigh"] = torch.linalg.eigh(hessian)

    def iterative_reused() -> None:
        outcome["reused"] = run_iterative(make_double_backward_operator, f, theta)

    def iterative_vjp() -> None:
        outcome["vjp"] = run_iterative(vjp_operator, f, theta)

    functions: dict[str, Callable[[], object]] = {
        EXACT_MATRIX: exact_matrix,
        EXACT_REVERSE: exact_reverse,
        ITERATIVE_REUSED: iterative_reused,
        ITERATIVE_VJP: iterative_vjp,
    }
    needed = {path for pairing in pairings for path in PAIRINGS[pairing]}
    names = [name for name in ALL_PATHS if name in needed]
    times = {name: common.Timings([], []) for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].add(common.time_call(functions[name]))

    exact_runs = [outcome["eigenvalues"]] if "eigenvalues" in outcome else []
    if "eigh" in outcome:
        exact_runs.append(outcome["eigh"].eigenvalues)
    eigenvalues = exact_runs[0]
    scale = float(eigenvalues.abs().max())
    iterative = outcome["reused"] if "reused" in outcome else outcome["vjp"]
    eigh_difference = None
    if len(exact_runs) == 2:
        eigh_difference = float((exact_runs[1] - eigenvalues).abs().max()) / scale
    return {
        "hidden": hidden,
        "parameters": problem.parameter_count,
        "median_wall_s": {
            name: statistics.median(t.wall_s) for name, t in times.items()
        },
        "ratios": {
            pairing: common.compare(
                times[PAIRINGS[pairing][0]], times[PAIRINGS[pairing][1]]
            )
            for pairing in pairings
        },
        "iterative_hvp_count": iterative["hvp_count"],
        "lanczos_hvp_count": iterative["lanczos_hvp_count"],
        "lanczos_converged": iterative["lanczos_converged"],
        "extremes_relative_error": max(
            abs(iterative["min_eigenvalue"] - float(eigenvalues[0])),
            abs(iterative["max_eigenvalue"] - float(eigenvalues[-1])),
        )
        / scale,
        "eigh_relative_diff": eigh_difference,
        "raw_wall_s": {name: t.wall_s for name, t in times.items()},
    }


def crossover(rows: list[dict[str, Any]], pairing: str) -> dict[str, Any]:
    """Interpolate the P where exact / iterative time first passes 1."""
    points = [
        (row["parameters"], row["ratios"][pairing]["wall_ratio"])
        for row in rows
        if pairing in row["ratios"]
    ]
    for (p0, r0), (p1, r1) in itertools.pairwise(points):
        if r0 < 1.0 <= r1:
            fraction = -math.log(r0) / (math.log(r1) - math.log(r0))
            estimate = math.exp(math.log(p0) + fraction * (math.log(p1) - math.log(p0)))
            return {"parameters": round(estimate), "bracket": [p0, p1]}
    if points and points[0][1] >= 1.0:
        return {"parameters": None, "bracket": [None, points[0][0]]}
    return {"parameters": None, "bracket": [points[-1][0] if points else None, None]}


def describe(found: dict[str, Any]) -> str:
    low, high = found["bracket"]
    if found["parameters"] is not None:
        return f"P ~ {found['parameters']} (between {low} and {high})"
    if low is None:
        return f"below {high}: exact is slower at every size measured"
    return f"above {low}: exact is faster at every size measured"


def print_report(rows: list[dict[str, Any]]) -> None:
    table = []
    for row in rows:
        seconds = row["median_wall_s"]
        ratios = row["ratios"]
        cells: list[object] = [row["parameters"]]
        cells += [
            f"{seconds[name]:.2f}" if name in seconds else "-" for name in ALL_PATHS
        ]
        cells += [
            f"{ratios[name]['wall_ratio']:.2f}" if name in ratios else "-"
            for name in PAIRINGS
        ]
        cells += [row["iterative_hvp_count"], f"{row['extremes_relative_error']:.0e}"]
        table.append(cells)
    headers = ["P", "exact A s", "exact B s", "iter C s", "iter D s"]
    headers += ["A/C", "B/D", "B/C", "iter products", "extremes err"]
    print(common.format_table(headers, table))
    print("A: " + EXACT_MATRIX + ", B: " + EXACT_REVERSE)
    print("C: " + ITERATIVE_REUSED + ", D: " + ITERATIVE_VJP)


def crossed(rows: list[dict[str, Any]], pairing: str) -> bool:
    """Return True once the crossover of ``pairing`` lies behind the sweep.

    That is when its ratio was above 1 at the last two sizes that timed it
    and above STOP_RATIO at the last one.
    """
    ratios = [
        row["ratios"][pairing]["wall_ratio"] for row in rows if pairing in row["ratios"]
    ][-2:]
    return len(ratios) == 2 and min(ratios) > 1.0 and ratios[-1] > STOP_RATIO


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument(
        "--rounds", type=int, default=2, help="timing rounds per size (default 2)"
    )
    parser.add_argument(
        "--all-sizes",
        action="store_true",
        help="time every path at every width, even past all crossovers",
    )
    args = parser.parse_args(argv)
    common.apply_settings(args)
    widths = QUICK_WIDTHS if args.quick else WIDTHS
    rounds = 1 if args.quick else args.rounds

    inputs, targets = common.load_digits()
    print(
        f"N = {inputs.shape[0]}, float64, {rounds} rounds per size, torch "
        f"threads {args.threads}; widths {list(widths)}"
    )
    rows: list[dict[str, Any]] = []
    skipped: list[int] = []
    for hidden in widths:
        pairings = [
            pairing
            for pairing in PAIRINGS
            if args.all_sizes or not crossed(rows, pairing)
        ]
        if not pairings:
            skipped.append(common.parameter_count(hidden))
            continue
        rows.append(measure_width(hidden, inputs, targets, rounds, pairings))
        seconds = rows[-1]["median_wall_s"]
        labels = dict(zip(ALL_PATHS, "ABCD", strict=True))
        print(
            f"  P = {rows[-1]['parameters']}: "
            + ", ".join(f"{labels[name]} {t:.2f} s" for name, t in seconds.items()),
            flush=True,
        )

    print_report(rows)
    crossovers = {pairing: crossover(rows, pairing) for pairing in PAIRINGS}
    for pairing, found in crossovers.items():
        print(f"crossover, {pairing}: {describe(found)}")
    if skipped:
        print(f"skipped P = {skipped}: every crossover was already behind")
    if any(len(row["ratios"]) < len(PAIRINGS) for row in rows):
        print(
            "'-': not timed, because that pairing's ratio was above 1 at the "
            f"two sizes before and above {STOP_RATIO} at the last"
        )

    path = common.write_results(
        "auto_threshold",
        args,
        {
            "samples": inputs.shape[0],
            "rounds": rounds,
            "rows": rows,
            "skipped_parameters": skipped,
            "crossovers": crossovers,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
