"""Uploaded datasets: upload, inspect, list, delete, and resolve in a spec."""

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from saddlepoint.datasets import Task
from saddlepoint.ids import is_ulid
from saddlepoint.settings import Settings
from saddlepoint.spec import ExperimentSpec, UploadedDatasetSpec
from saddlepoint.store import DatasetMetadata, DatasetStore
from service.deps import SettingsDep, StoreDep
from service.errors import (
    ErrorDetail,
    ErrorResponse,
    InvalidCursor,
    InvalidSpec,
    ServiceError,
    describe_validation_error,
    summarize,
)
from service.uploads import UploadError, UploadLimits, UploadOptions, parse_upload

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

# Media types of an upload body, by format.
NPZ_MEDIA_TYPES = frozenset(
    {"application/x-npz", "application/zip", "application/octet-stream"}
)
CSV_MEDIA_TYPES = frozenset({"text/csv"})

DatasetId = Annotated[
    str, Path(description="Dataset id (a 26-character ULID).", max_length=64)
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown dataset."}
}


class InvalidDataset(ServiceError):
    status_code = 422
    code = "invalid_dataset"


class DatasetNotFound(ServiceError):
    status_code = 404
    code = "dataset_not_found"

    def __init__(self, dataset_id: str):
        super().__init__(
            f"dataset {dataset_id!r} does not exist; list datasets with "
            "GET /v1/datasets"
        )


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class UploadTooLarge(ServiceError):
    status_code = 413
    code = "body_too_large"


class DatasetLimitReached(ServiceError):
    status_code = 409
    code = "dataset_limit_reached"


class DatasetLinks(BaseModel):
    self: str


class DatasetPublic(DatasetMetadata):
    links: DatasetLinks

    @classmethod
    def from_metadata(cls, metadata: DatasetMetadata) -> "DatasetPublic":
        links = DatasetLinks(self=f"/v1/datasets/{metadata.id}")
        return cls(**dict(metadata), links=links)


class DatasetList(BaseModel):
    items: list[DatasetPublic]
    next_cursor: str | None = Field(
        description="Pass as ``cursor`` for the next page; null on the last page."
    )


def get_dataset_store(store: StoreDep) -> DatasetStore:
    """Return the dataset store on the experiment store's Redis client."""
    return DatasetStore(store.client)


DatasetStoreDep = Annotated[DatasetStore, Depends(get_dataset_store)]

UPLOAD_BODY = {
    "required": True,
    "description": (
        "An NPZ archive (numpy.savez) with arrays X (samples, features) and y "
        "(samples,), or CSV text with a header row."
    ),
    "content": {
        "application/x-npz": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "text/csv": {"schema": {"type": "string"}},
    },
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses={
        409: {"model": ErrorResponse, "description": "Too many datasets stored."},
        413: {"model": ErrorResponse, "description": "The body is too large."},
        415: {"model": ErrorResponse, "description": "Not NPZ or CSV."},
        422: {"model": ErrorResponse, "description": "The data is invalid."},
    },
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def upload_dataset(
    request: Request,
    response: Response,
    datasets: DatasetStoreDep,
    settings: SettingsDep,
    task: Annotated[
        Task,
        Query(description="classification (integer or string labels) or regression."),
    ],
    label_column: Annotated[
        str | None,
        Query(
            max_length=200,
            description="CSV only: name of the column that contains the labels.",
        ),
    ] = None,
    image_shape: Annotated[
        str | None,
        Query(
            pattern=r"^\d{1,4},\d{1,4},\d{1,4}$",
            description=(
                'channels,height,width of each row as an image, such as "1,8,8", '
                "so convolution layers can use it; the row is read row-major."
            ),
        ),
    ] = None,
    name: Annotated[
        str | None, Query(max_length=200, description="Free-form label.")
    ] = None,
) -> DatasetPublic:
    """Upload a dataset as NPZ or CSV; refer to it as `{"name": "uploaded", "id": ...}`.

    Send NPZ with `Content-Type: application/x-npz` (or
    `application/octet-stream`), holding exactly the arrays `X` and `y`;
    arrays load without pickle, so object arrays are rejected. Send CSV as
    `text/csv` with a header row, numeric feature columns and `label_column`
    naming the labels. Classification labels are integers 0 to C - 1, or
    strings, which map to indices in sorted order (`class_labels`). Every
    class needs 2 or more samples. Values must be finite. Features are
    standardized per experiment with the training split's statistics;
    regression targets are used as given.
    """
    source = _source_of(request)
    body = await _read_body(request, settings.max_upload_bytes)
    options = UploadOptions(
        task=task,
        label_column=label_column,
        image_shape=_parse_image_shape(image_shape),
        name=name,
    )
    metadata = await run_in_threadpool(
        _create_dataset, datasets, body, source, options, settings
    )
    logger.info(
        "dataset %s uploaded: %s, %d samples, %d features, %s bytes",
        metadata.id,
        metadata.task.value,
        metadata.samples,
        metadata.features,
        metadata.size_bytes,
    )
    response.headers["Location"] = f"/v1/datasets/{metadata.id}"
    return DatasetPublic.from_metadata(metadata)


def _source_of(request: Request) -> Literal["npz", "csv"]:
    header = request.headers.get("content-type", "")
    media_type = header.split(";")[0].strip().lower()
    if media_type in NPZ_MEDIA_TYPES:
        return "npz"
    if media_type in CSV_MEDIA_TYPES:
        return "csv"
    raise UnsupportedMediaType(
        f"content type {header!r} is not an upload format; send NPZ as "
        "application/x-npz or application/octet-stream, or CSV as text/csv"
    )


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """Read the body, rejecting it as soon as it passes ``max_bytes``."""
    too_large = UploadTooLarge(
        f"the upload is larger than {max_bytes} bytes; send a smaller dataset "
        "(the limit is the setting SADDLE_MAX_UPLOAD_BYTES)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_image_shape(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    channels, height, width = (int(part) for part in text.split(","))
    if min(channels, height, width) < 1:
        raise InvalidDataset(
            f"image_shape {text!r} is invalid; give three positive integers "
            '"channels,height,width"',
            [
                ErrorDetail(
                    field="image_shape",
                    value=text,
                    message="channels, height and width must each be 1 or more",
                )
            ],
        )
    return channels, height, width


def _create_dataset(
    datasets: DatasetStore,
    body: bytes,
    source: Literal["npz", "csv"],
    options: UploadOptions,
    settings: Settings,
) -> DatasetMetadata:
    # NOTE: the count and the write are separate commands, so two concurrent
    # uploads can both pass the check and exceed max_datasets by one each.
    if datasets.count() >= settings.max_datasets:
        raise DatasetLimitReached(
            f"the store already contains {settings.max_datasets} datasets, the "
            "maximum (setting SADDLE_MAX_DATASETS); delete one with "
            "DELETE /v1/datasets/{id}"
        )
    try:
        dataset = parse_upload(
            body, source, options, UploadLimits.from_settings(settings)
        )
    except UploadError as error:
        detail = ErrorDetail(
            field=error.field, value=error.value, message=error.message
        )
        raise InvalidDataset(
            f"invalid dataset: {error.field}: {error.message}", [detail]
        ) from error
    return datasets.create(dataset)


@router.get("", response_model=DatasetList, responses={400: {"model": ErrorResponse}})
def list_datasets(
    datasets: DatasetStoreDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[
        str | None, Query(description="``next_cursor`` of the previous page.")
    ] = None,
) -> DatasetList:
    """List uploaded datasets, newest first, one page at a time."""
    if cursor is not None and not is_ulid(cursor):
        raise InvalidCursor(
            f"cursor {cursor!r} is invalid; pass the next_cursor of a previous "
            "page, or omit it for the first page"
        )
    ids = datasets.list_ids(limit=limit + 1, before=cursor)
    page, more = ids[:limit], len(ids) > limit
    return DatasetList(
        items=[DatasetPublic.from_metadata(item) for item in datasets.get_many(page)],
        next_cursor=page[-1] if more else None,
    )


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=NOT_FOUND)
def get_dataset(datasets: DatasetStoreDep, dataset_id: DatasetId) -> DatasetPublic:
    """Return a dataset's shape, task, classes, feature names and SHA-256."""
    metadata = datasets.get(dataset_id) if is_ulid(dataset_id) else None
    if metadata is None:
        raise DatasetNotFound(dataset_id)
    return DatasetPublic.from_metadata(metadata)


@router.delete(
    "/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND
)
def delete_dataset(datasets: DatasetStoreDep, dataset_id: DatasetId) -> Response:
    """Delete a dataset. Experiments that use it and have not started will fail."""
    if not (is_ulid(dataset_id) and datasets.delete(dataset_id)):
        raise DatasetNotFound(dataset_id)
    logger.info("dataset %s deleted", dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def resolve_uploaded_dataset(
    spec: ExperimentSpec, datasets: DatasetStore
) -> ExperimentSpec:
    """Copy an uploaded dataset's stored metadata into ``spec`` and validate again.

    Returns ``spec`` unchanged unless it uses an uploaded dataset. The second
    validation checks batch size, loss and model against the stored shape.
    Raises InvalidSpec (422) when the dataset does not exist or the spec does
    not fit it.
    """
    dataset = spec.dataset
    if not isinstance(dataset, UploadedDatasetSpec):
        return spec
    metadata = datasets.get(dataset.id)
    if metadata is None:
        detail = ErrorDetail(
            field="dataset.id",
            value=dataset.id,
            message=(
                f"uploaded dataset {dataset.id} does not exist; upload it with "
                "POST /v1/datasets or list them with GET /v1/datasets"
            ),
        )
        raise InvalidSpec(summarize([detail]), [detail])

    # Unset fields stay unset, so defaults that follow the task (the loss)
    # are chosen again with the stored shape.
    fields = spec.model_dump(mode="json", exclude_unset=True)
    fields["dataset"] = {
        **fields["dataset"],
        "metadata": metadata.spec_info().model_dump(mode="json"),
    }
    try:
        return ExperimentSpec.model_validate(fields)
    except ValidationError as error:
        details = [describe_validation_error(dict(item)) for item in error.errors()]
        raise InvalidSpec(summarize(details), details) from error
