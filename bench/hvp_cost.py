"""Cost of one Hessian-vector product relative to one gradient, by method.

Run: .venv/bin/python -m bench.hvp_cost [--quick]

All products are taken at the trained 64 -> 32 -> 10 ReLU MLP (P = 2,410) on
the full digits training split (N = 1,437) in float64. The baseline is one
gradient by ``torch.autograd.grad``: one forward and one backward pass. The
goal is at most 4 such gradients per product. The table also gives each cost
in units of a ``torch.func.grad`` gradient, the way
:func:`worker.analysis.hessian.gradient` computes it, which costs more. The
batched rows apply 64 vectors in one call and report the cost per vector.
"""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, jvp, vjp, vmap

from saddlepoint.spec import LossName
from worker.analysis.hessian import (
    LossFunction,
    flatten_parameters,
    gradient,
    hessian_vector_product,
    make_loss_function,
)
from worker.analysis.linalg import (
    hessian_vector_product_double_backward,
    make_double_backward_operator,
)

try:
    from bench import common
except ModuleNotFoundError:
    # Run as a file, python bench/hvp_cost.py: the repository root is not on
    # the path yet.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import common

GOAL_RATIO = 4.0
BATCH = 64
GRADIENT = "gradient (torch.autograd.grad)"
FUNC_GRADIENT = "gradient (torch.func.grad)"


def reverse_over_reverse_vjp(f: LossFunction, theta: Tensor, v: Tensor) -> Tensor:
    """Return H v as the vector-Jacobian product of ``torch.func.grad(f)``."""
    _, pullback = vjp(grad(f), theta)
    return pullback(v)[0]


def reverse_over_reverse_grad(f: LossFunction, theta: Tensor, v: Tensor) -> Tensor:
    """Return H v as the gradient of the scalar grad(f)(theta) . v."""
    return grad(lambda t: torch.dot(grad(f)(t), v))(theta)


def autograd_gradient(f: LossFunction, theta: Tensor) -> Tensor:
    """Return the gradient by one torch.autograd.grad call, no graph kept."""
    point = theta.detach().requires_grad_(True)
    (result,) = torch.autograd.grad(f(point), point)
    return result


def single_methods(
    f: LossFunction, theta: Tensor, v: Tensor
) -> dict[str, Callable[[], Tensor]]:
    """Build one product H v per method, each a call with no arguments."""
    reused = make_double_backward_operator(f, theta)
    return {
        "forward-over-reverse (jvp of grad)": lambda: hessian_vector_product(
            f, theta, v
        ),
        "reverse-over-reverse (vjp of grad)": lambda: reverse_over_reverse_vjp(
            f, theta, v
        ),
        "reverse-over-reverse (grad of grad.v)": lambda: reverse_over_reverse_grad(
            f, theta, v
        ),
        "double backward, graph built per call": lambda: (
            hessian_vector_product_double_backward(f, theta, v)
        ),
        "double backward, graph reused": lambda: reused(v),
    }


def batched_methods(
    f: LossFunction, theta: Tensor, vectors: Tensor
) -> dict[str, Callable[[], Tensor]]:
    """Build the products H V for ``vectors`` (B, P) per method, (B, P) each."""

    def forward_over_reverse() -> Tensor:
        return vmap(lambda v: jvp(grad(f), (theta,), (v,))[1])(vectors)

    def reverse_over_reverse() -> Tensor:
        _, pullback = vjp(grad(f), theta)
        return vmap(pullback)(vectors)[0]

    def double_backward() -> Tensor:
        point = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(point), point, create_graph=True)
        (products,) = torch.autograd.grad(
            g, point, grad_outputs=vectors, is_grads_batched=True
        )
        return products

    point = theta.detach().requires_grad_(True)
    (kept_gradient,) = torch.autograd.grad(f(point), point, create_graph=True)

    def double_backward_reused() -> Tensor:
        (products,) = torch.autograd.grad(
            kept_gradient,
            point,
            grad_outputs=vectors,
            is_grads_batched=True,
            retain_graph=True,
        )
        return products

    return {
        f"forward-over-reverse, vmap x{BATCH}": forward_over_reverse,
        f"reverse-over-reverse, vmap x{BATCH}": reverse_over_reverse,
        f"double backward, batched x{BATCH}, graph built per call": double_backward,
        f"double backward, batched x{BATCH}, graph reused": double_backward_reused,
    }


def max_differences(
    methods: dict[str, Callable[[], Tensor]], reference: Tensor
) -> dict[str, float]:
    """Return each method's max |difference| from ``reference``."""
    return {
        name: float((method() - reference).abs().max())
        for name, method in methods.items()
    }


def torch_mse_loss_function(problem: common.Problem) -> LossFunction:
    """Build the classification MSE loss through ``F.mse_loss(reduction="mean")``.

    It compares softmax probabilities with one-hot targets, as the project's
    ``mse`` loss does, but calls torch's own ``F.mse_loss``.
    """
    _, unflatten = flatten_parameters(problem.model)
    one_hot = F.one_hot(problem.targets, common.CLASSES).to(problem.inputs.dtype)

    def loss(theta: Tensor) -> Tensor:
        logits = functional_call(problem.model, unflatten(theta), (problem.inputs,))
        return F.mse_loss(torch.softmax(logits, dim=1), one_hot, reduction="mean")

    return loss


def try_product(
    product: Callable[[LossFunction, Tensor, Tensor], Tensor],
    f: LossFunction,
    theta: Tensor,
) -> str:
    """Return "works", or the first line of the error ``product`` raises on ``f``."""
    try:
        product(f, theta, torch.ones_like(theta))
    except RuntimeError as error:
        return f"fails: {str(error).splitlines()[0]}"
    return "works"


def check_mse(problem: common.Problem) -> dict[str, str]:
    """Try products through torch's MSE and through the project's MSE loss."""
    torch_loss = torch_mse_loss_function(problem)
    project_loss = make_loss_function(
        problem.model, LossName.MSE, problem.inputs, problem.targets
    )
    theta = problem.theta
    return {
        "forward-over-reverse, torch F.mse_loss": try_product(
            hessian_vector_product, torch_loss, theta
        ),
        "reverse-over-reverse, torch F.mse_loss": try_product(
            reverse_over_reverse_vjp, torch_loss, theta
        ),
        "double backward, torch F.mse_loss": try_product(
            hessian_vector_product_double_backward, torch_loss, theta
        ),
        "forward-over-reverse, project mse loss": try_product(
            hessian_vector_product, project_loss, theta
        ),
    }


def measure(problem: common.Problem, rounds: int) -> dict[str, Any]:
    """Time all methods against the gradient, interleaved, and check agreement."""
    f, theta = problem.f, problem.theta
    generator = torch.Generator().manual_seed(1)
    vectors = torch.randn(BATCH, theta.numel(), generator=generator, dtype=theta.dtype)
    single = single_methods(f, theta, vectors[0])
    batched = batched_methods(f, theta, vectors)

    reference = hessian_vector_product(f, theta, vectors[0])
    batched_reference = vmap(lambda v: hessian_vector_product(f, theta, v))(vectors)
    agreement = max_differences(single, reference)
    agreement.update(max_differences(batched, batched_reference))

    contenders: dict[str, Callable[[], object]] = {
        GRADIENT: lambda: autograd_gradient(f, theta),
        FUNC_GRADIENT: lambda: gradient(f, theta),
        **single,
        **batched,
    }
    times = common.interleaved_times(contenders, rounds, block_s=0.2)
    baseline = times[GRADIENT]

    rows = []
    for name, samples in times.items():
        per_vector = BATCH if name in batched else 1
        per_call = samples.scaled(1 / per_vector)
        func_ratios = common.compare(per_call, times[FUNC_GRADIENT])
        rows.append(
            {
                "method": name,
                "vectors_per_call": per_vector,
                **common.compare(per_call, baseline),
                "wall_ratio_to_func_grad": func_ratios["wall_ratio"],
                "max_abs_diff": agreement.get(name),
            }
        )
    return {"rows": rows, "reference_max_abs": float(reference.abs().max())}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pick the fastest single and batched method and judge the 4x goal."""
    products = [row for row in rows if not row["method"].startswith("gradient")]
    single = [row for row in products if row["vectors_per_call"] == 1]
    batched = [row for row in products if row["vectors_per_call"] > 1]
    fastest_single = min(single, key=lambda row: row["wall_ratio"])
    fastest_batched = min(batched, key=lambda row: row["wall_ratio"])
    goal = {row["method"]: row["wall_ratio"] <= GOAL_RATIO for row in products}
    return {
        "goal_ratio": GOAL_RATIO,
        "goal_met": goal,
        "fastest_single": fastest_single["method"],
        "fastest_batched_per_vector": fastest_batched["method"],
    }


def print_report(result: dict[str, Any], summary: dict[str, Any]) -> None:
    rows = []
    for row in result["rows"]:
        met = summary["goal_met"].get(row["method"])
        rows.append(
            [
                row["method"],
                f"{row['wall_ratio']:.2f}",
                f"{row['wall_q25']:.2f}-{row['wall_q75']:.2f}",
                f"{row['cpu_ratio']:.2f}",
                f"{row['wall_ratio_to_func_grad']:.2f}",
                "" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.1e}",
                "" if met is None else common.verdict(met),
            ]
        )
    headers = [
        "method",
        "wall x grad",
        "rounds q25-q75",
        "CPU x grad",
        "wall x func.grad",
        "max |diff|",
        "goal <= 4x",
    ]
    print(common.format_table(headers, rows))
    print(f"fastest single product: {summary['fastest_single']}")
    print(f"fastest per vector, batched: {summary['fastest_batched_per_vector']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument(
        "--rounds", type=int, help="timing rounds (default 15, 3 with --quick)"
    )
    args = parser.parse_args(argv)
    common.apply_settings(args)
    rounds = args.rounds or (3 if args.quick else 15)

    inputs, targets = common.load_digits()
    problem = common.make_problem(32, inputs, targets)
    print(
        f"P = {problem.parameter_count}, N = {inputs.shape[0]}, float64, "
        f"{rounds} interleaved rounds, torch threads {torch.get_num_threads()}"
    )
    result = measure(problem, rounds)
    summary = summarize(result["rows"])
    mse = check_mse(problem)
    print_report(result, summary)
    for case, outcome in mse.items():
        print(f"{case}: {outcome}")

    path = common.write_results(
        "hvp_cost",
        args,
        {
            "parameters": problem.parameter_count,
            "samples": inputs.shape[0],
            "rounds": rounds,
            "batch": BATCH,
            **result,
            **summary,
            "mse_forward_over_reverse": mse,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
