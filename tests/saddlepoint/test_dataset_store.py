"""DatasetStore against a real redis-server."""

import hashlib

import numpy as np
import pytest
import redis

from saddlepoint.datasets import Task
from saddlepoint.store import DatasetCorrupted, DatasetStore, NewDataset
from saddlepoint.store.datasets import dataset_key, dataset_x_key, dataset_y_key


def classification(rows: int = 12) -> NewDataset:
    rng = np.random.default_rng(1)
    return NewDataset(
        x=rng.normal(size=(rows, 3)),
        y=np.arange(rows) % 3,
        task=Task.CLASSIFICATION,
        source="csv",
        feature_names=["a", "b", "c"],
        class_labels=["cat", "dog", "eel"],
        name="pets",
    )


def regression() -> NewDataset:
    rng = np.random.default_rng(2)
    return NewDataset(
        x=rng.normal(size=(9, 4)).astype(np.float32),
        y=rng.normal(size=9),
        task=Task.REGRESSION,
        source="npz",
        feature_names=["x0", "x1", "x2", "x3"],
        image_shape=(1, 2, 2),
    )


@pytest.fixture
def datasets(redis_client: redis.Redis) -> DatasetStore:
    return DatasetStore(redis_client)


def test_create_then_load_round_trips(datasets: DatasetStore) -> None:
    dataset = classification()
    metadata = datasets.create(dataset)
    loaded = datasets.load_arrays(metadata.id)

    assert loaded is not None
    stored, x, y = loaded
    assert stored == metadata
    np.testing.assert_array_equal(x, dataset.x)
    np.testing.assert_array_equal(y, dataset.y)
    assert x.dtype == np.dtype("<f8")
    assert y.dtype == np.dtype("<i8")
    assert not x.flags.writeable


def test_metadata_describes_arrays(datasets: DatasetStore) -> None:
    metadata = datasets.create(classification())

    assert metadata.task == Task.CLASSIFICATION
    assert (metadata.samples, metadata.features, metadata.classes) == (12, 3, 3)
    assert metadata.class_counts == [4, 4, 4]
    assert metadata.class_labels == ["cat", "dog", "eel"]
    assert metadata.x.dtype == "<f8"
    assert metadata.x.shape == [12, 3]
    assert metadata.y.dtype == "<i8"
    assert metadata.size_bytes == 12 * 3 * 8 + 12 * 8
    assert metadata.name == "pets"


def test_regression_stores_float_targets(datasets: DatasetStore) -> None:
    dataset = regression()
    metadata = datasets.create(dataset)
    loaded = datasets.load_arrays(metadata.id)

    assert loaded is not None
    _, x, y = loaded
    assert metadata.classes is None
    assert metadata.class_counts is None
    assert metadata.y.dtype == "<f8"
    assert metadata.image_shape == (1, 2, 2)
    np.testing.assert_array_equal(x, dataset.x.astype(np.float64))
    np.testing.assert_array_equal(y, dataset.y)


def test_arrays_are_raw_little_endian_bytes(
    datasets: DatasetStore, redis_url: str
) -> None:
    dataset = classification()
    metadata = datasets.create(dataset)
    binary = redis.Redis.from_url(redis_url)
    x_bytes = binary.get(dataset_x_key(metadata.id))
    y_bytes = binary.get(dataset_y_key(metadata.id))
    binary.close()

    assert x_bytes == dataset.x.astype("<f8").tobytes()
    assert y_bytes == dataset.y.astype("<i8").tobytes()
    assert metadata.sha256 == hashlib.sha256(x_bytes + y_bytes).hexdigest()


def test_spec_info_carries_shape_and_checksum(datasets: DatasetStore) -> None:
    metadata = datasets.create(regression())
    info = metadata.spec_info()

    assert (info.samples, info.features, info.classes) == (9, 4, None)
    assert info.image_shape == (1, 2, 2)
    assert info.sha256 == metadata.sha256


def test_unknown_id_returns_none(datasets: DatasetStore) -> None:
    assert datasets.get("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None
    assert datasets.load_arrays("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None


def test_list_pages_newest_first(datasets: DatasetStore) -> None:
    ids = [datasets.create(regression()).id for _ in range(5)]
    first = datasets.list_ids(limit=2)
    second = datasets.list_ids(limit=2, before=first[-1])
    third = datasets.list_ids(limit=2, before=second[-1])

    assert first + second + third == sorted(ids, reverse=True)
    assert datasets.count() == 5
    assert [item.id for item in datasets.get_many(first)] == first


def test_delete_removes_every_key(
    datasets: DatasetStore, redis_client: redis.Redis
) -> None:
    metadata = datasets.create(classification())

    assert datasets.delete(metadata.id)
    assert not datasets.delete(metadata.id)
    assert datasets.get(metadata.id) is None
    assert datasets.count() == 0
    keys = [
        dataset_key(metadata.id),
        dataset_x_key(metadata.id),
        dataset_y_key(metadata.id),
    ]
    assert redis_client.exists(*keys) == 0


def test_changed_bytes_are_detected(
    datasets: DatasetStore, redis_client: redis.Redis
) -> None:
    metadata = datasets.create(classification())
    redis_client.setrange(dataset_x_key(metadata.id), 0, "\x01")

    with pytest.raises(DatasetCorrupted, match="SHA-256"):
        datasets.load_arrays(metadata.id)


def test_shape_mismatch_is_detected(
    datasets: DatasetStore, redis_client: redis.Redis
) -> None:
    metadata = datasets.create(classification())
    changed = metadata.model_copy(
        update={"x": metadata.x.model_copy(update={"shape": [5, 5]})}
    )
    redis_client.set(dataset_key(metadata.id), changed.model_dump_json())

    with pytest.raises(DatasetCorrupted, match="do not fit their metadata"):
        datasets.load_arrays(metadata.id)
