"""The analysis entry point: method choice, subsets, limits, and exact against
iterative on a digits MLP."""

import pytest
import torch
from torch import nn

from saddlepoint.analysis import AnalysisTrigger, Verdict
from saddlepoint.spec import AnalysisSpec, ExperimentSpec, LossName, MlpSpec
from saddlepoint.spec.analysis import AnalysisMethod
from worker.analysis.analyze import (
    AnalysisTooLarge,
    analyze,
    check_exact_memory,
    choose_method,
    select_samples,
)
from worker.engine.data import load_split, to_tensors
from worker.engine.models import build_mlp


@pytest.mark.parametrize(
    ("method", "parameters", "expected"),
    [
        (AnalysisMethod.AUTO, 100, AnalysisMethod.EXACT),
        (AnalysisMethod.AUTO, 2000, AnalysisMethod.EXACT),
        (AnalysisMethod.AUTO, 2001, AnalysisMethod.LANCZOS),
        (AnalysisMethod.LANCZOS, 10, AnalysisMethod.LANCZOS),
        (AnalysisMethod.EXACT, 4000, AnalysisMethod.EXACT),
    ],
)
def test_choose_method(
    method: AnalysisMethod, parameters: int, expected: AnalysisMethod
) -> None:
    spec = AnalysisSpec(method=method)
    assert choose_method(spec, parameters, 5000, 2000) == expected


def test_exact_over_limit_names_fix() -> None:
    spec = AnalysisSpec(method=AnalysisMethod.EXACT)
    with pytest.raises(AnalysisTooLarge, match="lanczos"):
        choose_method(spec, 6000, 5000, 2000)


def test_exact_memory_check_names_fix() -> None:
    with pytest.raises(AnalysisTooLarge, match="GiB"):
        check_exact_memory(10_000_000, torch.device("cpu"))
    check_exact_memory(100, torch.device("cpu"))


def test_subset_is_fixed_by_seed() -> None:
    inputs = torch.arange(100.0)[:, None]
    targets = torch.arange(100)
    spec = AnalysisSpec(samples=10, subset_seed=3)
    first, first_targets = select_samples(inputs, targets, spec)
    second, _ = select_samples(inputs, targets, spec)
    other, _ = select_samples(inputs, targets, AnalysisSpec(samples=10, subset_seed=4))
    assert first.shape == (10, 1)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert torch.equal(first[:, 0].long(), first_targets)
    assert torch.equal(select_samples(inputs, targets, AnalysisSpec())[0], inputs)


@pytest.fixture(scope="module")
def digits_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A digits MLP (64-8-10, 610 parameters) trained briefly with Adam."""
    dataset = ExperimentSpec.model_validate({"dataset": {"name": "digits"}}).dataset
    split = to_tensors(load_split(dataset), torch.device("cpu"))
    torch.manual_seed(0)
    model = build_mlp(MlpSpec(hidden_sizes=[8], activation="tanh"), 64, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(split.train_x), split.train_y)
        loss.backward()
        optimizer.step()
    return model.eval(), split.train_x[:200], split.train_y[:200]


def test_exact_and_lanczos_extremes_agree(
    digits_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, inputs, targets = digits_model
    limits = {"max_exact_parameters": 5000, "auto_exact_parameters": 5000}
    exact = analyze(
        model, LossName.CROSS_ENTROPY, inputs, targets,
        AnalysisSpec(method=AnalysisMethod.EXACT), **limits,
    ).analysis  # fmt: skip
    spec = AnalysisSpec(method=AnalysisMethod.LANCZOS, top_k=3, lanczos_tolerance=1e-10)
    iterative = analyze(
        model, LossName.CROSS_ENTROPY, inputs, targets, spec, **limits
    ).analysis
    assert iterative.lanczos is not None
    assert iterative.lanczos.converged
    found = torch.tensor(iterative.eigenvalues, dtype=torch.float64)
    every = torch.tensor(exact.eigenvalues, dtype=torch.float64)
    expected = torch.cat([every[:3], every[-3:]])
    scale = float(every.abs().max())
    assert torch.allclose(found, expected, rtol=0, atol=1e-6 * scale)
    assert iterative.min_eigenvalue == pytest.approx(
        exact.min_eigenvalue, abs=1e-6 * scale
    )
    assert iterative.loss == pytest.approx(exact.loss, rel=1e-12)
    assert iterative.verdict == exact.verdict
    assert exact.minimum_ratio is not None
    assert iterative.minimum_ratio is not None
    assert iterative.minimum_ratio_error is not None
    gap = abs(iterative.minimum_ratio - exact.minimum_ratio)
    assert gap <= 2 * iterative.minimum_ratio_error
    assert iterative.trace is not None
    assert iterative.trace.estimate == pytest.approx(float(every.sum()), rel=0.2)
    assert iterative.density is not None
    assert sum(iterative.density.counts) == pytest.approx(
        exact.parameter_count, rel=0.02
    )
    assert iterative.positive_count is None


def test_analysis_records_position_in_run(
    digits_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, inputs, targets = digits_model
    outcome = analyze(
        model, LossName.CROSS_ENTROPY, inputs[:50], targets[:50], AnalysisSpec(),
        max_exact_parameters=5000, auto_exact_parameters=5000,
        index=3, trigger=AnalysisTrigger.EPOCH, epoch=4, step=120,
    )  # fmt: skip
    analysis = outcome.analysis
    assert (analysis.index, analysis.epoch, analysis.step) == (3, 4, 120)
    assert analysis.trigger == AnalysisTrigger.EPOCH
    assert outcome.theta.shape == (analysis.parameter_count,)
    assert analysis.verdict in set(Verdict)
