import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

from saddlepoint.datasets import DATASETS, DatasetName, split_sizes
from saddlepoint.spec import DatasetSpec
from worker.engine.data import load_raw, load_split, to_tensors


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
    spec = DatasetSpec(name=name, validation_fraction=0.25)
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
    split = load_split(DatasetSpec(name=name))
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
    split = load_split(DatasetSpec(name=DatasetName.DIGITS))

    np.testing.assert_array_equal(split.train_x[:, 0], 0.0)
    np.testing.assert_array_equal(split.val_x[:, 0], 0.0)


def test_standardization_uses_train_statistics() -> None:
    spec = DatasetSpec(name=DatasetName.IRIS, split_seed=3)
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
    first = load_split(DatasetSpec(name=DatasetName.WINE, split_seed=7))
    second = load_split(DatasetSpec(name=DatasetName.WINE, split_seed=7))

    np.testing.assert_array_equal(first.train_x, second.train_x)
    np.testing.assert_array_equal(first.train_y, second.train_y)
    np.testing.assert_array_equal(first.val_x, second.val_x)
    np.testing.assert_array_equal(first.val_y, second.val_y)


def test_other_seed_other_split() -> None:
    first = load_split(DatasetSpec(name=DatasetName.WINE, split_seed=7))
    second = load_split(DatasetSpec(name=DatasetName.WINE, split_seed=8))

    assert first.val_x.shape == second.val_x.shape
    assert not np.array_equal(first.val_x, second.val_x)
    assert not np.array_equal(first.train_x, second.train_x)


@pytest.mark.parametrize("name", list(DATASETS))
def test_stratified_validation_has_all_classes(name: DatasetName) -> None:
    info = DATASETS[name]
    split = load_split(DatasetSpec(name=name, validation_fraction=0.05))
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
    split = load_split(DatasetSpec(name=DatasetName.IRIS))
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
    split = load_split(DatasetSpec(name=DatasetName.IRIS))
    tensors = to_tensors(split, torch.device("cpu"))
    before = float(split.train_x[0, 0])

    tensors.train_x[0, 0] += 1.0

    assert float(split.train_x[0, 0]) == before
