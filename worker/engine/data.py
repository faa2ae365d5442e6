"""Built-in datasets: load, split, standardize, and move to a device.

The split is stratified and seeded by ``DatasetSpec.split_seed``, so two runs
with the same dataset spec see the same samples. Features are standardized with
the mean and standard deviation of the training split only, so no statistic of
the validation samples leaks into training.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.model_selection import train_test_split

from saddlepoint.datasets import DATASETS, DatasetName, split_sizes
from saddlepoint.spec import DatasetSpec

# Each loader returns (features, labels) when called with return_X_y=True.
LOADERS: dict[DatasetName, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    DatasetName.DIGITS: load_digits,
    DatasetName.IRIS: load_iris,
    DatasetName.WINE: load_wine,
    DatasetName.BREAST_CANCER: load_breast_cancer,
}


@dataclass(frozen=True, eq=False)
class SplitArrays:
    """Standardized train and validation splits as NumPy arrays.

    ``train_x`` is float32 (N_train, F) and ``train_y`` int64 (N_train,) with
    class indices in ``[0, classes)``; ``val_x`` and ``val_y`` match for the
    validation split.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    classes: int


@dataclass(frozen=True, eq=False)
class TensorSplit:
    """The fields of :class:`SplitArrays` as tensors on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: int


@functools.lru_cache(maxsize=len(DATASETS))
def load_raw(name: DatasetName) -> tuple[np.ndarray, np.ndarray]:
    """Load features (N, F) float64 and labels (N,) int64 from scikit-learn.

    The arrays are cached for the life of the process and marked read-only, so
    a caller that needs to change them must copy them first.
    """
    features, labels = LOADERS[name](return_X_y=True)
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    _check_catalogue(name, features, labels)
    features.setflags(write=False)
    labels.setflags(write=False)
    return features, labels


def _check_catalogue(
    name: DatasetName, features: np.ndarray, labels: np.ndarray
) -> None:
    # The API sizes batches and steps from the catalogue without loading data,
    # so a scikit-learn release that ships other shapes must fail loudly here.
    info = DATASETS[name]
    shape = (features.shape[0], features.shape[1], int(labels.max()) + 1)
    expected = (info.samples, info.features, info.classes)
    if shape != expected:
        raise RuntimeError(
            f"dataset {name.value} loaded with (samples, features, classes) "
            f"{shape} but the catalogue in saddlepoint.datasets says {expected}; "
            "update the catalogue to match the installed scikit-learn"
        )


def load_split(spec: DatasetSpec) -> SplitArrays:
    """Split a dataset into stratified train and validation sets and standardize.

    The validation count is ``split_sizes(samples, validation_fraction)[1]``,
    passed to ``train_test_split`` as an integer so the sizes match what the API
    computed. Each feature becomes ``(x - mean) / std`` with the training
    split's mean and population standard deviation. A feature that is constant
    in the training split (digits has always-blank pixels) uses std 1, so it
    maps to 0 in training instead of NaN.
    """
    features, labels = load_raw(spec.name)
    _, validation = split_sizes(len(labels), spec.validation_fraction)
    train_x, val_x, train_y, val_y = train_test_split(
        features,
        labels,
        test_size=validation,
        stratify=labels,
        random_state=spec.split_seed,
    )

    # Detect constant columns by max == min rather than std == 0, because the
    # mean of a constant column can round away from its value and leave a std
    # of order 1e-16 (NumPy 2.4, a column of 0.1s).
    constant = train_x.max(axis=0) == train_x.min(axis=0)
    mean = np.where(constant, train_x[0], train_x.mean(axis=0))
    std = np.where(constant, 1.0, train_x.std(axis=0))
    return SplitArrays(
        train_x=((train_x - mean) / std).astype(np.float32),
        train_y=np.ascontiguousarray(train_y, dtype=np.int64),
        val_x=((val_x - mean) / std).astype(np.float32),
        val_y=np.ascontiguousarray(val_y, dtype=np.int64),
        classes=DATASETS[spec.name].classes,
    )


def to_tensors(
    split: SplitArrays, device: torch.device, dtype: torch.dtype = torch.float32
) -> TensorSplit:
    """Copy a split onto ``device``: features as ``dtype``, labels as int64."""
    return TensorSplit(
        train_x=torch.tensor(split.train_x, dtype=dtype, device=device),
        train_y=torch.tensor(split.train_y, dtype=torch.int64, device=device),
        val_x=torch.tensor(split.val_x, dtype=dtype, device=device),
        val_y=torch.tensor(split.val_y, dtype=torch.int64, device=device),
        classes=split.classes,
    )
