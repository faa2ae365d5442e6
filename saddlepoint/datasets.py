"""Catalogue of dataset shapes and the train/validation split sizes.

The API validates specs against these facts without loading any data, so the
numbers for the scikit-learn datasets must match what scikit-learn ships. A
worker test loads each dataset and checks them. Synthetic and uploaded
datasets describe themselves from their spec (see ``saddlepoint.spec.data``).
"""

import math
from dataclasses import dataclass
from enum import StrEnum


class Task(StrEnum):
    """Kind of target: class indices (classification) or real numbers (regression)."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class DatasetName(StrEnum):
    DIGITS = "digits"
    IRIS = "iris"
    WINE = "wine"
    BREAST_CANCER = "breast_cancer"
    MOONS = "moons"
    CIRCLES = "circles"
    BLOBS = "blobs"
    SPIRALS = "spirals"
    SINC = "sinc"
    POLYNOMIAL = "polynomial"
    UPLOADED = "uploaded"


@dataclass(frozen=True)
class DatasetInfo:
    """Shape of a dataset: samples, input features, and classes or none.

    ``classes`` is None for a regression task, which has one real-valued
    target per sample. ``image_shape`` is (channels, height, width) when each
    row of F features is an image stored row-major, so F equals
    channels * height * width. Convolution layers need it.
    """

    samples: int
    features: int
    classes: int | None
    image_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.image_shape is not None and math.prod(self.image_shape) != (
            self.features
        ):
            raise ValueError(
                f"image_shape {self.image_shape} has {math.prod(self.image_shape)} "
                f"values but each sample has {self.features} features"
            )

    @property
    def task(self) -> Task:
        return Task.REGRESSION if self.classes is None else Task.CLASSIFICATION

    @property
    def outputs(self) -> int:
        """Width of the model output: one logit per class, or one prediction."""
        return 1 if self.classes is None else self.classes


@dataclass(frozen=True)
class BuiltinDatasetInfo(DatasetInfo):
    """A scikit-learn dataset. All four are classification tasks."""

    classes: int


# The scikit-learn datasets, whose shapes are fixed.
DATASETS: dict[DatasetName, BuiltinDatasetInfo] = {
    DatasetName.DIGITS: BuiltinDatasetInfo(
        samples=1797, features=64, classes=10, image_shape=(1, 8, 8)
    ),
    DatasetName.IRIS: BuiltinDatasetInfo(samples=150, features=4, classes=3),
    DatasetName.WINE: BuiltinDatasetInfo(samples=178, features=13, classes=3),
    DatasetName.BREAST_CANCER: BuiltinDatasetInfo(samples=569, features=30, classes=2),
}


def split_sizes(samples: int, validation_fraction: float) -> tuple[int, int]:
    """Return (train, validation) sample counts for a split.

    The validation count rounds up, as scikit-learn's ``train_test_split`` does
    for a float ``test_size``; the worker passes the integer count to it so both
    sides agree exactly.
    """
    validation = math.ceil(samples * validation_fraction)
    return samples - validation, validation
