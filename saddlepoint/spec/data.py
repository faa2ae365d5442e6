"""Dataset part of the spec."""

from pydantic import Field

from saddlepoint.datasets import DATASETS, DatasetName, split_sizes
from saddlepoint.spec.base import UINT32_MAX, StrictModel


class DatasetSpec(StrictModel):
    """Built-in dataset and its stratified train/validation split."""

    name: DatasetName = Field(
        DatasetName.DIGITS, description="Built-in scikit-learn dataset."
    )
    validation_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description="Share of samples held out for validation, rounded up.",
    )
    split_seed: int = Field(
        0, ge=0, le=UINT32_MAX, description="Seed of the train/validation split."
    )

    @property
    def train_samples(self) -> int:
        return split_sizes(DATASETS[self.name].samples, self.validation_fraction)[0]
