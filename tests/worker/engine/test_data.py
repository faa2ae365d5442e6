"""Built-in, synthetic and uploaded datasets: shapes, splits, determinism."""

from typing import Any

import numpy as np
import pytest
import redis
import torch
from pydantic import TypeAdapter
from sklearn.model_selection import train_test_split

from saddlepoint.datasets import DATASETS, DatasetName, Task, split_sizes
from saddlepoint.settings import Settings
from saddlepoint.spec import (
    BuiltinDatasetSpec,
    DatasetSpec,
    ExperimentSpec,
    PolynomialSpec,
    SincSpec,
    SpiralsSpec,
    UploadedDatasetSpec,
)
from saddlepoint.store import DatasetStore, NewDataset
from worker.engine.data import (
    DatasetUnavailable,
    generate_curve,
    generate_spirals,
    generate_synthetic,
    load_dataset,
    load_raw,
    load_split,
    to_tensors,
)

DATASET_SPEC: TypeAdapter[Any] = TypeAdapter(DatasetSpec)


def dataset_spec(fields: dict[str, Any]) -> Any:
    return DATASET_SPEC.validate_python(fields)


SYNTHETIC = [
    {"name": "moons", "samples": 300, "noise": 0.2, "seed": 3},
    {"name": "circles", "samples": 301, "noise": 0.05, "factor": 0.3, "seed": 4},
    {"name": "blobs", "samples": 250, "classes": 5, "features": 7, "seed": 5},
    {"name": "spirals", "samples": 299, "classes": 3, "turns": 2.0, "seed": 6},
    {"name": "sinc", "samples": 120, "noise": 0.1, "seed": 7},
    {"name": "polynomial", "samples": 90, "coefficients": [1.0, 2.0], "seed": 8},
]


@pytest.mark.parametrize("name", list(DATASETS))
def test_raw_dataset_matches_catalogue(name: DatasetName) -> None:
    info = DATASETS[name]
    features, labels = load_raw(name)

    assert features.shape == (info.samples, info.features)
    assert labels.shape == (info.samples,)
    assert set(labels.tolist()) == set(range(info.classes))


@pytest.mark.parametrize("name", list(DATASETS))
def test_split_sizes_and_dtypes(name: DatasetName) -> None:
    info = DATASETS[name]
    spec = BuiltinDatasetSpec(name=name, validation_fraction=0.25)
    train, validation = split_sizes(info.samples, 0.25)
    split = load_split(spec)

    assert split.train_x.shape == (train, info.features)
    assert split.train_y.shape == (train,)
    assert split.val_x.shape == (validation, info.features)
    assert split.val_y.shape == (validation,)
    assert train == spec.train_samples
    assert split.classes == info.classes
    assert split.train_x.dtype == np.float32
    assert split.val_x.dtype == np.float32
    assert split.train_y.dtype == np.int64
    assert split.val_y.dtype == np.int64


@pytest.mark.parametrize("name", list(DATASETS))
def test_train_features_standardized(name: DatasetName) -> None:
    split = load_split(BuiltinDatasetSpec(name=name))
    train_x = split.train_x.astype(np.float64)
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)

    assert np.isfinite(split.train_x).all()
    assert np.isfinite(split.val_x).all()
    np.testing.assert_allclose(mean, 0.0, atol=1e-5)
    # A constant training feature maps to 0, every other one to unit std.
    constant = np.ptp(train_x, axis=0) == 0
    np.testing.assert_allclose(std[~constant], 1.0, atol=1e-5)
    np.testing.assert_array_equal(train_x[:, constant], 0.0)
    if name == DatasetName.DIGITS:
        assert constant.any()


def test_constant_feature_maps_to_zero() -> None:
    # Pixel 0 of every digits image is blank, so its training std is 0.
    split = load_split(BuiltinDatasetSpec(name=DatasetName.DIGITS))

    np.testing.assert_array_equal(split.train_x[:, 0], 0.0)
    np.testing.assert_array_equal(split.val_x[:, 0], 0.0)


def test_standardization_uses_train_statistics() -> None:
    spec = BuiltinDatasetSpec(name=DatasetName.IRIS, split_seed=3)
    features, labels = load_raw(DatasetName.IRIS)
    raw_train, raw_val, _, _ = train_test_split(
        features, labels, test_size=30, stratify=labels, random_state=3
    )
    mean = raw_train.mean(axis=0)
    std = raw_train.std(axis=0)
    split = load_split(spec)

    np.testing.assert_allclose(split.train_x, (raw_train - mean) / std, atol=1e-6)
    np.testing.assert_allclose(split.val_x, (raw_val - mean) / std, atol=1e-6)
    assert not np.allclose(split.val_x.mean(axis=0), 0.0, atol=1e-3)


def test_same_seed_same_split() -> None:
    first = load_split(BuiltinDatasetSpec(name=DatasetName.WINE, split_seed=7))
    second = load_split(BuiltinDatasetSpec(name=DatasetName.WINE, split_seed=7))

    np.testing.assert_array_equal(first.train_x, second.train_x)
    np.testing.assert_array_equal(first.train_y, second.train_y)
    np.testing.assert_array_equal(first.val_x, second.val_x)
    np.testing.assert_array_equal(first.val_y, second.val_y)


def test_other_seed_other_split() -> None:
    first = load_split(BuiltinDatasetSpec(name=DatasetName.WINE, split_seed=7))
    second = load_split(BuiltinDatasetSpec(name=DatasetName.WINE, split_seed=8))

    assert first.val_x.shape == second.val_x.shape
    assert not np.array_equal(first.val_x, second.val_x)
    assert not np.array_equal(first.train_x, second.train_x)


@pytest.mark.parametrize("name", list(DATASETS))
def test_stratified_validation_has_all_classes(name: DatasetName) -> None:
    info = DATASETS[name]
    split = load_split(BuiltinDatasetSpec(name=name, validation_fraction=0.05))
    _, labels = load_raw(name)
    expected = np.bincount(labels) / len(labels)
    observed = np.bincount(split.val_y, minlength=info.classes) / len(split.val_y)

    assert set(split.val_y.tolist()) == set(range(info.classes))
    assert set(split.train_y.tolist()) == set(range(info.classes))
    # Stratification keeps each class share within one sample of the whole.
    np.testing.assert_allclose(observed, expected, atol=1 / len(split.val_y))


def test_raw_arrays_are_read_only() -> None:
    features, labels = load_raw(DatasetName.IRIS)

    with pytest.raises(ValueError, match="read-only"):
        features[0, 0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        labels[0] = 0


def test_to_tensors_dtypes_and_values() -> None:
    split = load_split(BuiltinDatasetSpec(name=DatasetName.IRIS))
    tensors = to_tensors(split, torch.device("cpu"), dtype=torch.float64)

    assert tensors.train_x.dtype == torch.float64
    assert tensors.val_x.dtype == torch.float64
    assert tensors.train_y.dtype == torch.int64
    assert tensors.val_y.dtype == torch.int64
    assert tensors.train_x.device.type == "cpu"
    assert tensors.classes == split.classes
    np.testing.assert_array_equal(tensors.train_x.numpy(), split.train_x)
    np.testing.assert_array_equal(tensors.val_y.numpy(), split.val_y)


def test_to_tensors_copies_arrays() -> None:
    split = load_split(BuiltinDatasetSpec(name=DatasetName.IRIS))
    tensors = to_tensors(split, torch.device("cpu"))
    before = float(split.train_x[0, 0])

    tensors.train_x[0, 0] += 1.0

    assert float(split.train_x[0, 0]) == before


def test_digits_image_shape_matches_features() -> None:
    info = DATASETS[DatasetName.DIGITS]
    features, _ = load_raw(DatasetName.DIGITS)

    assert info.image_shape == (1, 8, 8)
    # Row-major 8 x 8: row 1 of the first image starts at feature 8.
    images = features.reshape(-1, 8, 8)
    np.testing.assert_array_equal(images[0, 1], features[0, 8:16])


@pytest.mark.parametrize("fields", SYNTHETIC, ids=lambda fields: fields["name"])
def test_synthetic_dataset_matches_its_info(fields: dict[str, Any]) -> None:
    spec = dataset_spec(fields)
    info = spec.info
    features, targets, classes = load_dataset(spec)

    assert features.shape == (info.samples, info.features)
    assert features.dtype == np.float64
    assert targets.shape == (info.samples,)
    assert classes == info.classes
    assert np.isfinite(features).all()
    if info.task == Task.CLASSIFICATION:
        assert targets.dtype == np.int64
        assert set(targets.tolist()) == set(range(info.classes))
    else:
        assert targets.dtype == np.float64


@pytest.mark.parametrize("fields", SYNTHETIC, ids=lambda fields: fields["name"])
def test_synthetic_split_sizes_and_dtypes(fields: dict[str, Any]) -> None:
    spec = dataset_spec({**fields, "validation_fraction": 0.3})
    info = spec.info
    train, validation = split_sizes(info.samples, 0.3)
    split = load_split(spec)

    assert split.train_x.shape == (train, info.features)
    assert split.val_x.shape == (validation, info.features)
    assert split.train_y.shape == (train,)
    assert split.val_y.shape == (validation,)
    assert train == spec.train_samples
    assert split.classes == info.classes
    expected = np.int64 if info.task == Task.CLASSIFICATION else np.float32
    assert split.train_y.dtype == expected
    assert split.val_y.dtype == expected


@pytest.mark.parametrize("fields", SYNTHETIC, ids=lambda fields: fields["name"])
def test_synthetic_same_seed_same_data(fields: dict[str, Any]) -> None:
    first_x, first_y, _ = load_dataset(dataset_spec(fields))
    second_x, second_y, _ = load_dataset(dataset_spec(fields))

    np.testing.assert_array_equal(first_x, second_x)
    np.testing.assert_array_equal(first_y, second_y)


@pytest.mark.parametrize("fields", SYNTHETIC, ids=lambda fields: fields["name"])
def test_synthetic_other_seed_other_data(fields: dict[str, Any]) -> None:
    first_x, _, _ = load_dataset(dataset_spec(fields))
    second_x, _, _ = load_dataset(dataset_spec({**fields, "seed": 99}))

    assert not np.array_equal(first_x, second_x)


def test_sinc_without_noise_matches_formula() -> None:
    spec = SincSpec(name=DatasetName.SINC, samples=500, noise=0.0, seed=1)
    x, y = generate_curve(spec)
    expected = np.sin(5 * np.pi * x[:, 0]) / (5 * np.pi * x[:, 0])

    assert x.shape == (500, 1)
    assert x.min() >= -1.0
    assert x.max() <= 1.0
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_sinc_noise_has_requested_std() -> None:
    clean = SincSpec(name=DatasetName.SINC, samples=20_000, noise=0.0, seed=2)
    noisy = SincSpec(name=DatasetName.SINC, samples=20_000, noise=0.3, seed=2)
    x, y_clean = generate_curve(clean)
    x_noisy, y_noisy = generate_curve(noisy)

    np.testing.assert_array_equal(x, x_noisy)
    residual = y_noisy - y_clean
    assert abs(residual.mean()) < 0.01
    assert residual.std() == pytest.approx(0.3, rel=0.03)


def test_polynomial_matches_formula() -> None:
    coefficients = [0.5, -1.0, 0.0, 2.0]
    spec = PolynomialSpec(
        name=DatasetName.POLYNOMIAL, samples=50, coefficients=coefficients
    )
    x, y = generate_curve(spec)
    t = x[:, 0]

    np.testing.assert_allclose(y, 0.5 - t + 2.0 * t**3, rtol=1e-12, atol=1e-12)


def test_spirals_match_formula_without_noise() -> None:
    spec = SpiralsSpec(
        name=DatasetName.SPIRALS, samples=10, classes=2, turns=1.0, noise=0.0
    )
    points, labels = generate_spirals(spec)

    # Arm 1 of 2, point i = 0 of 5: t = 1/5, angle 2π (1/5 + 1/2).
    t, angle = 0.2, 2 * np.pi * (0.2 + 0.5)
    np.testing.assert_allclose(points[5], [t * np.cos(angle), t * np.sin(angle)])
    # The last point of every arm lies on the unit circle.
    np.testing.assert_allclose(np.linalg.norm(points[[4, 9]], axis=1), 1.0)
    assert labels.tolist() == [0] * 5 + [1] * 5


def test_spirals_split_samples_evenly() -> None:
    spec = SpiralsSpec(name=DatasetName.SPIRALS, samples=11, classes=3)
    _, labels = generate_spirals(spec)

    assert np.bincount(labels).tolist() == [4, 4, 3]


def test_blobs_noise_is_cluster_std() -> None:
    fields = {"name": "blobs", "samples": 6000, "classes": 2, "noise": 0.5}
    features, labels = generate_synthetic(dataset_spec(fields))

    for label in (0, 1):
        cluster = features[labels == label]
        np.testing.assert_allclose(cluster.std(axis=0), 0.5, rtol=0.05)


def test_regression_split_is_not_stratified() -> None:
    # A stratified split of real values would raise in scikit-learn.
    spec = dataset_spec({"name": "sinc", "samples": 40, "split_seed": 3})
    features, targets, _ = load_dataset(spec)
    _, _, train_y, val_y = train_test_split(
        features, targets, test_size=8, random_state=3
    )
    split = load_split(spec)

    np.testing.assert_allclose(split.train_y, train_y.astype(np.float32))
    np.testing.assert_allclose(split.val_y, val_y.astype(np.float32))


def test_regression_tensors_use_feature_dtype() -> None:
    split = load_split(dataset_spec({"name": "sinc"}))
    tensors = to_tensors(split, torch.device("cpu"), dtype=torch.float64)

    assert tensors.train_y.dtype == torch.float64
    assert tensors.val_y.dtype == torch.float64
    assert tensors.classes is None


def store_upload(client: redis.Redis, task: Task) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    if task == Task.CLASSIFICATION:
        y = np.repeat(np.arange(4), 10)
    else:
        y = rng.normal(size=40)
    metadata = DatasetStore(client).create(
        NewDataset(x=x, y=y, task=task, source="npz", feature_names=["a", "b", "c"])
    )
    return metadata.id, x


@pytest.mark.parametrize("task", list(Task))
def test_uploaded_dataset_loads_from_store(
    redis_client: redis.Redis, task: Task
) -> None:
    dataset_id, x = store_upload(redis_client, task)
    datasets = DatasetStore(redis_client)
    metadata = datasets.get(dataset_id)
    assert metadata is not None
    spec = ExperimentSpec.model_validate(
        {
            "dataset": {
                "name": "uploaded",
                "id": dataset_id,
                "metadata": metadata.spec_info().model_dump(),
            },
            "batch_size": 8,
        }
    ).dataset
    features, _, classes = load_dataset(spec, datasets)
    split = load_split(spec, datasets)

    np.testing.assert_array_equal(features, x)
    assert classes == (4 if task == Task.CLASSIFICATION else None)
    assert split.train_x.shape == (32, 3)
    assert split.val_x.shape == (8, 3)
    if task == Task.CLASSIFICATION:
        assert np.bincount(split.val_y).tolist() == [2, 2, 2, 2]


def test_uploaded_dataset_without_store_uses_settings(
    redis_client: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset_id, x = store_upload(redis_client, Task.REGRESSION)
    monkeypatch.setenv("REDIS_URL", redis_url)
    # get_settings is cached for the process; read the patched environment.
    monkeypatch.setattr("worker.engine.data.get_settings", Settings)
    spec = UploadedDatasetSpec(name=DatasetName.UPLOADED, id=dataset_id)

    features, _, _ = load_dataset(spec)

    np.testing.assert_array_equal(features, x)


def test_deleted_upload_is_unavailable(redis_client: redis.Redis) -> None:
    dataset_id, _ = store_upload(redis_client, Task.REGRESSION)
    datasets = DatasetStore(redis_client)
    datasets.delete(dataset_id)
    spec = UploadedDatasetSpec(name=DatasetName.UPLOADED, id=dataset_id)

    with pytest.raises(DatasetUnavailable, match="not in the store"):
        load_dataset(spec, datasets)


def test_upload_with_other_checksum_is_unavailable(redis_client: redis.Redis) -> None:
    dataset_id, _ = store_upload(redis_client, Task.REGRESSION)
    datasets = DatasetStore(redis_client)
    metadata = datasets.get(dataset_id)
    assert metadata is not None
    info = metadata.spec_info().model_copy(update={"sha256": "0" * 64})
    spec = UploadedDatasetSpec(name=DatasetName.UPLOADED, id=dataset_id, metadata=info)

    with pytest.raises(DatasetUnavailable, match="SHA-256"):
        load_dataset(spec, datasets)
