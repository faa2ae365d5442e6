"""Uploaded datasets in Redis: raw little-endian arrays plus JSON metadata.

Keys, under the shared prefix:

- ``datasets``: sorted set of every dataset id, all with score 0, so
  ``ZREVRANGEBYLEX`` lists them newest first (ids are ULIDs).
- ``dataset:{id}``: the :class:`DatasetMetadata` as JSON.
- ``dataset:{id}:x``: X as C-ordered float64 bytes (``<f8``), shape (N, F).
- ``dataset:{id}:y``: y as int64 class indices (``<i8``) for classification or
  float64 values (``<f8``) for regression, shape (N,).

A dataset is written in one transaction and never changed, so a reader sees
all of it or nothing. ``sha256`` covers the X bytes followed by the y bytes,
and :meth:`DatasetStore.load_arrays` checks it.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

import numpy as np
import redis
from pydantic import BaseModel, Field
from redis.client import NEVER_DECODE

from saddlepoint.datasets import Task
from saddlepoint.ids import new_ulid
from saddlepoint.spec import UploadedDatasetInfo
from saddlepoint.store.experiments import utc_now
from saddlepoint.store.keys import PREFIX

DATASETS_KEY = PREFIX + "datasets"
X_DTYPE = np.dtype("<f8")
Y_DTYPES = {Task.CLASSIFICATION: np.dtype("<i8"), Task.REGRESSION: np.dtype("<f8")}


def dataset_key(dataset_id: str) -> str:
    return f"{PREFIX}dataset:{dataset_id}"


def dataset_x_key(dataset_id: str) -> str:
    return f"{PREFIX}dataset:{dataset_id}:x"


def dataset_y_key(dataset_id: str) -> str:
    return f"{PREFIX}dataset:{dataset_id}:y"


class ArrayInfo(BaseModel):
    """Encoding of one stored array."""

    dtype: str = Field(description='NumPy dtype string, such as "<f8".')
    shape: list[int]


class DatasetMetadata(BaseModel):
    """Metadata the store keeps about an uploaded dataset besides its arrays."""

    id: str
    name: str | None = Field(description="Label given at upload.")
    created_at: datetime
    source: Literal["npz", "csv"]
    task: Task
    samples: int
    features: int
    classes: int | None = Field(description="Number of classes; null for regression.")
    class_counts: list[int] | None = Field(
        description="Samples of each class, by class index; null for regression."
    )
    class_labels: list[str] | None = Field(
        description=(
            "Original label of each class index, when the upload had string "
            "labels; null when the labels already were 0 to classes - 1."
        )
    )
    feature_names: list[str]
    image_shape: tuple[int, int, int] | None = Field(
        description="(channels, height, width) of each row, if it is an image."
    )
    x: ArrayInfo
    y: ArrayInfo
    size_bytes: int = Field(description="Bytes of X and y as stored.")
    sha256: str = Field(description="SHA-256 of the X bytes followed by the y bytes.")

    def spec_info(self) -> UploadedDatasetInfo:
        """Return the part of the metadata an experiment spec carries."""
        return UploadedDatasetInfo(
            samples=self.samples,
            features=self.features,
            classes=self.classes,
            image_shape=self.image_shape,
            sha256=self.sha256,
        )


@dataclass(frozen=True)
class NewDataset:
    """A validated upload, ready to store.

    ``x`` is float64 (N, F). ``y`` is int64 class indices (N,) in [0, C) with
    every class present for classification, or float64 (N,) for regression.
    """

    x: np.ndarray
    y: np.ndarray
    task: Task
    source: Literal["npz", "csv"]
    feature_names: list[str]
    class_labels: list[str] | None = None
    image_shape: tuple[int, int, int] | None = None
    name: str | None = None


class DatasetCorrupted(Exception):
    """The stored arrays do not match their metadata."""


def _digest(x_bytes: bytes, y_bytes: bytes) -> str:
    digest = hashlib.sha256(x_bytes)
    digest.update(y_bytes)
    return digest.hexdigest()


class DatasetStore:
    """Uploaded datasets in Redis.

    The client must be created with ``decode_responses=True``, as for the
    ExperimentStore; the array reads ask redis-py not to decode their replies.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def create(self, dataset: NewDataset) -> DatasetMetadata:
        """Store ``dataset`` under a new id in one transaction; return its metadata."""
        x = np.ascontiguousarray(dataset.x, dtype=X_DTYPE)
        y = np.ascontiguousarray(dataset.y, dtype=Y_DTYPES[dataset.task])
        x_bytes, y_bytes = x.tobytes(), y.tobytes()
        metadata = _metadata(dataset, x, y, x_bytes, y_bytes)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(dataset_key(metadata.id), metadata.model_dump_json())
            pipe.set(dataset_x_key(metadata.id), x_bytes)
            pipe.set(dataset_y_key(metadata.id), y_bytes)
            pipe.zadd(DATASETS_KEY, {metadata.id: 0})
            pipe.execute()
        return metadata

    def get(self, dataset_id: str) -> DatasetMetadata | None:
        payload = cast(str | None, self.client.get(dataset_key(dataset_id)))
        if payload is None:
            return None
        return DatasetMetadata.model_validate_json(payload)

    def count(self) -> int:
        return cast(int, self.client.zcard(DATASETS_KEY))

    def list_ids(self, limit: int, before: str | None = None) -> list[str]:
        """Return up to ``limit`` ids, newest first, older than ``before``."""
        upper = f"({before}" if before else "+"
        return cast(
            list[str],
            self.client.zrevrangebylex(DATASETS_KEY, upper, "-", start=0, num=limit),
        )

    def get_many(self, ids: Sequence[str]) -> list[DatasetMetadata]:
        if not ids:
            return []
        payloads = cast(
            list[str | None], self.client.mget([dataset_key(i) for i in ids])
        )
        return [
            DatasetMetadata.model_validate_json(payload)
            for payload in payloads
            if payload is not None
        ]

    def delete(self, dataset_id: str) -> bool:
        """Remove a dataset; return False when it did not exist."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(
                dataset_key(dataset_id),
                dataset_x_key(dataset_id),
                dataset_y_key(dataset_id),
            )
            pipe.zrem(DATASETS_KEY, dataset_id)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def load_arrays(
        self, dataset_id: str
    ) -> tuple[DatasetMetadata, np.ndarray, np.ndarray] | None:
        """Return the metadata, X (N, F) and y (N,), or None for an unknown id.

        The arrays are read-only views of the stored bytes. Raises
        DatasetCorrupted when their size or SHA-256 differs from the metadata.
        """
        metadata = self.get(dataset_id)
        if metadata is None:
            return None
        # NEVER_DECODE is redis-py's per-command switch (used by its DUMP
        # command) that returns raw bytes from a decode_responses client.
        x_bytes, y_bytes = self.client.execute_command(
            "MGET",
            dataset_x_key(dataset_id),
            dataset_y_key(dataset_id),
            **{NEVER_DECODE: []},
        )
        if x_bytes is None or y_bytes is None:
            return None
        if _digest(x_bytes, y_bytes) != metadata.sha256:
            raise DatasetCorrupted(
                f"dataset {dataset_id}: the stored arrays do not match their "
                "SHA-256; upload the data again"
            )
        try:
            x = np.frombuffer(x_bytes, metadata.x.dtype).reshape(metadata.x.shape)
            y = np.frombuffer(y_bytes, metadata.y.dtype).reshape(metadata.y.shape)
        except ValueError as error:
            raise DatasetCorrupted(
                f"dataset {dataset_id}: the stored arrays do not fit their "
                f"metadata ({error}); upload the data again"
            ) from error
        return metadata, x, y


def _metadata(
    dataset: NewDataset,
    x: np.ndarray,
    y: np.ndarray,
    x_bytes: bytes,
    y_bytes: bytes,
) -> DatasetMetadata:
    classes = None
    class_counts = None
    if dataset.task == Task.CLASSIFICATION:
        counts = np.bincount(y)
        classes, class_counts = len(counts), counts.tolist()
    return DatasetMetadata(
        id=new_ulid(),
        name=dataset.name,
        created_at=utc_now(),
        source=dataset.source,
        task=dataset.task,
        samples=x.shape[0],
        features=x.shape[1],
        classes=classes,
        class_counts=class_counts,
        class_labels=dataset.class_labels,
        feature_names=dataset.feature_names,
        image_shape=dataset.image_shape,
        x=ArrayInfo(dtype=x.dtype.str, shape=list(x.shape)),
        y=ArrayInfo(dtype=y.dtype.str, shape=list(y.shape)),
        size_bytes=len(x_bytes) + len(y_bytes),
        sha256=_digest(x_bytes, y_bytes),
    )
