"""Catalogue of the built-in datasets and the train/validation split sizes.

The API validates specs against these facts without loading any data, so the
numbers here must match what scikit-learn ships. A worker test loads each
dataset and checks them.
"""

import math
from dataclasses import dataclass
from enum import StrEnum


class DatasetName(StrEnum):
    DIGITS = "digits"
    IRIS = "iris"
    WINE = "wine"
    BREAST_CANCER = "breast_cancer"


@dataclass(frozen=True)
class DatasetInfo:
    """Shape of a classification dataset: samples, input features, classes."""

    samples: int
    features: int
    classes: int


DATASETS: dict[DatasetName, DatasetInfo] = {
    DatasetName.DIGITS: DatasetInfo(samples=1797, features=64, classes=10),
    DatasetName.IRIS: DatasetInfo(samples=150, features=4, classes=3),
    DatasetName.WINE: DatasetInfo(samples=178, features=13, classes=3),
    DatasetName.BREAST_CANCER: DatasetInfo(samples=569, features=30, classes=2),
}


def split_sizes(samples: int, validation_fraction: float) -> tuple[int, int]:
    """Return (train, validation) sample counts for a split.

    The validation count rounds up, as scikit-learn's ``train_test_split`` does
    for a float ``test_size``; the worker passes the integer count to it so both
    sides agree exactly.
    """
    validation = math.ceil(samples * validation_fraction)
    return samples - validation, validation
