import math

import pytest
import torch
from torch import nn

from saddlepoint.spec import Activation, LossName, MlpSpec
from worker.engine.losses import compute_loss, count_correct
from worker.engine.models import build_mlp


@pytest.mark.parametrize(
    ("hidden_sizes", "features", "outputs"),
    [
        ([], 4, 3),
        ([32], 64, 10),
        ([8, 8], 13, 3),
        ([5, 7, 3], 30, 2),
        ([1], 1, 1),
    ],
)
def test_parameter_count_matches_built_model(
    hidden_sizes: list[int], features: int, outputs: int
) -> None:
    spec = MlpSpec(hidden_sizes=hidden_sizes)
    model = build_mlp(spec, features, outputs)
    built = sum(parameter.numel() for parameter in model.parameters())

    assert built == spec.parameter_count(features, outputs)


def test_parameter_count_by_hand() -> None:
    # 4·6 + 6 weights and biases into the hidden layer, 6·3 + 3 out of it.
    assert MlpSpec(hidden_sizes=[6]).parameter_count(4, 3) == 51


@pytest.mark.parametrize("activation", list(Activation))
def test_mlp_layers_and_output_shape(activation: Activation) -> None:
    spec = MlpSpec(hidden_sizes=[5, 4], activation=activation)
    model = build_mlp(spec, 3, 2)
    linear_layers = [layer for layer in model if isinstance(layer, nn.Linear)]

    assert [layer.out_features for layer in linear_layers] == [5, 4, 2]
    assert model(torch.zeros(7, 3)).shape == (7, 2)
    # No activation follows the output layer: the network returns logits.
    assert isinstance(model[-1], nn.Linear)


def test_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([2, 1])
    expected = 0.0
    for row, target in zip(logits.tolist(), targets.tolist(), strict=True):
        log_normalizer = math.log(sum(math.exp(value) for value in row))
        expected += -(row[target] - log_normalizer)
    expected /= 2

    loss = compute_loss(LossName.CROSS_ENTROPY, logits, targets)

    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_mse_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([2, 1])
    squared_errors = 0.0
    for row, target in zip(logits.tolist(), targets.tolist(), strict=True):
        normalizer = sum(math.exp(value) for value in row)
        for column, value in enumerate(row):
            probability = math.exp(value) / normalizer
            one_hot = 1.0 if column == target else 0.0
            squared_errors += (probability - one_hot) ** 2
    expected = squared_errors / 6

    loss = compute_loss(LossName.MSE, logits, targets)

    assert loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss", list(LossName))
@pytest.mark.parametrize(
    ("logits_shape", "targets_shape"),
    [((2, 3), (3,)), ((2, 3), (2, 1)), ((6,), (6,)), ((2, 3, 1), (2,))],
)
def test_mismatched_shapes_raise(
    loss: LossName, logits_shape: tuple[int, ...], targets_shape: tuple[int, ...]
) -> None:
    logits = torch.zeros(logits_shape)
    targets = torch.zeros(targets_shape, dtype=torch.int64)

    with pytest.raises(ValueError, match="expected logits"):
        compute_loss(loss, logits, targets)


def test_count_correct() -> None:
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    targets = torch.tensor([1, 1, 1])

    assert count_correct(logits, targets) == 2
