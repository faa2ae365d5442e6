"""Dataset, model and loss parts of the spec, validated without PyTorch."""

from typing import Any

import pytest
from pydantic import ValidationError

from saddlepoint.datasets import DATASETS, DatasetInfo, DatasetName, Task
from saddlepoint.spec import (
    BuiltinDatasetSpec,
    DatasetNotResolved,
    ExperimentSpec,
    Limits,
    LossName,
    MlpSpec,
    UploadedDatasetInfo,
    check_limits,
    plan_model,
)

DATASET_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
SHA256 = "ab" * 32
LIMITS = Limits(max_exact_parameters=5000, max_total_steps=1_000_000)


def layers(*items: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "layers", "layers": list(items)}


def linear(out_features: int, **fields: Any) -> dict[str, Any]:
    return {"kind": "linear", "out_features": out_features, **fields}


def conv(out_channels: int, **fields: Any) -> dict[str, Any]:
    return {"kind": "conv2d", "out_channels": out_channels, **fields}


FLATTEN = {"kind": "flatten"}


def uploaded(classes: int | None, samples: int = 100, **fields: Any) -> dict[str, Any]:
    metadata = {
        "samples": samples,
        "features": 4,
        "classes": classes,
        "sha256": SHA256,
        **fields,
    }
    return {"name": "uploaded", "id": DATASET_ID, "metadata": metadata}


def errors_of(spec: dict[str, Any]) -> dict[str, str]:
    """Validate ``spec`` and return each error's dotted location and message."""
    with pytest.raises(ValidationError) as caught:
        ExperimentSpec.model_validate(spec)
    return {
        ".".join(str(part) for part in error["loc"]): error["msg"]
        for error in caught.value.errors()
    }


INVALID = [
    ({"dataset": {"name": "mnist"}}, "dataset.name", "use one of digits"),
    ({"dataset": {"name": 3}}, "dataset.name", "unknown dataset 3"),
    ({"dataset": {"name": "moons", "samples": 5}}, "dataset.samples", "10"),
    ({"dataset": {"name": "moons", "samples": 10**6}}, "dataset.samples", "100000"),
    ({"dataset": {"name": "moons", "noise": -0.1}}, "dataset.noise", "0"),
    ({"dataset": {"name": "moons", "seed": -1}}, "dataset.seed", "0"),
    ({"dataset": {"name": "moons", "classes": 3}}, "dataset.classes", "Extra"),
    ({"dataset": {"name": "circles", "factor": 1.0}}, "dataset.factor", "less than 1"),
    ({"dataset": {"name": "blobs", "classes": 1}}, "dataset.classes", "2"),
    ({"dataset": {"name": "blobs", "features": 0}}, "dataset.features", "1"),
    ({"dataset": {"name": "spirals", "turns": 0}}, "dataset.turns", "0.25"),
    (
        {"dataset": {"name": "polynomial", "coefficients": []}},
        "dataset.coefficients",
        "at least 1",
    ),
    (
        {"dataset": {"name": "polynomial", "coefficients": [1e9]}},
        "dataset.coefficients.0",
        "100",
    ),
    (
        {"dataset": {"name": "blobs", "samples": 30, "classes": 20}},
        "dataset.validation_fraction",
        "at least 20 on each side",
    ),
    (
        {"dataset": {"name": "uploaded", "id": "not-an-id"}},
        "dataset.id",
        "not a dataset id",
    ),
    ({"dataset": {"name": "uploaded"}}, "dataset.id", "Field required"),
    ({"dataset": {"name": "sinc"}, "loss": "cross_entropy"}, "loss", 'use "mse"'),
    ({"dataset": uploaded(None), "loss": "cross_entropy"}, "loss", 'use "mse"'),
    ({"model": {"kind": "cnn"}}, "model.kind", "use one of mlp, layers"),
    ({"model": {"layers": []}}, "model.layers", "Extra inputs"),
    ({"model": {"activation": "swish"}}, "model.activation", "gelu"),
    ({"model": layers()}, "model.layers", "at least 1"),
    ({"model": layers({"kind": "conv3d"})}, "model.layers.0.kind", "conv2d"),
    ({"model": layers({"out_features": 3})}, "model.layers.0.kind", "needs a 'kind'"),
    ({"model": layers(linear(0))}, "model.layers.0.out_features", "1"),
    ({"model": layers(linear(10, bias=3))}, "model.layers.0.bias", "boolean"),
    (
        {"model": layers({"kind": "dropout", "p": 1.0}, linear(10))},
        "model.layers.0.p",
        "less than 1",
    ),
    (
        {"model": layers(conv(4, kernel_size=0), FLATTEN, linear(10))},
        "model.layers.0.kernel_size",
        "1",
    ),
    (
        {"model": layers(conv(4, kernel_size=9), FLATTEN, linear(10))},
        "model.layers.0.kernel_size",
        "kernel_size 9 is larger than the input 8 x 8",
    ),
    (
        {
            "model": layers(
                conv(4),
                {"kind": "relu"},
                {"kind": "max_pool2d"},
                conv(2, kernel_size=5),
                FLATTEN,
                linear(10),
            )
        },
        "model.layers.3.kernel_size",
        "kernel_size 5 is larger than the input 3 x 3",
    ),
    (
        {"model": layers({"kind": "max_pool2d", "kernel_size": 2, "padding": 2})},
        "model.layers.0.padding",
        "more than half of kernel_size 2; use padding at most 1",
    ),
    (
        {
            "model": layers(
                {"kind": "max_pool2d", "kernel_size": 3, "padding": 2}, linear(10)
            )
        },
        "model.layers.0.padding",
        "more than half of kernel_size 3",
    ),
    (
        {"dataset": {"name": "iris"}, "model": layers(conv(2), FLATTEN, linear(3))},
        "model.layers.0",
        "dataset iris has no image shape",
    ),
    (
        {"model": layers(linear(16), conv(2), FLATTEN, linear(10))},
        "model.layers.1",
        "put conv2d and max_pool2d layers before flatten",
    ),
    (
        {"model": layers(conv(2), linear(10))},
        "model.layers.1",
        'add {"kind": "flatten"} before it',
    ),
    (
        {"model": layers(linear(16), {"kind": "relu"}, linear(7), {"kind": "tanh"})},
        "model.layers.2.out_features",
        "set out_features of the last linear layer to 10",
    ),
    (
        {"model": layers(conv(2))},
        "model.layers",
        'end the list with {"kind": "flatten"}, {"kind": "linear", "out_features": 10}',
    ),
    (
        {"dataset": {"name": "sinc"}, "model": layers(linear(8), FLATTEN)},
        "model.layers",
        "needs 1 (1 prediction per sample for regression)",
    ),
    (
        {"model": layers(linear(10, init={"kind": "orthogonal"}))},
        "model.layers.0.init.kind",
        "use one of default, zeros",
    ),
    (
        {"model": layers(linear(10, init={"kind": "normal", "std": 0}))},
        "model.layers.0.init.std",
        "greater than 0",
    ),
    (
        {"model": layers(linear(10, init={"kind": "xavier", "distribution": "t"}))},
        "model.layers.0.init.distribution",
        "uniform",
    ),
    (
        {"model": layers(linear(10, init={"kind": "kaiming", "mode": "fan"}))},
        "model.layers.0.init.mode",
        "fan_in",
    ),
    (
        {"model": layers(linear(10, init={"kind": "constant", "value": 1e7}))},
        "model.layers.0.init.value",
        "1000000",
    ),
    (
        {"model": {"init": {"kind": "values", "weight": [[1.0]]}}},
        "model.init",
        '{"kind": "layers"',
    ),
    (
        {"model": layers(linear(2, init={"kind": "values", "weight": [[1], [2, 3]]}))},
        "model.layers.0.init.weight",
        "regular array",
    ),
    (
        {"model": layers(linear(2, init={"kind": "values", "weight": [["a"]]}))},
        "model.layers.0.init.weight",
        "must be numbers",
    ),
    (
        {"model": layers(linear(2, init={"kind": "values", "weight": [[True]]}))},
        "model.layers.0.init.weight",
        "must be numbers",
    ),
    (
        {"model": layers(linear(2, init={"kind": "values", "weight": [[1e9]]}))},
        "model.layers.0.init.weight",
        "magnitude at most",
    ),
    (
        {"model": layers(linear(2, init={"kind": "values", "weight": [[[[[1]]]]]}))},
        "model.layers.0.init.weight",
        "at most 4 dimensions",
    ),
    (
        {
            "model": layers(
                linear(10, init={"kind": "values", "weight": [[0.0] * 64] * 9})
            )
        },
        "model.layers.0.init.weight",
        "weight has shape (9, 64) but this linear layer needs (10, 64)",
    ),
    (
        {
            "model": layers(
                linear(10, init={"kind": "values", "weight": [[0.0] * 64] * 10})
            )
        },
        "model.layers.0.init.bias",
        "bias is required",
    ),
    (
        {
            "model": layers(
                linear(
                    10,
                    bias=False,
                    init={
                        "kind": "values",
                        "weight": [[0.0] * 64] * 10,
                        "bias": [0.0] * 10,
                    },
                )
            )
        },
        "model.layers.0.init.bias",
        "must be left out",
    ),
    (
        {
            "model": layers(
                linear(
                    10,
                    init={
                        "kind": "values",
                        "weight": [[0.0] * 64] * 10,
                        "bias": [0.0] * 3,
                    },
                )
            )
        },
        "model.layers.0.init.bias",
        "bias has 3 values but the layer has 10 outputs",
    ),
    (
        {
            "model": layers(
                conv(2, kernel_size=2, init={"kind": "values", "weight": [[1.0]]}),
                FLATTEN,
                linear(10),
            )
        },
        "model.layers.0.init.weight",
        "(out_channels, in_channels, kernel_size, kernel_size)",
    ),
    (
        {
            "model": layers(linear(16), {"kind": "batch_norm"}, linear(10)),
            "batch_size": 1,
        },
        "batch_size",
        "batch_norm on flat features needs at least 2 samples per batch",
    ),
    (
        {
            "model": layers(linear(16), {"kind": "batch_norm"}, linear(10)),
            "batch_size": 2,
        },
        "batch_size",
        "use batch_size 3",
    ),
    ({"dataset": uploaded(3, samples=40), "batch_size": 40}, "batch_size", "1 to 32"),
    (
        {"dataset": uploaded(None, image_shape=[1, 2, 3])},
        "dataset.metadata",
        "image_shape (1, 2, 3) has 6 values but each sample has 4 features",
    ),
]


@pytest.mark.parametrize(("spec", "field", "fragment"), INVALID)
def test_invalid_spec_names_field(
    spec: dict[str, Any], field: str, fragment: str
) -> None:
    errors = errors_of(spec)

    assert field in errors, errors
    assert fragment in errors[field]


VALID = [
    {},
    {"dataset": {"name": "moons", "samples": 200, "noise": 0.3, "seed": 4}},
    {"dataset": {"name": "circles"}},
    {"dataset": {"name": "blobs", "classes": 5, "features": 3}},
    {"dataset": {"name": "spirals", "classes": 4, "turns": 2.5}},
    {"dataset": {"name": "sinc", "samples": 50}},
    {"dataset": {"name": "polynomial", "coefficients": [1, 0, -2]}},
    {"dataset": {"validation_fraction": 0.3}},
    {"dataset": uploaded(3)},
    {"dataset": uploaded(None)},
    {"model": layers(linear(10))},
    {"model": layers({"kind": "max_pool2d"}, FLATTEN, linear(10))},
    {"model": layers(linear(16), {"kind": "batch_norm"}, linear(10)), "batch_size": 3},
    {"model": layers(conv(2), {"kind": "batch_norm"}, FLATTEN, linear(10))},
    {"model": {"hidden_sizes": [8], "init": {"kind": "xavier"}}},
]


@pytest.mark.parametrize("spec", VALID)
def test_valid_spec_round_trips(spec: dict[str, Any]) -> None:
    parsed = ExperimentSpec.model_validate(spec)
    again = ExperimentSpec.model_validate_json(parsed.model_dump_json())

    assert again == parsed


def test_dataset_name_defaults_to_digits() -> None:
    spec = ExperimentSpec.model_validate({"dataset": {"split_seed": 3}})

    assert isinstance(spec.dataset, BuiltinDatasetSpec)
    assert spec.dataset.name == DatasetName.DIGITS
    assert spec.dataset.split_seed == 3


def test_model_kind_defaults_to_mlp() -> None:
    spec = ExperimentSpec.model_validate({"model": {"hidden_sizes": [4]}})

    assert isinstance(spec.model, MlpSpec)
    assert spec.parameter_count == 64 * 4 + 4 + 4 * 10 + 10


@pytest.mark.parametrize(
    ("dataset", "loss"),
    [
        ({"name": "digits"}, LossName.CROSS_ENTROPY),
        ({"name": "moons"}, LossName.CROSS_ENTROPY),
        ({"name": "sinc"}, LossName.MSE),
        ({"name": "polynomial"}, LossName.MSE),
        (uploaded(None), LossName.MSE),
        (uploaded(2), LossName.CROSS_ENTROPY),
    ],
)
def test_default_loss_follows_task(dataset: dict[str, Any], loss: LossName) -> None:
    spec = ExperimentSpec.model_validate({"dataset": dataset})

    assert spec.loss == loss


def test_mse_on_classification_is_allowed() -> None:
    spec = ExperimentSpec.model_validate({"dataset": {"name": "moons"}, "loss": "mse"})

    assert spec.loss == LossName.MSE
    assert spec.dataset_info.task == Task.CLASSIFICATION


@pytest.mark.parametrize(
    ("dataset", "features", "classes"),
    [
        ({"name": "moons", "samples": 123}, 2, 2),
        ({"name": "circles"}, 2, 2),
        ({"name": "blobs", "classes": 6, "features": 9}, 9, 6),
        ({"name": "spirals", "classes": 5}, 2, 5),
        ({"name": "sinc"}, 1, None),
        ({"name": "polynomial"}, 1, None),
    ],
)
def test_synthetic_info_without_data(
    dataset: dict[str, Any], features: int, classes: int | None
) -> None:
    info = ExperimentSpec.model_validate({"dataset": dataset}).dataset_info

    assert info.features == features
    assert info.classes == classes
    assert info.samples == dataset.get("samples", info.samples)


def test_regression_outputs_one_value() -> None:
    spec = ExperimentSpec.model_validate(
        {"dataset": {"name": "sinc"}, "model": {"hidden_sizes": [20, 20]}}
    )

    assert spec.dataset_info.outputs == 1
    assert spec.parameter_count == (1 * 20 + 20) + (20 * 20 + 20) + (20 + 1)
    assert spec.model_plan.output_shape == (1,)


def test_batch_size_uses_synthetic_samples() -> None:
    spec = ExperimentSpec.model_validate(
        {"dataset": {"name": "moons", "samples": 100}, "batch_size": "full"}
    )

    assert spec.resolved_batch_size == 80
    assert spec.steps_per_epoch == 1
    message = errors_of(
        {"dataset": {"name": "moons", "samples": 100}, "batch_size": 81}
    )
    assert "1 to 80" in message["batch_size"]


def test_uploaded_without_metadata_defers_checks() -> None:
    spec = ExperimentSpec.model_validate(
        {"dataset": {"name": "uploaded", "id": DATASET_ID}, "batch_size": 10**6}
    )

    assert spec.dataset.resolved_info() is None
    with pytest.raises(DatasetNotResolved, match="unknown until the API"):
        _ = spec.total_steps
    with pytest.raises(DatasetNotResolved):
        check_limits(spec, LIMITS)


def test_uploaded_metadata_sets_shape() -> None:
    spec = ExperimentSpec.model_validate(
        {"dataset": uploaded(3, samples=200), "batch_size": 16}
    )

    assert spec.dataset.train_samples == 160
    assert spec.steps_per_epoch == 10
    assert spec.parameter_count == 4 * 32 + 32 + 32 * 3 + 3


def test_uploaded_metadata_rejects_bad_fields() -> None:
    with pytest.raises(ValidationError):
        UploadedDatasetInfo.model_validate(
            {"samples": 10, "features": 2, "classes": 1, "sha256": SHA256}
        )
    with pytest.raises(ValidationError):
        UploadedDatasetInfo.model_validate(
            {"samples": 10, "features": 2, "classes": 2, "sha256": "xyz"}
        )


def test_dataset_info_checks_image_shape() -> None:
    with pytest.raises(ValueError, match="image_shape"):
        DatasetInfo(samples=1, features=10, classes=2, image_shape=(1, 3, 3))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # conv 1->3, 3x3 with padding 1: 27 + 3; flatten 3*8*8 -> 10.
        (layers(conv(3, padding=1), FLATTEN, linear(10)), 30 + 192 * 10 + 10),
        # pool 8x8 -> 4x4, conv 1->2 with a 2x2 kernel, stride 2: 8 + 2, 2*2*2 -> 10.
        (
            layers(
                {"kind": "max_pool2d"},
                conv(2, kernel_size=2, stride=2),
                FLATTEN,
                linear(10),
            ),
            10 + 8 * 10 + 10,
        ),
        (
            layers(linear(32, bias=False), {"kind": "batch_norm"}, linear(10)),
            2048 + 64 + 330,
        ),
        (
            layers(linear(32), {"kind": "batch_norm", "affine": False}, linear(10)),
            2080 + 330,
        ),
    ],
)
def test_parameter_count_by_hand(model: dict[str, Any], expected: int) -> None:
    spec = ExperimentSpec.model_validate({"model": model})

    assert spec.parameter_count == expected


def test_plan_records_image_reshape() -> None:
    spec = ExperimentSpec.model_validate(
        {"model": layers({"kind": "relu"}, conv(2), FLATTEN, linear(10))}
    )
    plan = spec.model_plan

    assert [planned.reshape_input for planned in plan.layers] == [
        False,
        True,
        False,
        False,
    ]
    assert plan.layers[1].input_shape == (1, 8, 8)
    assert plan.layers[1].output_shape == (2, 6, 6)
    assert plan.max_activation_size == 72


def test_plan_mlp_shapes() -> None:
    plan = plan_model(MlpSpec(hidden_sizes=[3]), DATASETS[DatasetName.IRIS], "iris")

    assert [planned.output_shape for planned in plan.layers] == [(3,), (3,), (3,)]
    assert plan.parameter_count == 4 * 3 + 3 + 3 * 3 + 3


def test_limits_name_layers_field() -> None:
    spec = ExperimentSpec.model_validate(
        {"model": layers(linear(512), linear(10)), "analysis": {"method": "exact"}}
    )
    violations = check_limits(spec, LIMITS)

    assert [violation.field for violation in violations] == ["model.layers"]
    assert "analysis.enabled" in violations[0].message
    assert violations[0].value == 64 * 512 + 512 + 512 * 10 + 10


def test_limits_cap_parameters_without_analysis() -> None:
    spec = ExperimentSpec.model_validate(
        {"model": layers(linear(4096), linear(10)), "analysis": {"enabled": False}}
    )
    limits = Limits(
        max_exact_parameters=10, max_total_steps=10**6, max_parameters=100_000
    )
    violations = check_limits(spec, limits)

    assert len(violations) == 1
    assert "trains at most 100000" in violations[0].message


def test_limits_cap_activation_values() -> None:
    spec = ExperimentSpec.model_validate(
        {
            "model": layers(conv(64, padding=1), FLATTEN, linear(10)),
            "analysis": {"enabled": False},
        }
    )
    limits = Limits(
        max_exact_parameters=10,
        max_total_steps=10**6,
        max_activation_values=1_000_000,
    )
    violations = check_limits(spec, limits)

    # 1,437 training samples times 64 * 8 * 8 values after the conv layer.
    assert len(violations) == 1
    assert str(1437 * 4096) in violations[0].message
