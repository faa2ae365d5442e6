"""Models built from specs, their parameter counts and init, and the losses."""

import math
from typing import Any

import pytest
import torch
from torch import nn

from saddlepoint.datasets import DATASETS, DatasetInfo, DatasetName, Task
from saddlepoint.spec import (
    Activation,
    ExperimentSpec,
    LayersSpec,
    LossName,
    MlpSpec,
    plan_model,
)
from worker.engine.data import load_split, to_tensors
from worker.engine.losses import compute_accuracy, compute_loss, count_correct
from worker.engine.models import build_mlp, build_model


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


# Layer lists: parameter counts, shapes and builds

DIGITS = DATASETS[DatasetName.DIGITS]
IRIS = DATASETS[DatasetName.IRIS]
SINC = DatasetInfo(samples=200, features=1, classes=None)
IMAGES = DatasetInfo(samples=50, features=3 * 9 * 7, classes=4, image_shape=(3, 9, 7))

LAYER_CASES: list[tuple[DatasetInfo, list[dict[str, Any]]]] = [
    (IRIS, [{"kind": "linear", "out_features": 3}]),
    (IRIS, [{"kind": "linear", "out_features": 3, "bias": False}]),
    (
        IRIS,
        [
            {"kind": "linear", "out_features": 16},
            {"kind": "batch_norm"},
            {"kind": "gelu"},
            {"kind": "dropout", "p": 0.1},
            {"kind": "linear", "out_features": 8, "bias": False},
            {"kind": "batch_norm", "affine": False},
            {"kind": "tanh"},
            {"kind": "linear", "out_features": 3},
            {"kind": "identity"},
        ],
    ),
    (
        SINC,
        [
            {"kind": "linear", "out_features": 20},
            {"kind": "sigmoid"},
            {"kind": "linear", "out_features": 1},
        ],
    ),
    (
        DIGITS,
        [
            {"kind": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
            {"kind": "batch_norm"},
            {"kind": "relu"},
            {"kind": "max_pool2d"},
            {"kind": "conv2d", "out_channels": 6, "kernel_size": 2, "bias": False},
            {"kind": "flatten"},
            {"kind": "linear", "out_features": 10},
        ],
    ),
    (
        DIGITS,
        [
            {"kind": "dropout"},
            {"kind": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1},
            {"kind": "conv2d", "out_channels": 5, "kernel_size": 4, "stride": 3},
            {"kind": "flatten"},
            {"kind": "linear", "out_features": 10},
        ],
    ),
    (
        IMAGES,
        [
            {"kind": "conv2d", "out_channels": 2, "kernel_size": 5, "padding": 2},
            {"kind": "conv2d", "out_channels": 3, "kernel_size": 3, "stride": 2},
            {"kind": "batch_norm", "affine": False},
            {"kind": "flatten"},
            {"kind": "batch_norm"},
            {"kind": "linear", "out_features": 4},
        ],
    ),
    # A linear model on the digits pixels: the image shape is never used.
    (DIGITS, [{"kind": "linear", "out_features": 10}]),
]


def layers_spec(layers: list[dict[str, Any]]) -> LayersSpec:
    return LayersSpec.model_validate({"kind": "layers", "layers": layers})


@pytest.mark.parametrize(("info", "layers"), LAYER_CASES)
def test_layer_parameter_count_matches_torch(
    info: DatasetInfo, layers: list[dict[str, Any]]
) -> None:
    spec = layers_spec(layers)
    plan = plan_model(spec, info, "test")
    model = build_model(spec, info)
    built = sum(parameter.numel() for parameter in model.parameters())

    assert built == plan.parameter_count


@pytest.mark.parametrize(("info", "layers"), LAYER_CASES)
def test_layer_shapes_match_torch(
    info: DatasetInfo, layers: list[dict[str, Any]]
) -> None:
    plan = plan_model(layers_spec(layers), info, "test")
    model = build_model(layers_spec(layers), info).eval()
    inputs = torch.randn(5, info.features)

    outputs = model(inputs)
    shapes = []
    hidden = inputs
    for module in model:
        hidden = module(hidden)
        if not isinstance(module, nn.Unflatten):
            shapes.append(tuple(hidden.shape[1:]))

    assert outputs.shape == (5, info.outputs)
    assert shapes == [planned.output_shape for planned in plan.layers]


def test_conv_parameter_count_by_hand() -> None:
    spec = layers_spec(LAYER_CASES[4][1])
    # conv 1->4, 3x3: 36 + 4; batch_norm: 8; conv 4->6, 2x2, no bias: 96;
    # 8x8 -> pool 4x4 -> conv 3x3, flatten 54 -> linear 10: 540 + 10.
    assert plan_model(spec, DIGITS, "digits").parameter_count == 40 + 8 + 96 + 550


def test_image_input_unflattened_once() -> None:
    model = build_model(layers_spec(LAYER_CASES[4][1]), DIGITS)
    unflatten = [module for module in model if isinstance(module, nn.Unflatten)]

    assert len(unflatten) == 1
    assert isinstance(model[0], nn.Unflatten)
    assert tuple(unflatten[0].unflattened_size) == (1, 8, 8)


def test_batch_norm_kind_follows_input() -> None:
    model = build_model(layers_spec(LAYER_CASES[6][1]), IMAGES)
    norms = [
        module
        for module in model
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]

    assert isinstance(norms[0], nn.BatchNorm2d)
    assert norms[0].num_features == 3
    assert isinstance(norms[1], nn.BatchNorm1d)
    assert norms[1].num_features == 3 * 4 * 3


def test_mlp_build_model_matches_build_mlp() -> None:
    spec = MlpSpec(hidden_sizes=[7, 5], activation=Activation.GELU)
    torch.manual_seed(0)
    first = build_model(spec, IRIS)
    torch.manual_seed(0)
    second = build_mlp(spec, IRIS.features, 3)

    for left, right in zip(first.parameters(), second.parameters(), strict=True):
        torch.testing.assert_close(left, right)
    assert isinstance(first[3], nn.GELU)


def test_conv_model_on_digits_trains_one_step() -> None:
    spec = ExperimentSpec.model_validate(
        {
            "model": {"kind": "layers", "layers": LAYER_CASES[4][1]},
            "optimizer": {"name": "sgd", "learning_rate": 0.1},
        }
    )
    split = to_tensors(load_split(spec.dataset), torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(spec.model, spec.dataset_info)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs, targets = split.train_x[:64], split.train_y[:64]
    before = {name: value.detach().clone() for name, value in model.named_parameters()}

    loss = compute_loss(spec.loss, model(inputs), targets)
    loss.backward()
    optimizer.step()

    changed = {
        name
        for name, value in model.named_parameters()
        if not torch.equal(before[name], value)
    }
    assert model(inputs).shape == (64, 10)
    assert math.isfinite(loss.item())
    # The first conv's bias is followed by batch_norm, which removes any
    # constant per channel, so its gradient is zero up to rounding.
    assert changed >= set(before) - {"1.bias"}
    assert sum(p.numel() for p in model.parameters()) == spec.parameter_count


# Initialization


def linear_with(init: dict[str, Any], out_features: int = 64, bias: bool = True):
    spec = layers_spec(
        [{"kind": "linear", "out_features": out_features, "bias": bias, "init": init}]
    )
    info = DatasetInfo(samples=10, features=128, classes=out_features)
    torch.manual_seed(0)
    return build_model(spec, info)[0]


def test_zeros_init_is_exact() -> None:
    layer = linear_with({"kind": "zeros"})

    assert torch.count_nonzero(layer.weight) == 0
    assert torch.count_nonzero(layer.bias) == 0


def test_constant_init_is_exact() -> None:
    layer = linear_with({"kind": "constant", "value": -0.25, "bias": 1.5})

    assert torch.all(layer.weight == -0.25)
    assert torch.all(layer.bias == 1.5)


def test_values_init_is_exact() -> None:
    weight = [[1.0, -2.0, 3.5], [0.0, 0.25, -1e-3]]
    spec = layers_spec(
        [
            {
                "kind": "linear",
                "out_features": 2,
                "init": {"kind": "values", "weight": weight, "bias": [0.5, -0.5]},
            }
        ]
    )
    info = DatasetInfo(samples=10, features=3, classes=2)
    model = build_model(spec, info)

    # The model is float32, so each value is its nearest float32.
    assert torch.equal(model[0].weight, torch.tensor(weight, dtype=torch.float32))
    assert model[0].bias.tolist() == [0.5, -0.5]


def test_values_init_for_conv_is_exact() -> None:
    weight = [[[[1, 2], [3, 4]]], [[[-1, 0], [0, 1]]]]
    spec = layers_spec(
        [
            {
                "kind": "conv2d",
                "out_channels": 2,
                "kernel_size": 2,
                "bias": False,
                "init": {"kind": "values", "weight": weight},
            },
            {"kind": "flatten"},
            {"kind": "linear", "out_features": 10},
        ]
    )
    model = build_model(spec, DIGITS)

    assert model[1].weight.tolist() == weight
    assert model[1].bias is None


def test_values_init_starts_at_chosen_loss() -> None:
    # One weight w and bias b on a single feature: with w = 2 and b = -1 the
    # prediction for x is 2x - 1, so the loss is known before training.
    spec = layers_spec(
        [
            {
                "kind": "linear",
                "out_features": 1,
                "init": {"kind": "values", "weight": [[2.0]], "bias": [-1.0]},
            }
        ]
    )
    model = build_model(spec, SINC).double()
    x = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)

    loss = compute_loss(LossName.MSE, model(x), y)

    assert loss.item() == pytest.approx((1 + 1 + 9) / 3)


def test_mlp_init_applies_to_every_layer() -> None:
    spec = MlpSpec.model_validate(
        {"hidden_sizes": [4, 3], "init": {"kind": "constant", "value": 0.5}}
    )
    model = build_model(spec, IRIS)
    linear_layers = [module for module in model if isinstance(module, nn.Linear)]

    assert len(linear_layers) == 3
    for layer in linear_layers:
        assert torch.all(layer.weight == 0.5)
        assert torch.all(layer.bias == 0.0)


def test_normal_init_statistics() -> None:
    layer = linear_with(
        {"kind": "normal", "mean": 0.3, "std": 0.05, "bias": 0.1}, out_features=256
    )

    assert layer.weight.mean().item() == pytest.approx(0.3, abs=0.005)
    assert layer.weight.std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.all(layer.bias == 0.1)


@pytest.mark.parametrize(("distribution", "gain"), [("uniform", 1.0), ("normal", 2.0)])
def test_xavier_init_statistics(distribution: str, gain: float) -> None:
    layer = linear_with(
        {"kind": "xavier", "distribution": distribution, "gain": gain},
        out_features=256,
    )
    expected_std = gain * math.sqrt(2.0 / (128 + 256))

    assert layer.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert abs(layer.weight.mean().item()) < 0.1 * expected_std
    assert torch.count_nonzero(layer.bias) == 0
    if distribution == "uniform":
        bound = gain * math.sqrt(6.0 / (128 + 256))
        assert layer.weight.abs().max().item() <= bound


@pytest.mark.parametrize(
    ("fields", "expected_std"),
    [
        ({"distribution": "normal"}, math.sqrt(2.0 / 128)),
        ({"distribution": "uniform"}, math.sqrt(2.0 / 128)),
        ({"mode": "fan_out", "nonlinearity": "linear"}, math.sqrt(1.0 / 256)),
        ({"nonlinearity": "tanh"}, (5 / 3) / math.sqrt(128)),
    ],
)
def test_kaiming_init_statistics(fields: dict[str, Any], expected_std: float) -> None:
    layer = linear_with({"kind": "kaiming", **fields}, out_features=256)

    assert layer.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert torch.count_nonzero(layer.bias) == 0


def test_default_init_follows_seed() -> None:
    first = linear_with({"kind": "default"})
    second = linear_with({})

    torch.testing.assert_close(first.weight, second.weight)
    bound = 1 / math.sqrt(128)
    assert first.weight.abs().max().item() <= bound
    assert first.bias.abs().max().item() <= bound


def test_without_bias_init_sets_weight_only() -> None:
    layer = linear_with({"kind": "constant", "value": 2.0, "bias": 3.0}, bias=False)

    assert layer.bias is None
    assert torch.all(layer.weight == 2.0)


# Losses and tasks


def test_regression_mse_by_hand() -> None:
    outputs = torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)
    targets = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)

    loss = compute_loss(LossName.MSE, outputs, targets)

    assert loss.item() == pytest.approx((0.25 + 0.0 + 4.0) / 3, rel=1e-12)


def test_regression_targets_cast_to_outputs_dtype() -> None:
    outputs = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    targets = torch.tensor([0.0, 1.0], dtype=torch.float32)

    loss = compute_loss(LossName.MSE, outputs, targets)

    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("outputs_shape", "targets_shape"),
    [((4, 1), (4, 1)), ((4,), (4,)), ((4, 2), (4,)), ((4, 1), (3,)), ((1, 4), (4,))],
)
def test_regression_shapes_never_broadcast(
    outputs_shape: tuple[int, ...], targets_shape: tuple[int, ...]
) -> None:
    outputs = torch.zeros(outputs_shape)
    targets = torch.zeros(targets_shape)

    with pytest.raises(ValueError, match=r"expected outputs \(N, 1\)"):
        compute_loss(LossName.MSE, outputs, targets)


def test_cross_entropy_on_regression_targets_raises() -> None:
    with pytest.raises(ValueError, match="use mse"):
        compute_loss(LossName.CROSS_ENTROPY, torch.zeros(3, 1), torch.zeros(3))


@pytest.mark.parametrize("loss", list(LossName))
@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_out_of_range_class_raises(loss: LossName, bad: int) -> None:
    targets = torch.tensor([0, 1, bad])

    with pytest.raises(ValueError, match=f"target {bad} is out of range for 3"):
        compute_loss(loss, torch.zeros(3, 3), targets)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_classification_targets_must_be_int64(dtype: torch.dtype) -> None:
    targets = torch.tensor([0, 1], dtype=dtype)

    with pytest.raises(ValueError, match="must be int64 class indices"):
        compute_loss(LossName.CROSS_ENTROPY, torch.zeros(2, 2), targets)


def test_explicit_task_checks_targets() -> None:
    with pytest.raises(ValueError, match="must be int64"):
        compute_loss(
            LossName.MSE, torch.zeros(2, 2), torch.zeros(2), task=Task.CLASSIFICATION
        )
    with pytest.raises(ValueError, match="must be floating point"):
        compute_loss(
            LossName.MSE,
            torch.zeros(2, 1),
            torch.zeros(2, dtype=torch.int64),
            task=Task.REGRESSION,
        )


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_unusable_target_dtype_raises(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match="targets have dtype"):
        compute_loss(LossName.MSE, torch.zeros(2, 1), torch.zeros(2, dtype=dtype))


def test_accuracy_is_none_for_regression() -> None:
    outputs = torch.tensor([[0.1], [0.9]])

    assert compute_accuracy(outputs, torch.tensor([0.0, 1.0])) is None
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    assert compute_accuracy(logits, torch.tensor([1, 1])) == 0.5


def test_count_correct_rejects_regression_targets() -> None:
    with pytest.raises(ValueError, match="int64"):
        count_correct(torch.zeros(2, 1), torch.zeros(2))
