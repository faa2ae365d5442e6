"""Dataset uploads through the HTTP API, against a real redis-server."""

import io
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from saddlepoint.settings import Settings
from saddlepoint.spec import ExperimentSpec, LossName, UploadedDatasetSpec
from saddlepoint.store import DatasetStore
from service.app import create_app
from service.errors import InvalidSpec, install_error_handlers
from service.limits import BodyLimit, BodySizeLimit
from service.routes.datasets import resolve_uploaded_dataset

UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
NPZ = {"content-type": "application/x-npz"}
CSV = {"content-type": "text/csv"}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        max_upload_bytes=200_000,
        max_dataset_rows=1000,
        max_dataset_features=50,
        max_dataset_classes=20,
        max_dataset_bytes=100_000,
        max_datasets=5,
    )


@pytest.fixture
def client(settings: Settings, redis_client: redis.Redis) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


def upload_npz(client: TestClient, task: str = "classification", **arrays: Any) -> Any:
    return client.post(
        "/v1/datasets", params={"task": task}, content=npz_bytes(**arrays), headers=NPZ
    )


def upload_csv(client: TestClient, text: str, **params: Any) -> Any:
    params = {"task": "classification", "label_column": "label", **params}
    return client.post("/v1/datasets", params=params, content=text, headers=CSV)


IRIS_LIKE_CSV = """sepal,petal,label
5.1,1.4,setosa
4.9,1.3,setosa
6.0,4.5,versicolor
5.9,4.2,versicolor
6.3,6.0,virginica
6.5,5.8,virginica
"""


# Round trips


def test_npz_upload_round_trips(client: TestClient, redis_client: redis.Redis) -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    y = np.array([0, 1] * 5)
    response = upload_npz(client, X=x, y=y)

    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"
    assert body["links"]["self"] == response.headers["location"]
    assert body["source"] == "npz"
    assert body["task"] == "classification"
    assert (body["samples"], body["features"], body["classes"]) == (10, 4, 2)
    assert body["class_counts"] == [5, 5]
    assert body["class_labels"] is None
    assert body["feature_names"] == ["x0", "x1", "x2", "x3"]
    assert body["x"] == {"dtype": "<f8", "shape": [10, 4]}
    loaded = DatasetStore(redis_client).load_arrays(body["id"])
    assert loaded is not None
    np.testing.assert_array_equal(loaded[1], x)
    np.testing.assert_array_equal(loaded[2], y)


def test_csv_upload_maps_string_labels(
    client: TestClient, redis_client: redis.Redis
) -> None:
    response = upload_csv(client, IRIS_LIKE_CSV, name="iris sample")

    assert response.status_code == 201
    body = response.json()
    assert body["source"] == "csv"
    assert body["name"] == "iris sample"
    assert body["feature_names"] == ["sepal", "petal"]
    assert body["class_labels"] == ["setosa", "versicolor", "virginica"]
    loaded = DatasetStore(redis_client).load_arrays(body["id"])
    assert loaded is not None
    np.testing.assert_array_equal(loaded[1][:, 0], [5.1, 4.9, 6.0, 5.9, 6.3, 6.5])
    assert loaded[2].tolist() == [0, 0, 1, 1, 2, 2]


def test_csv_label_column_anywhere(client: TestClient) -> None:
    text = "label,a,b\n1,0.5,1\n0,0.1,2\n1,0.3,3\n0,0.2,4\n"
    response = upload_csv(client, text)

    assert response.status_code == 201
    body = response.json()
    assert body["feature_names"] == ["a", "b"]
    assert body["class_labels"] is None
    assert body["class_counts"] == [2, 2]


def test_csv_regression_upload(client: TestClient, redis_client: redis.Redis) -> None:
    text = "x,target\n0.0,1.5\n1.0,-2.0\n2.0,0.25\n"
    response = upload_csv(client, text, task="regression", label_column="target")

    assert response.status_code == 201
    body = response.json()
    assert body["task"] == "regression"
    assert body["classes"] is None
    assert body["y"] == {"dtype": "<f8", "shape": [3]}
    loaded = DatasetStore(redis_client).load_arrays(body["id"])
    assert loaded is not None
    assert loaded[2].tolist() == [1.5, -2.0, 0.25]


def test_npz_string_labels_and_image_shape(client: TestClient) -> None:
    x = np.zeros((4, 12))
    y = np.array(["b", "a", "b", "a"])
    response = client.post(
        "/v1/datasets",
        params={"task": "classification", "image_shape": "3,2,2"},
        content=npz_bytes(X=x, y=y),
        headers={"content-type": "application/octet-stream"},
    )

    assert response.status_code == 201
    body = response.json()
    assert body["class_labels"] == ["a", "b"]
    assert body["image_shape"] == [3, 2, 2]


def test_get_list_and_delete(client: TestClient) -> None:
    ids = [
        upload_npz(client, X=np.eye(4), y=np.array([0, 1, 0, 1])).json()["id"]
        for _ in range(3)
    ]

    fetched = client.get(f"/v1/datasets/{ids[0]}")
    first = client.get("/v1/datasets", params={"limit": 2}).json()
    second = client.get(
        "/v1/datasets", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    deleted = client.delete(f"/v1/datasets/{ids[1]}")
    after = client.get("/v1/datasets").json()

    assert fetched.status_code == 200
    assert fetched.json()["id"] == ids[0]
    listed = [item["id"] for item in first["items"] + second["items"]]
    assert listed == sorted(ids, reverse=True)
    assert second["next_cursor"] is None
    assert deleted.status_code == 204
    assert [item["id"] for item in after["items"]] == sorted(
        [ids[0], ids[2]], reverse=True
    )
    assert client.get(f"/v1/datasets/{ids[1]}").status_code == 404


@pytest.mark.parametrize("dataset_id", [UNKNOWN_ID, "not-an-id"])
def test_unknown_dataset_is_404(client: TestClient, dataset_id: str) -> None:
    response = client.get(f"/v1/datasets/{dataset_id}")
    removed = client.delete(f"/v1/datasets/{dataset_id}")

    assert response.status_code == 404
    assert error_of(response)["code"] == "dataset_not_found"
    assert dataset_id in error_of(response)["message"]
    assert removed.status_code == 404


def test_list_invalid_cursor_is_400(client: TestClient) -> None:
    response = client.get("/v1/datasets", params={"cursor": "bogus"})

    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_cursor"


def test_dataset_count_limit_is_409(client: TestClient) -> None:
    for _ in range(5):
        assert upload_npz(client, X=np.eye(4), y=np.array([0, 1, 0, 1])).is_success
    response = upload_npz(client, X=np.eye(4), y=np.array([0, 1, 0, 1]))

    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "dataset_limit_reached"
    assert "DELETE /v1/datasets/{id}" in error["message"]


# Bad uploads


def object_array_npz() -> bytes:
    buffer = io.BytesIO()
    y = np.array([{"a": 1}, None, 3, "x"], dtype=object)
    np.savez(buffer, X=np.eye(4), y=y, allow_pickle=True)
    return buffer.getvalue()


def truncated_header_npz() -> bytes:
    # X declares 10**9 float64 values but contains 32 bytes of data.
    header = np.lib.format.header_data_from_array_1_0(np.zeros(4))
    header["shape"] = (10**9,)
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(np.zeros(4).tobytes())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("X.npy", member.getvalue())
        archive.writestr("y.npy", npz_member(np.zeros(4, dtype=np.int64)))
    return buffer.getvalue()


def npz_member(values: np.ndarray) -> bytes:
    member = io.BytesIO()
    np.save(member, values)
    return member.getvalue()


def unsuffixed_member_npz() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("X", npz_member(np.eye(4)))
        archive.writestr("y.npy", npz_member(np.zeros(4, dtype=np.int64)))
    return buffer.getvalue()


def bad_checksum_npz() -> bytes:
    body = bytearray(npz_bytes(X=np.eye(4), y=np.array([0, 1, 0, 1])))
    # The last data byte of X, stored uncompressed; its CRC no longer matches.
    offset = body.index(np.eye(4).tobytes()) + 8 * 16 - 1
    body[offset] ^= 0xFF
    return bytes(body)


def zeros_bomb_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, X=np.zeros((400_000, 4)), y=np.zeros(400_000, dtype=np.int64)
    )
    return buffer.getvalue()


BAD_NPZ = [
    (object_array_npz(), "y", "object array"),
    (b"not a zip at all", "body", "not an NPZ archive"),
    (npz_bytes(X=np.eye(4)), "y", "exactly the arrays X and y"),
    (
        npz_bytes(X=np.eye(4), y=np.zeros(4), z=np.ones(1)),
        "z",
        "contains ['X', 'y', 'z']",
    ),
    (npz_bytes(features=np.eye(4), y=np.zeros(4)), "X", "exactly the arrays X"),
    (npz_bytes(X=np.zeros((2, 2, 2)), y=np.zeros(2)), "X", "must be 2-D"),
    (npz_bytes(X=np.eye(4), y=np.zeros((4, 1))), "y", "must be 1-D"),
    (npz_bytes(X=np.eye(4), y=np.array([0, 1, 0])), "y", "y has 3 samples but X has 4"),
    (
        npz_bytes(X=np.array([[1.0, np.nan], [0, 1], [1, 1], [2, 2]]), y=[0, 1, 0, 1]),
        "X",
        "non-finite value nan at row 0, column 1",
    ),
    (
        npz_bytes(X=np.array([["a"], ["b"], ["c"], ["d"]]), y=np.array([0, 1, 0, 1])),
        "X",
        "must be numeric",
    ),
    (npz_bytes(X=np.eye(4), y=np.array([0, 1, 2, 3])), "y", "class 0 has 1 samples"),
    (npz_bytes(X=np.eye(4), y=np.array([0, 0, 2, 2])), "y", "class 1 has 0 samples"),
    (npz_bytes(X=np.eye(4), y=np.array([0, -1, 0, -1])), "y", "negative label -1"),
    (npz_bytes(X=np.eye(4), y=np.zeros(4, dtype=int)), "y", "one class only"),
    (npz_bytes(X=np.eye(4), y=np.array([0.0, 1.0, 0.0, 1.0])), "y", "dtype float64"),
    (npz_bytes(X=np.eye(4), y=np.arange(4) % 2 + 25), "y", "at most 20"),
    (npz_bytes(X=np.zeros((4, 60)), y=np.array([0, 1, 0, 1])), "X", "at most 50"),
    (npz_bytes(X=np.zeros((1200, 2)), y=np.arange(1200) % 2), "X", "more than 1000"),
    (truncated_header_npz(), "X", "truncated or corrupt"),
    (unsuffixed_member_npz(), "X", "exactly the arrays X and y"),
    (bad_checksum_npz(), "X", "X could not be read"),
    (zeros_bomb_npz(), "X", "uncompressed"),
]


@pytest.mark.parametrize(("body", "field", "fragment"), BAD_NPZ)
def test_bad_npz_names_problem(
    client: TestClient, body: bytes, field: str, fragment: str
) -> None:
    response = client.post(
        "/v1/datasets", params={"task": "classification"}, content=body, headers=NPZ
    )

    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_dataset"
    assert error["details"][0]["field"] == field
    assert fragment in error["details"][0]["message"]
    assert fragment in error["message"]


def test_regression_npz_rejects_infinite_target(client: TestClient) -> None:
    y = np.array([0.0, np.inf, 1.0])
    response = upload_npz(client, task="regression", X=np.eye(3), y=y)

    assert response.status_code == 422
    detail = error_of(response)["details"][0]
    assert detail["field"] == "y"
    assert "non-finite value inf at row 1" in detail["message"]


BAD_CSV = [
    ("a,b,label\n1,2,0\n3,4\n", {}, "body", "line 3 has 2 fields but the header has 3"),
    ("a,b,label\n1,2,0\n", {"label_column": "class"}, "label_column", "'class'"),
    (
        "a,b,label\n1,x,0\n",
        {},
        "b",
        "column 'b', line 2: the value 'x' is not a number",
    ),
    ("a,b,label\n1,,0\n", {}, "b", "the value is empty"),
    ("a,b,label\n1,nan,0\n1,2,1\n", {}, "X", "non-finite value nan at row 0"),
    ("", {}, "body", "the CSV is empty"),
    ("a,b,label\n", {}, "body", "no data rows"),
    ("label\n1\n", {}, "body", "at least one feature column"),
    ("a,a,label\n1,2,0\n", {}, "body", "repeats the column names ['a']"),
    ("a,label\n1,0\n", {"label_column": None}, "label_column", "needs label_column"),
    (
        "a,label\n1,0.5\n2,x\n",
        {"task": "regression"},
        "label",
        "column 'label', line 3",
    ),
    ("a,label\n1,0\n2,1\n3,0\n", {}, "label", "class 1 has 1 samples"),
    (
        "a,label\n1,dog\n2,cat\n3,dog\n",
        {},
        "label",
        "class 'cat' has 1 samples",
    ),
    (
        "a,b,label\n1,2,0\n1,2,1\n1,2,0\n1,2,1\n",
        {"image_shape": "1,1,3"},
        "image_shape",
        "image_shape (1, 1, 3) has 3 values but each sample has 2 features",
    ),
]


@pytest.mark.parametrize(("text", "params", "field", "fragment"), BAD_CSV)
def test_bad_csv_names_problem(
    client: TestClient,
    text: str,
    params: dict[str, Any],
    field: str,
    fragment: str,
) -> None:
    params = {"task": "classification", "label_column": "label", **params}
    params = {key: value for key, value in params.items() if value is not None}
    response = client.post("/v1/datasets", params=params, content=text, headers=CSV)

    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_dataset"
    assert error["details"][0]["field"] == field
    assert fragment in error["details"][0]["message"]


def test_csv_not_utf8_is_422(client: TestClient) -> None:
    body = "a,label\n1,caf\xe9\n".encode("latin-1")
    response = client.post(
        "/v1/datasets",
        params={"task": "classification", "label_column": "label"},
        content=body,
        headers=CSV,
    )

    assert response.status_code == 422
    assert "not UTF-8" in error_of(response)["message"]


def test_label_column_with_npz_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/datasets",
        params={"task": "classification", "label_column": "y"},
        content=npz_bytes(X=np.eye(4), y=np.array([0, 1, 0, 1])),
        headers=NPZ,
    )

    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "label_column"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "task"),
        ({"task": "ranking"}, "task"),
        ({"task": "regression", "image_shape": "1x8x8"}, "image_shape"),
    ],
)
def test_bad_query_parameter_is_422(
    client: TestClient, params: dict[str, str], field: str
) -> None:
    response = client.post(
        "/v1/datasets", params=params, content=b"a,label\n", headers=CSV
    )

    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == field


def test_image_shape_of_zero_is_422(client: TestClient) -> None:
    response = upload_csv(client, IRIS_LIKE_CSV, image_shape="0,1,2")

    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "image_shape"


def test_unsupported_media_type_is_415(client: TestClient) -> None:
    response = client.post(
        "/v1/datasets", params={"task": "classification"}, json={"X": [[1]]}
    )

    assert response.status_code == 415
    error = error_of(response)
    assert error["code"] == "unsupported_media_type"
    assert "text/csv" in error["message"]


def test_upload_over_limit_is_413(client: TestClient) -> None:
    text = "a,label\n" + "1.0,0\n" * 40_000
    response = upload_csv(client, text)

    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "body_too_large"
    assert "200000" in error["message"]
    assert "SADDLE_MAX_UPLOAD_BYTES" in error["message"]


def test_spec_body_limit_still_applies(client: TestClient) -> None:
    response = client.post("/v1/experiments", json={"name": "x" * 2_000_000})

    assert response.status_code == 413
    assert "SADDLE_MAX_BODY_BYTES" in error_of(response)["message"]


def test_middleware_path_limit_overrides_default() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/upload")
    async def upload(body: dict[str, Any]) -> int:
        return len(body["data"])

    @app.post("/spec")
    async def spec(body: dict[str, Any]) -> int:
        return len(body["data"])

    app.add_middleware(
        BodySizeLimit,
        max_bytes=2000,
        path_limits={"/upload": BodyLimit(20_000, "SADDLE_MAX_UPLOAD_BYTES")},
    )
    payload = {"data": "x" * 5000}
    with TestClient(app) as test_client:
        accepted = test_client.post("/upload", json=payload)
        rejected = test_client.post("/spec", json=payload)
        too_large = test_client.post("/upload", json={"data": "x" * 30_000})

    assert accepted.status_code == 200
    assert rejected.status_code == 413
    assert "SADDLE_MAX_BODY_BYTES" in error_of(rejected)["message"]
    assert too_large.status_code == 413
    assert "20000 bytes" in error_of(too_large)["message"]
    assert "SADDLE_MAX_UPLOAD_BYTES" in error_of(too_large)["message"]


# Specs that use an upload


def uploaded_spec(dataset_id: str, **fields: Any) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {"dataset": {"name": "uploaded", "id": dataset_id}, **fields}
    )


def test_resolve_copies_metadata(client: TestClient, redis_client: redis.Redis) -> None:
    x = np.random.default_rng(0).normal(size=(50, 4))
    y = np.arange(50) % 2
    dataset_id = upload_npz(client, X=x, y=y).json()["id"]
    datasets = DatasetStore(redis_client)
    spec = uploaded_spec(dataset_id, batch_size=8, model={"hidden_sizes": [3]})

    resolved = resolve_uploaded_dataset(spec, datasets)

    assert isinstance(resolved.dataset, UploadedDatasetSpec)
    metadata = resolved.dataset.metadata
    assert metadata is not None
    assert (metadata.samples, metadata.features, metadata.classes) == (50, 4, 2)
    assert resolved.total_steps == 5 * 20
    assert resolved.parameter_count == 4 * 3 + 3 + 3 * 2 + 2
    assert resolved.loss == LossName.CROSS_ENTROPY
    # A stored spec validates again without the store.
    again = ExperimentSpec.model_validate_json(resolved.model_dump_json())
    assert again == resolved


def test_resolve_regression_picks_mse(
    client: TestClient, redis_client: redis.Redis
) -> None:
    text = "x,y\n" + "".join(f"{i},{i * 0.5}\n" for i in range(20))
    dataset_id = upload_csv(client, text, task="regression", label_column="y").json()[
        "id"
    ]

    resolved = resolve_uploaded_dataset(
        uploaded_spec(dataset_id), DatasetStore(redis_client)
    )

    assert resolved.loss == LossName.MSE
    assert resolved.model_plan.output_shape == (1,)


def test_resolve_replaces_client_metadata(
    client: TestClient, redis_client: redis.Redis
) -> None:
    dataset_id = upload_npz(client, X=np.eye(4), y=np.array([0, 1, 0, 1])).json()["id"]
    forged = {"samples": 10_000, "features": 4, "classes": 2, "sha256": "0" * 64}
    spec = ExperimentSpec.model_validate(
        {
            "dataset": {
                "name": "uploaded",
                "id": dataset_id,
                "validation_fraction": 0.5,
                "metadata": forged,
            },
            "batch_size": 2,
        }
    )

    resolved = resolve_uploaded_dataset(spec, DatasetStore(redis_client))

    assert isinstance(resolved.dataset, UploadedDatasetSpec)
    assert resolved.dataset.metadata is not None
    assert resolved.dataset.metadata.samples == 4


def test_resolve_unknown_dataset_names_id(redis_client: redis.Redis) -> None:
    with pytest.raises(InvalidSpec) as caught:
        resolve_uploaded_dataset(uploaded_spec(UNKNOWN_ID), DatasetStore(redis_client))

    assert caught.value.details[0].field == "dataset.id"
    assert "POST /v1/datasets" in caught.value.message


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"batch_size": 100}, "batch_size", "use an integer from 1 to 40"),
        ({"loss": "cross_entropy"}, "loss", 'use "mse"'),
        (
            {
                "model": {
                    "kind": "layers",
                    "layers": [{"kind": "linear", "out_features": 2}],
                }
            },
            "model.layers.0.out_features",
            "set out_features of the last linear layer to 1",
        ),
    ],
)
def test_resolve_checks_spec_against_upload(
    client: TestClient,
    redis_client: redis.Redis,
    fields: dict[str, Any],
    field: str,
    fragment: str,
) -> None:
    x = np.random.default_rng(0).normal(size=(50, 4))
    y = np.random.default_rng(1).normal(size=50)
    dataset_id = upload_npz(client, task="regression", X=x, y=y).json()["id"]
    spec = uploaded_spec(dataset_id, **fields)

    with pytest.raises(InvalidSpec) as caught:
        resolve_uploaded_dataset(spec, DatasetStore(redis_client))

    details = {detail.field: detail.message for detail in caught.value.details}
    assert field in details
    assert fragment in details[field]


def test_resolve_leaves_other_datasets_alone(redis_client: redis.Redis) -> None:
    spec = ExperimentSpec.model_validate({"dataset": {"name": "moons"}})

    assert resolve_uploaded_dataset(spec, DatasetStore(redis_client)) is spec
