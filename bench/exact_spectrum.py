"""Exact Hessian spectrum: our path against torch.func.hessian, side by side.

Run: .venv/bin/python -m bench.exact_spectrum [--quick]

Our path builds the Hessian with :func:`worker.analysis.hessian.hessian_matrix`
(forward-over-reverse products, vmapped over chunks of 256 basis vectors) and
takes every eigenvalue with ``torch.linalg.eigvalsh``. The baseline is
``torch.func.hessian`` of the same flat loss followed by the same eigvalsh.
The goal is our path at least 5 times faster, with eigenvalues that agree to
1e-8 relative to the largest magnitude.

Each round times every Hessian build once and eigvalsh once, back to back. A
path's time in a round is its build plus that round's eigvalsh, because both
paths hand the same (P, P) matrix to the same solver. The other builds and the
two-thread rows show where the time goes and what would change the ratio.
"""

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from worker.analysis.hessian import LossFunction, hessian_matrix

try:
    from bench import common
except ModuleNotFoundError:
    # Run as a file, python bench/exact_spectrum.py: the repository root is
    # not on the path yet.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import common

GOAL_SPEEDUP = 5.0
AGREEMENT_TOLERANCE = 1e-8
OURS = "hessian_matrix, fwd-over-rev, chunk 256 (ours)"
BASELINE = "torch.func.hessian"
EIGVALSH = "torch.linalg.eigvalsh"
EIGH = "torch.linalg.eigh (eigenvectors too)"


def with_threads(threads: int, function: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """Wrap ``function`` so that it runs with ``threads`` torch threads."""

    def run() -> Tensor:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return function()
        finally:
            torch.set_num_threads(before)

    return run


def hessian_builds(
    f: LossFunction, theta: Tensor, threads: int
) -> dict[str, Callable[[], Tensor]]:
    """Name every way of building the Hessian (P, P) that this benchmark times."""
    p = theta.numel()
    builds: dict[str, Callable[[], Tensor]] = {
        OURS: lambda: hessian_matrix(f, theta, chunk_size=256),
        BASELINE: lambda: torch.func.hessian(f)(theta),
        "hessian_matrix, fwd-over-rev, chunk 64": lambda: hessian_matrix(
            f, theta, chunk_size=64
        ),
        f"hessian_matrix, fwd-over-rev, chunk {p} (all)": lambda: hessian_matrix(
            f, theta, chunk_size=p
        ),
        "rev-over-rev vmap, chunk 64": lambda: common.reverse_over_reverse_hessian(
            f, theta, 64
        ),
        "rev-over-rev vmap, chunk 32": lambda: common.reverse_over_reverse_hessian(
            f, theta, 32
        ),
    }
    other = 2 if threads == 1 else 1
    builds[f"{OURS}, {other} threads"] = with_threads(other, builds[OURS])
    return builds


def time_rounds(
    builds: dict[str, Callable[[], Tensor]], rounds: int, threads: int
) -> tuple[dict[str, common.Timings], Tensor, Tensor]:
    """Time each build and eigvalsh once per round, in a rotating order.

    Returns the timings, our Hessian and the baseline's, for the agreement
    check. Builds take seconds here, so each block is a single call.
    """
    other = 2 if threads == 1 else 1
    hessian = builds[OURS]()
    solvers: dict[str, Callable[[], object]] = {
        EIGVALSH: lambda: torch.linalg.eigvalsh(hessian),
        f"{EIGVALSH}, {other} threads": with_threads(
            other, lambda: torch.linalg.eigvalsh(hessian)
        ),
        EIGH: lambda: torch.linalg.eigh(hessian),
    }
    contenders: dict[str, Callable[[], object]] = {**builds, **solvers}
    names = list(contenders)
    times = {name: common.Timings([], []) for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].add(common.time_call(contenders[name]))
    return times, hessian, builds[BASELINE]()


def add_timings(first: common.Timings, second: common.Timings) -> common.Timings:
    """Return the per-round sums of two contenders' timings."""
    return common.Timings(
        [a + b for a, b in zip(first.wall_s, second.wall_s, strict=True)],
        [a + b for a, b in zip(first.cpu_s, second.cpu_s, strict=True)],
    )


def agreement(ours: Tensor, baseline: Tensor) -> dict[str, float]:
    """Compare the two Hessians and their spectra."""
    ours_eigenvalues = torch.linalg.eigvalsh(ours)
    baseline_eigenvalues = torch.linalg.eigvalsh(baseline)
    scale = float(baseline_eigenvalues.abs().max())
    difference = float((ours_eigenvalues - baseline_eigenvalues).abs().max())
    return {
        "hessian_max_abs_diff": float((ours - baseline).abs().max()),
        "eigenvalue_max_abs_diff": difference,
        "eigenvalue_relative_diff": difference / scale,
        "min_eigenvalue": float(baseline_eigenvalues[0]),
        "max_eigenvalue": float(baseline_eigenvalues[-1]),
    }


def summarize(times: dict[str, common.Timings], threads: int) -> list[dict[str, Any]]:
    """Compare each build, plus eigvalsh, with the baseline path."""
    eigvalsh = times[EIGVALSH]
    baseline_total = add_timings(times[BASELINE], eigvalsh)
    other = 2 if threads == 1 else 1
    rows = []
    for name, build in times.items():
        if name.startswith(EIGVALSH) or name == EIGH:
            continue
        # A path run with the other thread count also solves with that count.
        solver = (
            times[f"{EIGVALSH}, {other} threads"] if "threads" in name else eigvalsh
        )
        total = add_timings(build, solver)
        ratio = common.compare(total, baseline_total)
        rows.append(
            {
                "path": f"{name} + eigvalsh",
                "build_median_s": statistics.median(build.wall_s),
                "eigvalsh_median_s": statistics.median(solver.wall_s),
                "total_median_s": statistics.median(total.wall_s),
                "speedup_vs_baseline": 1 / ratio["wall_ratio"],
                "cpu_speedup_vs_baseline": 1 / ratio["cpu_ratio"],
            }
        )
    return rows


def speedup_bound(times: dict[str, common.Timings]) -> float:
    """Return the speedup over the baseline if our build took no time at all."""
    baseline = statistics.median(add_timings(times[BASELINE], times[EIGVALSH]).wall_s)
    return baseline / statistics.median(times[EIGVALSH].wall_s)


def print_report(rows: list[dict[str, Any]], checks: dict[str, float]) -> None:
    table = [
        [
            row["path"],
            f"{row['build_median_s']:.2f}",
            f"{row['eigvalsh_median_s']:.2f}",
            f"{row['total_median_s']:.2f}",
            f"{row['speedup_vs_baseline']:.2f}",
            f"{row['cpu_speedup_vs_baseline']:.2f}",
        ]
        for row in rows
    ]
    headers = [
        "path",
        "build s",
        "eigvalsh s",
        "total s",
        "speedup (wall)",
        "speedup (CPU)",
    ]
    print(common.format_table(headers, table))
    print(
        "eigenvalues: max |diff| "
        f"{checks['eigenvalue_max_abs_diff']:.2e}, relative "
        f"{checks['eigenvalue_relative_diff']:.2e} "
        f"(goal <= {AGREEMENT_TOLERANCE:.0e}); spectrum "
        f"[{checks['min_eigenvalue']:.4g}, {checks['max_eigenvalue']:.4g}]"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument(
        "--rounds", type=int, help="timing rounds (default 3, 1 with --quick)"
    )
    parser.add_argument(
        "--hidden",
        type=int,
        help="hidden width (default 32, P = 2,410; 8, P = 610, with --quick)",
    )
    args = parser.parse_args(argv)
    common.apply_settings(args)
    rounds = args.rounds or (1 if args.quick else 3)
    hidden = args.hidden or (8 if args.quick else 32)

    inputs, targets = common.load_digits()
    problem = common.make_problem(hidden, inputs, targets)
    print(
        f"P = {problem.parameter_count}, N = {inputs.shape[0]}, float64, "
        f"{rounds} rounds, torch threads {args.threads}"
    )
    builds = hessian_builds(problem.f, problem.theta, args.threads)
    times, ours, baseline = time_rounds(builds, rounds, args.threads)
    checks = agreement(ours, baseline)
    rows = summarize(times, args.threads)
    ours_row = next(row for row in rows if row["path"] == f"{OURS} + eigvalsh")
    speedup = ours_row["speedup_vs_baseline"]
    bound = speedup_bound(times)
    print_report(rows, checks)
    eigh_ratio = common.compare(times[EIGH], times[EIGVALSH])["wall_ratio"]
    print(f"eigh / eigvalsh time on the same Hessian: {eigh_ratio:.2f}")
    print(
        f"ours vs torch.func.hessian: {speedup:.2f}x faster (goal >= "
        f"{GOAL_SPEEDUP:.0f}x, {common.verdict(speedup >= GOAL_SPEEDUP)}); "
        f"with a free Hessian build the bound would be {bound:.2f}x"
    )

    path = common.write_results(
        "exact_spectrum",
        args,
        {
            "parameters": problem.parameter_count,
            "samples": inputs.shape[0],
            "rounds": rounds,
            "rows": rows,
            "raw_wall_s": {name: t.wall_s for name, t in times.items()},
            "agreement": checks,
            "agreement_met": checks["eigenvalue_relative_diff"] <= AGREEMENT_TOLERANCE,
            "goal_speedup": GOAL_SPEEDUP,
            "speedup": speedup,
            "goal_met": speedup >= GOAL_SPEEDUP,
            "speedup_bound_with_free_build": bound,
            "eigh_over_eigvalsh": eigh_ratio,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
