"""Dataset part of the spec: built-in, synthetic or uploaded, and the split.

Every dataset spec describes its shape without loading data (``resolved_info``),
so the API checks batch sizes and models at submit time. An uploaded dataset
learns its shape from the store: the API copies the stored metadata into
``metadata`` when the experiment is submitted.
"""

from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator
from pydantic_core import PydanticCustomError

from saddlepoint.datasets import DATASETS, DatasetInfo, DatasetName, Task, split_sizes
from saddlepoint.ids import ULID_PATTERN, is_ulid
from saddlepoint.spec.base import UINT32_MAX, StrictModel
from saddlepoint.spec.unions import tag_validator, validation_error

MIN_SYNTHETIC_SAMPLES = 10
MAX_SYNTHETIC_SAMPLES = 100_000
MAX_NOISE = 10.0


class DatasetNotResolved(ValueError):
    """An uploaded dataset's shape is unknown until the API reads the store."""


class _SplitSpec(StrictModel):
    validation_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description=(
            "Share of samples held out for validation, rounded up. Stratified "
            "by class for classification, a plain random split for regression."
        ),
    )
    split_seed: int = Field(
        0, ge=0, le=UINT32_MAX, description="Seed of the train/validation split."
    )

    @property
    def label(self) -> str:
        """Name of the dataset in messages."""
        return str(getattr(self, "name", "dataset"))

    def resolved_info(self) -> DatasetInfo | None:
        """Return the dataset's shape, or None while it is unknown."""
        raise NotImplementedError

    @property
    def info(self) -> DatasetInfo:
        info = self.resolved_info()
        if info is None:
            raise DatasetNotResolved(
                f"the shape of {self.label} is unknown until the API copies its "
                "stored metadata into the spec"
            )
        return info

    @property
    def train_samples(self) -> int:
        return split_sizes(self.info.samples, self.validation_fraction)[0]

    @model_validator(mode="after")
    def _split_has_every_class(self) -> "_SplitSpec":
        # A stratified split needs each class at least once on both sides.
        info = self.resolved_info()
        if info is None or info.classes is None:
            return self
        train, validation = split_sizes(info.samples, self.validation_fraction)
        if min(train, validation) < info.classes:
            raise validation_error(
                "split_too_small",
                f"validation_fraction {self.validation_fraction} splits "
                f"{info.samples} samples into {train} for training and "
                f"{validation} for validation, but a stratified split needs at "
                f"least {info.classes} on each side (one per class); use more "
                "samples or another validation_fraction",
                ("validation_fraction",),
                self.validation_fraction,
            )
        return self


class BuiltinDatasetSpec(_SplitSpec):
    """A scikit-learn dataset, standardized with the training split's statistics.

    digits: 1,797 8 x 8 images of handwritten digits, 10 classes; iris: 150
    flowers, 4 features, 3 classes; wine: 178 samples, 13 features, 3 classes;
    breast_cancer: 569 samples, 30 features, 2 classes.
    """

    name: Literal[
        DatasetName.DIGITS,
        DatasetName.IRIS,
        DatasetName.WINE,
        DatasetName.BREAST_CANCER,
    ] = DatasetName.DIGITS

    def resolved_info(self) -> DatasetInfo:
        return DATASETS[self.name]


Samples = Annotated[
    int,
    Field(
        ge=MIN_SYNTHETIC_SAMPLES,
        le=MAX_SYNTHETIC_SAMPLES,
        description="Number of samples generated, before the split.",
    ),
]
Seed = Annotated[
    int, Field(ge=0, le=UINT32_MAX, description="Seed of the generated samples.")
]


class MoonsSpec(_SplitSpec):
    """Two interleaving half circles (scikit-learn ``make_moons``), 2 classes.

    ``noise`` is the standard deviation of Gaussian noise added to each point.
    """

    name: Literal[DatasetName.MOONS]
    samples: Samples = 500
    noise: float = Field(0.1, ge=0, le=MAX_NOISE)
    seed: Seed = 0

    def resolved_info(self) -> DatasetInfo:
        return DatasetInfo(samples=self.samples, features=2, classes=2)


class CirclesSpec(_SplitSpec):
    """A circle inside a larger one (scikit-learn ``make_circles``), 2 classes.

    ``factor`` is the inner radius over the outer one, and ``noise`` the
    standard deviation of Gaussian noise added to each point.
    """

    name: Literal[DatasetName.CIRCLES]
    samples: Samples = 500
    noise: float = Field(0.05, ge=0, le=MAX_NOISE)
    factor: float = Field(0.5, gt=0, lt=1)
    seed: Seed = 0

    def resolved_info(self) -> DatasetInfo:
        return DatasetInfo(samples=self.samples, features=2, classes=2)


class BlobsSpec(_SplitSpec):
    """Isotropic Gaussian clusters (scikit-learn ``make_blobs``), one per class.

    Centers are drawn uniformly from the box [-10, 10] in each feature, and
    ``noise`` is the standard deviation of every cluster.
    """

    name: Literal[DatasetName.BLOBS]
    samples: Samples = 500
    classes: int = Field(3, ge=2, le=20)
    features: int = Field(2, ge=1, le=64)
    noise: float = Field(1.0, ge=0, le=MAX_NOISE)
    seed: Seed = 0

    def resolved_info(self) -> DatasetInfo:
        return DatasetInfo(
            samples=self.samples, features=self.features, classes=self.classes
        )


class SpiralsSpec(_SplitSpec):
    """Interleaved spiral arms in the plane, one class per arm.

    Arm k of K has n_k points (``samples`` split as evenly as possible). Its
    point i has t = (i + 1) / n_k, radius t and angle
    2π (turns * t + k / K), so x = t (cos angle, sin angle) + noise * ε with
    ε ~ N(0, I).
    """

    name: Literal[DatasetName.SPIRALS]
    samples: Samples = 500
    classes: int = Field(2, ge=2, le=10, description="Number of arms.")
    turns: float = Field(1.0, ge=0.25, le=5, description="Turns of each arm.")
    noise: float = Field(0.05, ge=0, le=MAX_NOISE)
    seed: Seed = 0

    def resolved_info(self) -> DatasetInfo:
        return DatasetInfo(samples=self.samples, features=2, classes=self.classes)


class SincSpec(_SplitSpec):
    """Regression on y = sin(5πx) / (5πx), with y = 1 at x = 0.

    x is drawn uniformly from [-1, 1] and ``noise`` is the standard deviation
    of Gaussian noise added to y.
    """

    name: Literal[DatasetName.SINC]
    samples: Samples = 200
    noise: float = Field(0.0, ge=0, le=MAX_NOISE)
    seed: Seed = 0

    def resolved_info(self) -> DatasetInfo:
        return DatasetInfo(samples=self.samples, features=1, classes=None)


class PolynomialSpec(_SplitSpec):
    """Regression on y = c0 + c1 x + c2 x² + ... with x uniform in [-1, 1].

    ``noise`` is the standard deviation of Gaussian noise added to y.
    """

    name: Literal[DatasetName.POLYNOMIAL]
    samples: Samples = 200
    coefficients: list[Annotated[float, Field(ge=-100, le=100)]] = Field(
        default_factory=lambda: [0.0, -1.0, 0.0, 1.0],
        min_length=1,
        max_length=8,
        description="c0, c1, ... in increasing powers of x; default x³ - x.",
    )
    noise: float = Field(0.0, ge=0, le=MAX_NOISE)
    seed: Seed = 0

    def resolved_info(self) -> DatasetInfo:
        return DatasetInfo(samples=self.samples, features=1, classes=None)


class UploadedDatasetInfo(StrictModel):
    """Shape of an uploaded dataset, as stored with it."""

    samples: int = Field(ge=2)
    features: int = Field(ge=1)
    classes: int | None = Field(
        ge=2, description="Number of classes; null for a regression dataset."
    )
    image_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        None, description="(channels, height, width) of each sample, if images."
    )
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the X bytes followed by the y bytes.",
    )

    @model_validator(mode="after")
    def _image_shape_fits_features(self) -> "UploadedDatasetInfo":
        if self.image_shape is None:
            return self
        size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        if size != self.features:
            raise PydanticCustomError(
                "image_shape_mismatch",
                "image_shape {shape} has {size} values but each sample has "
                "{features} features",
                {"shape": self.image_shape, "size": size, "features": self.features},
            )
        return self

    def to_info(self) -> DatasetInfo:
        return DatasetInfo(
            samples=self.samples,
            features=self.features,
            classes=self.classes,
            image_shape=self.image_shape,
        )


class UploadedDatasetSpec(_SplitSpec):
    """A dataset uploaded with ``POST /v1/datasets``, referred to by its id."""

    name: Literal[DatasetName.UPLOADED]
    id: str = Field(
        max_length=64,
        description="Id that POST /v1/datasets returned (a 26-character ULID).",
        json_schema_extra={"pattern": ULID_PATTERN.pattern},
    )
    metadata: UploadedDatasetInfo | None = Field(
        None,
        description=(
            "Filled in by the API from the stored dataset when the experiment "
            "is submitted; a value sent by the client is replaced."
        ),
    )

    @field_validator("id")
    @classmethod
    def _id_is_ulid(cls, dataset_id: str) -> str:
        if not is_ulid(dataset_id):
            raise PydanticCustomError(
                "invalid_dataset_id",
                "{id} is not a dataset id; use the 26-character id that POST "
                "/v1/datasets returned, or list them with GET /v1/datasets",
                {"id": repr(dataset_id)},
            )
        return dataset_id

    @property
    def label(self) -> str:
        return f"uploaded {self.id}"

    def resolved_info(self) -> DatasetInfo | None:
        return None if self.metadata is None else self.metadata.to_info()


SyntheticDatasetSpec = (
    MoonsSpec | CirclesSpec | BlobsSpec | SpiralsSpec | SincSpec | PolynomialSpec
)
DatasetUnion = BuiltinDatasetSpec | SyntheticDatasetSpec | UploadedDatasetSpec
DatasetSpec = Annotated[
    DatasetUnion,
    Field(discriminator="name"),
    tag_validator(DatasetUnion, "name", "dataset", default=DatasetName.DIGITS.value),
]

REGRESSION_DATASETS = frozenset({DatasetName.SINC.value, DatasetName.POLYNOMIAL.value})


def raw_dataset_task(dataset: Any) -> Task | None:
    """Return the task of a dataset spec, parsed or raw JSON, if it is known.

    Used before validation to pick the default loss, so it must not raise on
    malformed input.
    """
    if isinstance(dataset, _SplitSpec):
        info = dataset.resolved_info()
        return None if info is None else info.task
    if not isinstance(dataset, dict):
        return Task.CLASSIFICATION if dataset is None else None
    name = dataset.get("name", DatasetName.DIGITS.value)
    if name in REGRESSION_DATASETS:
        return Task.REGRESSION
    if name != DatasetName.UPLOADED.value:
        return Task.CLASSIFICATION
    metadata = dataset.get("metadata")
    if isinstance(metadata, UploadedDatasetInfo):
        return metadata.to_info().task
    if isinstance(metadata, dict) and "classes" in metadata:
        return Task.REGRESSION if metadata["classes"] is None else Task.CLASSIFICATION
    return None
