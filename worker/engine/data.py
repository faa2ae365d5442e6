"""Datasets: load or generate, split, standardize, and move to a device.

The split is seeded by ``split_seed``, so two runs with the same dataset spec
see the same samples. It is stratified by class for classification and a plain
shuffled split for regression. Features are standardized with the mean and
standard deviation of the training split only, so no statistic of the
validation samples leaks into training. Regression targets are used as given.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import redis
import torch
from sklearn.datasets import (
    load_breast_cancer,
    load_digits,
    load_iris,
    load_wine,
    make_blobs,
    make_circles,
    make_moons,
)
from sklearn.model_selection import train_test_split

from saddlepoint.datasets import DATASETS, DatasetName, split_sizes
from saddlepoint.settings import get_settings
from saddlepoint.spec import (
    BlobsSpec,
    BuiltinDatasetSpec,
    CirclesSpec,
    MoonsSpec,
    PolynomialSpec,
    SincSpec,
    SpiralsSpec,
    UploadedDatasetSpec,
)
from saddlepoint.store import DatasetStore

# Each loader returns (features, labels) when called with return_X_y=True.
LOADERS: dict[DatasetName, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    DatasetName.DIGITS: load_digits,
    DatasetName.IRIS: load_iris,
    DatasetName.WINE: load_wine,
    DatasetName.BREAST_CANCER: load_breast_cancer,
}

AnyDatasetSpec = (
    BuiltinDatasetSpec
    | MoonsSpec
    | CirclesSpec
    | BlobsSpec
    | SpiralsSpec
    | SincSpec
    | PolynomialSpec
    | UploadedDatasetSpec
)


class DatasetUnavailable(Exception):
    """An uploaded dataset is missing from the store or differs from the spec."""


@dataclass(frozen=True, eq=False)
class SplitArrays:
    """Standardized train and validation splits as NumPy arrays.

    ``train_x`` is float32 (N_train, F). ``train_y`` (N_train,) is int64 with
    class indices in ``[0, classes)`` for classification, or float32 for
    regression, where ``classes`` is None. ``val_x`` and ``val_y`` match for
    the validation split.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    classes: int | None


@dataclass(frozen=True, eq=False)
class TensorSplit:
    """The fields of :class:`SplitArrays` as tensors on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: int | None


@functools.lru_cache(maxsize=len(DATASETS))
def load_raw(name: DatasetName) -> tuple[np.ndarray, np.ndarray]:
    """Load a scikit-learn dataset: features (N, F) float64, labels (N,) int64.

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


def generate_spirals(spec: SpiralsSpec) -> tuple[np.ndarray, np.ndarray]:
    """Generate spiral arms as the SpiralsSpec docstring defines them.

    Returns points (N, 2) float64 and arm indices (N,) int64, arm by arm.
    """
    rng = np.random.default_rng(spec.seed)
    arms = spec.classes
    counts = [spec.samples // arms + (arm < spec.samples % arms) for arm in range(arms)]
    points, labels = [], []
    for arm, count in enumerate(counts):
        t = np.arange(1, count + 1) / count  # (n_k,) in (0, 1]
        angle = 2 * np.pi * (spec.turns * t + arm / arms)
        arm_points = t[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        points.append(arm_points + spec.noise * rng.standard_normal((count, 2)))
        labels.append(np.full(count, arm, dtype=np.int64))
    return np.concatenate(points), np.concatenate(labels)


def generate_curve(spec: SincSpec | PolynomialSpec) -> tuple[np.ndarray, np.ndarray]:
    """Sample x uniformly from [-1, 1] and y from the spec's curve plus noise.

    Returns x (N, 1) and y (N,), both float64. sinc uses NumPy's
    ``np.sinc(t) = sin(πt) / (πt)`` at t = 5x, which is 1 at x = 0.
    """
    rng = np.random.default_rng(spec.seed)
    x = rng.uniform(-1.0, 1.0, size=spec.samples)
    curve: np.ndarray
    if isinstance(spec, SincSpec):
        curve = np.sinc(5.0 * x)
    else:
        curve = np.polynomial.polynomial.polyval(x, spec.coefficients)
    noise = spec.noise * rng.standard_normal(spec.samples)
    return x[:, None], np.asarray(curve + noise, dtype=np.float64)


def generate_synthetic(
    spec: MoonsSpec | CirclesSpec | BlobsSpec | SpiralsSpec | SincSpec | PolynomialSpec,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate features (N, F) float64 and targets (N,) for a synthetic spec.

    Targets are int64 class indices, or float64 for sinc and polynomial. The
    same spec always gives the same arrays with the same NumPy and
    scikit-learn versions.
    """
    match spec:
        case MoonsSpec():
            x, y = make_moons(spec.samples, noise=spec.noise, random_state=spec.seed)
        case CirclesSpec():
            x, y = make_circles(
                spec.samples,
                noise=spec.noise,
                factor=spec.factor,
                random_state=spec.seed,
            )
        case BlobsSpec():
            x, y = make_blobs(
                spec.samples,
                n_features=spec.features,
                centers=spec.classes,
                cluster_std=spec.noise,
                center_box=(-10.0, 10.0),
                random_state=spec.seed,
            )
        case SpiralsSpec():
            x, y = generate_spirals(spec)
        case SincSpec() | PolynomialSpec():
            return generate_curve(spec)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)


def load_uploaded(
    spec: UploadedDatasetSpec, store: DatasetStore | None = None
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Read an uploaded dataset from the store: X (N, F), y (N,) and classes.

    ``classes`` is None for regression. Without ``store``, opens a Redis
    client from the settings for this call. Raises DatasetUnavailable when
    the dataset was deleted, or when its SHA-256 differs from the one the
    spec recorded at submit time.
    """
    if store is None:
        client = redis.Redis.from_url(get_settings().redis_url, decode_responses=True)
        try:
            return load_uploaded(spec, DatasetStore(client))
        finally:
            client.close()

    loaded = store.load_arrays(spec.id)
    if loaded is None:
        raise DatasetUnavailable(
            f"uploaded dataset {spec.id} is not in the store (was it deleted?); "
            "upload the data again and submit with the new id"
        )
    metadata, x, y = loaded
    if spec.metadata is not None and spec.metadata.sha256 != metadata.sha256:
        raise DatasetUnavailable(
            f"uploaded dataset {spec.id} has SHA-256 {metadata.sha256} but the "
            f"experiment was submitted for {spec.metadata.sha256}"
        )
    return x, y, metadata.classes


def load_dataset(
    spec: AnyDatasetSpec, store: DatasetStore | None = None
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Return the whole dataset before the split: X (N, F), y (N,) and classes.

    ``classes`` is None for a regression dataset, whose y is float64.
    """
    match spec:
        case BuiltinDatasetSpec():
            features, labels = load_raw(spec.name)
            return features, labels, DATASETS[spec.name].classes
        case UploadedDatasetSpec():
            return load_uploaded(spec, store)
    features, targets = generate_synthetic(spec)
    return features, targets, spec.info.classes


def load_split(spec: AnyDatasetSpec, store: DatasetStore | None = None) -> SplitArrays:
    """Split a dataset into train and validation sets and standardize the features.

    The validation count is ``split_sizes(samples, validation_fraction)[1]``,
    passed to ``train_test_split`` as an integer so the sizes match what the API
    computed. Each feature becomes ``(x - mean) / std`` with the training
    split's mean and population standard deviation. A feature that is constant
    in the training split (digits has always-blank pixels) uses std 1, so it
    maps to 0 in training instead of NaN. ``store`` is used only for uploaded
    datasets (see :func:`load_uploaded`).
    """
    features, targets, classes = load_dataset(spec, store)
    _, validation = split_sizes(len(targets), spec.validation_fraction)
    train_x, val_x, train_y, val_y = train_test_split(
        features,
        targets,
        test_size=validation,
        stratify=targets if classes is not None else None,
        random_state=spec.split_seed,
    )

    # Detect constant columns by max == min rather than std == 0, because the
    # mean of a constant column can round away from its value and leave a std
    # of order 1e-16 (NumPy 2.4, a column of 0.1s).
    constant = train_x.max(axis=0) == train_x.min(axis=0)
    mean = np.where(constant, train_x[0], train_x.mean(axis=0))
    std = np.where(constant, 1.0, train_x.std(axis=0))
    target_dtype = np.int64 if classes is not None else np.float32
    return SplitArrays(
        train_x=((train_x - mean) / std).astype(np.float32),
        train_y=np.ascontiguousarray(train_y, dtype=target_dtype),
        val_x=((val_x - mean) / std).astype(np.float32),
        val_y=np.ascontiguousarray(val_y, dtype=target_dtype),
        classes=classes,
    )


def to_tensors(
    split: SplitArrays, device: torch.device, dtype: torch.dtype = torch.float32
) -> TensorSplit:
    """Copy a split onto ``device``: features as ``dtype``, labels as int64.

    Regression targets become ``dtype`` as well.
    """
    target_dtype = torch.int64 if split.classes is not None else dtype
    return TensorSplit(
        train_x=torch.tensor(split.train_x, dtype=dtype, device=device),
        train_y=torch.tensor(split.train_y, dtype=target_dtype, device=device),
        val_x=torch.tensor(split.val_x, dtype=dtype, device=device),
        val_y=torch.tensor(split.val_y, dtype=target_dtype, device=device),
        classes=split.classes,
    )
