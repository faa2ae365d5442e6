"""Shared setup for the benchmarks: data, a trained MLP, timing and results.

Every benchmark runs on the digits training split (1,437 samples, 64
features, 10 classes) in float64 and reports speed as ratios measured side
by side in one process. The contenders alternate within each round, so load
from other processes on the machine hits all of them alike.
"""

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch
from torch import Tensor, nn
from torch.func import grad, vjp, vmap

from saddlepoint.spec import BuiltinDatasetSpec, LossName, MlpSpec
from worker.analysis.hessian import LossFunction, flatten_parameters, make_loss_function
from worker.engine.data import load_split, to_tensors
from worker.engine.models import build_mlp

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FEATURES = 64
CLASSES = 10


@dataclass(frozen=True, eq=False)
class Problem:
    """A trained float64 MLP, its full-batch loss and its parameter vector.

    ``f`` maps ``theta`` (P,) to the mean cross-entropy over ``inputs``
    (N, 64) against ``targets`` (N,). ``model`` is in eval mode and contains
    the same parameters as ``theta``.
    """

    model: nn.Sequential
    inputs: Tensor
    targets: Tensor
    f: LossFunction
    theta: Tensor

    @property
    def parameter_count(self) -> int:
        return self.theta.numel()


def load_digits() -> tuple[Tensor, Tensor]:
    """Return the standardized digits training split: x (1437, 64) f64, y (1437,)."""
    split = to_tensors(
        load_split(BuiltinDatasetSpec(name="digits")),
        torch.device("cpu"),
        dtype=torch.float64,
    )
    return split.train_x, split.train_y


def train_mlp(
    hidden: int,
    inputs: Tensor,
    targets: Tensor,
    *,
    seed: int = 0,
    steps: int = 50,
    learning_rate: float = 1e-2,
) -> nn.Sequential:
    """Build a 64 -> hidden -> 10 ReLU MLP and train it briefly with full-batch Adam.

    A short run leaves the point between initialization and a minimum, so its
    Hessian has eigenvalues of both signs. The model is float64 and in eval
    mode on return, with ``.grad`` cleared so that no later library reads
    stale gradients.
    """
    torch.manual_seed(seed)
    model = build_mlp(MlpSpec(hidden_sizes=[hidden]), FEATURES, CLASSES)
    model = model.to(torch.float64)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


def make_problem(
    hidden: int, inputs: Tensor, targets: Tensor, *, seed: int = 0
) -> Problem:
    """Train the MLP of width ``hidden`` and build its cross-entropy loss."""
    model = train_mlp(hidden, inputs, targets, seed=seed)
    f = make_loss_function(model, LossName.CROSS_ENTROPY, inputs, targets)
    theta, _ = flatten_parameters(model)
    return Problem(model, inputs, targets, f, theta)


def reverse_over_reverse_hessian(
    f: LossFunction, theta: Tensor, chunk_size: int
) -> Tensor:
    """Build the symmetrized Hessian (P, P) from vmapped reverse-over-reverse rows.

    ``torch.func.vjp`` records the gradient's graph once, and each chunk of
    ``chunk_size`` basis vectors is then one batched pullback through it. This
    is how ``LossObjective.hessian`` in worker/analysis/objective.py builds the
    Hessian, with chunks of 64 by default.
    """
    p = theta.numel()
    hessian = theta.new_empty((p, p))
    _, pullback = vjp(grad(f), theta)
    batched = vmap(pullback)
    for start in range(0, p, chunk_size):
        stop = min(start + chunk_size, p)
        rows = torch.arange(stop - start)
        basis = theta.new_zeros((stop - start, p))
        basis[rows, rows + start] = 1
        hessian[start:stop] = batched(basis)[0]
    return (hessian + hessian.T) / 2


def parameter_count(hidden: int) -> int:
    """Return P of the 64 -> hidden -> 10 MLP: 65 h + 10 (h + 1)."""
    return (FEATURES + 1) * hidden + (hidden + 1) * CLASSES


@dataclass(frozen=True)
class Sample:
    """One timed block: wall and process CPU seconds per call."""

    wall_s: float
    cpu_s: float


def time_call(function: Callable[[], object], repeats: int = 1) -> Sample:
    """Time ``repeats`` calls of ``function`` and return the cost of one.

    CPU time is the process's user and system time over all its threads. On
    a machine shared with other jobs it moves less with their load than wall
    time does, because time spent waiting for a core is not counted. As in
    :mod:`timeit`, Python's cyclic garbage collector is off while the calls
    run, so a collection that earlier allocations triggered is not charged to
    whichever contender happens to be running.
    """
    gc.collect()
    gc.disable()
    try:
        wall_started = time.perf_counter()
        cpu_started = time.process_time()
        for _ in range(repeats):
            function()
        cpu_s = time.process_time() - cpu_started
        wall_s = time.perf_counter() - wall_started
    finally:
        gc.enable()
    return Sample(wall_s=wall_s / repeats, cpu_s=cpu_s / repeats)


def calibrate_repeats(function: Callable[[], object], block_s: float) -> int:
    """Return how many calls of ``function`` fill about ``block_s`` seconds.

    One warm-up call runs first, so lazy initialization stays out of the
    estimate.
    """
    function()
    once_s = time_call(function).wall_s
    return max(1, round(block_s / max(once_s, 1e-9)))


@dataclass
class Timings:
    """Seconds per call of one contender, one entry per round."""

    wall_s: list[float]
    cpu_s: list[float]

    def add(self, sample: Sample) -> None:
        self.wall_s.append(sample.wall_s)
        self.cpu_s.append(sample.cpu_s)

    def scaled(self, factor: float) -> "Timings":
        """Return these timings multiplied by ``factor``, for per-vector costs."""
        return Timings(
            [t * factor for t in self.wall_s], [t * factor for t in self.cpu_s]
        )


def interleaved_times(
    contenders: dict[str, Callable[[], object]],
    rounds: int,
    *,
    block_s: float = 0.05,
) -> dict[str, Timings]:
    """Time each contender once per round, in a rotating order.

    Each timed block repeats a contender enough times to last about
    ``block_s`` seconds, so short calls are not lost in timer resolution.
    The start of the order shifts by one each round, so no contender always
    runs right after the same neighbour.
    """
    repeats = {name: calibrate_repeats(fn, block_s) for name, fn in contenders.items()}
    names = list(contenders)
    times = {name: Timings([], []) for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].add(time_call(contenders[name], repeats[name]))
    return times


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Return median(numerator) / median(denominator)."""
    return statistics.median(numerator) / statistics.median(denominator)


def compare(contender: Timings, baseline: Timings) -> dict[str, float]:
    """Return the contender's time over the baseline's, per round and overall.

    Round i of both ran close together, so ``wall_ratio`` and ``cpu_ratio``
    are medians of the per-round ratios, and ``wall_q25`` and ``wall_q75``
    the quartiles of the wall ratios, which show how much the ratio moved with
    the machine's load. ``wall_ratio_of_medians`` divides the two medians
    instead.
    """
    wall = [a / b for a, b in zip(contender.wall_s, baseline.wall_s, strict=True)]
    cpu = [a / b for a, b in zip(contender.cpu_s, baseline.cpu_s, strict=True)]
    if len(wall) > 1:
        q25, _, q75 = statistics.quantiles(wall, n=4)
    else:
        q25 = q75 = wall[0]
    return {
        "wall_ratio": statistics.median(wall),
        "cpu_ratio": statistics.median(cpu),
        "wall_q25": q25,
        "wall_q75": q75,
        "wall_ratio_of_medians": median_ratio(contender.wall_s, baseline.wall_s),
        "contender_wall_s": statistics.median(contender.wall_s),
        "baseline_wall_s": statistics.median(baseline.wall_s),
    }


def cpu_model() -> str:
    """Return the first ``model name`` in /proc/cpuinfo, or the platform's name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Describe the machine and library versions behind a result file."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }


def write_results(name: str, args: argparse.Namespace, payload: dict[str, Any]) -> Path:
    """Write ``payload`` and the machine info to bench/results/NAME.json.

    Runs with non-default settings get a suffix per setting, for example
    NAME.quick.json for ``--quick``, so a smoke run or a variant never
    replaces the numbers of a default run.
    """
    suffixes = []
    if args.quick:
        suffixes.append("quick")
    if args.threads != 1:
        suffixes.append(f"threads{args.threads}")
    if args.retain_heap:
        suffixes.append("retain-heap")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / ".".join([name, *suffixes, "json"])
    document = {
        "benchmark": name,
        "quick": args.quick,
        "retain_heap": args.retain_heap,
        "created_unix_s": time.time(),
        "machine": machine_info(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Lay out ``rows`` under ``headers`` as a fixed-width text table."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [
        max(len(header), *(len(row[i]) for row in cells))
        for i, header in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "met" if met else "not met"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--quick``, ``--threads`` and ``--retain-heap`` to ``parser``."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: fewer rounds and sizes, results go to NAME.quick.json",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help=(
            "torch intra-op threads (default 1, because on a shared machine a "
            "parallel region waits for its slowest thread, which another job "
            "may have descheduled)"
        ),
    )
    parser.add_argument(
        "--retain-heap",
        action="store_true",
        help="keep freed memory in glibc's heap instead of unmapping it",
    )


def retain_heap() -> None:
    """Make glibc malloc keep freed memory instead of returning it to the OS.

    Sets M_MMAP_THRESHOLD to 4 GiB and M_TRIM_THRESHOLD to 64 GiB with
    ``mallopt``, as the environment variables MALLOC_MMAP_THRESHOLD_ and
    MALLOC_TRIM_THRESHOLD_ would. By default glibc serves blocks above a
    dynamic threshold (128 KiB to 32 MiB) with mmap and unmaps them on free,
    so every vmapped chunk with tensors of tens of MiB pays page faults
    again. Raises SystemExit where glibc is not the C library.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as error:
        raise SystemExit(f"--retain-heap needs glibc: {error}") from error
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not libc.mallopt(m_mmap_threshold, 2**32 - 1) or not libc.mallopt(
        m_trim_threshold, 2**36
    ):
        raise SystemExit("--retain-heap: glibc mallopt rejected the thresholds")


def apply_settings(args: argparse.Namespace) -> None:
    """Apply ``--threads`` and ``--retain-heap``, rejecting thread counts below 1."""
    if args.threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.retain_heap:
        retain_heap()
