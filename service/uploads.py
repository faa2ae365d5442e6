"""Parse and validate dataset uploads: NPZ archives or CSV text.

Nothing here unpickles. An NPZ member's header is read and checked (dtype,
shape, declared size) before any array data, and arrays load with
``allow_pickle=False``, so an object array is rejected before it is read.
Each problem raises :class:`UploadError` naming the array, column or query
parameter, the bad value and the fix.
"""

import array
import csv
import io
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Literal

import numpy as np

from saddlepoint.datasets import Task
from saddlepoint.settings import Settings
from saddlepoint.store import NewDataset

if TYPE_CHECKING:
    from _csv import Reader

NPZ_MEMBERS = ("X", "y")
# Room for the .npy magic string and header in front of the array data.
NPY_HEADER_BYTES = 65_536
# Bytes per stored value: X and y are stored as 8-byte numbers.
STORED_VALUE_BYTES = 8
# Exceptions that zipfile and numpy raise on a damaged, encrypted or truncated member.
ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    ValueError,
    OSError,
    EOFError,
    RuntimeError,
    NotImplementedError,
)


class UploadError(Exception):
    """An upload that cannot become a dataset, with the field and the fix."""

    def __init__(self, field: str, message: str, value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.value = value


@dataclass(frozen=True)
class UploadLimits:
    max_rows: int
    max_features: int
    max_classes: int
    max_stored_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "UploadLimits":
        return cls(
            max_rows=settings.max_dataset_rows,
            max_features=settings.max_dataset_features,
            max_classes=settings.max_dataset_classes,
            max_stored_bytes=settings.max_dataset_bytes,
        )


@dataclass(frozen=True)
class UploadOptions:
    """Query parameters of an upload."""

    task: Task
    label_column: str | None = None
    image_shape: tuple[int, int, int] | None = None
    name: str | None = None


def parse_upload(
    body: bytes,
    source: Literal["npz", "csv"],
    options: UploadOptions,
    limits: UploadLimits,
) -> NewDataset:
    """Turn an upload body into a validated dataset ready to store."""
    raw_y: np.ndarray | list[str]
    if source == "npz":
        if options.label_column is not None:
            raise UploadError(
                "label_column",
                "label_column applies to CSV uploads only; an NPZ upload has "
                "its labels in the array y, so leave label_column out",
                options.label_column,
            )
        x, raw_y = read_npz(body, limits)
        feature_names = [f"x{index}" for index in range(x.shape[1])]
        labels_field = "y"
    else:
        x, raw_y, feature_names = read_csv(body, options, limits)
        labels_field = str(options.label_column)
    _check_finite("X", x)
    y, class_labels = encode_targets(raw_y, options.task, labels_field, limits)
    _check_image_shape(options.image_shape, x.shape[1])
    return NewDataset(
        x=x,
        y=y,
        task=options.task,
        source=source,
        feature_names=feature_names,
        class_labels=class_labels,
        image_shape=options.image_shape,
        name=options.name,
    )


# NPZ


def read_npz(body: bytes, limits: UploadLimits) -> tuple[np.ndarray, np.ndarray]:
    """Read X (N, F) as float64 and the raw y (N,) from an NPZ archive."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except ARCHIVE_ERRORS as error:
        raise UploadError(
            "body",
            "the body is not an NPZ archive (a zip file of .npy arrays); save "
            "it with numpy.savez(file, X=X, y=y) or send CSV as text/csv",
        ) from error
    with archive:
        _check_members(archive)
        x = _read_member(archive, "X", limits)
        y = _read_member(archive, "y", limits)
    if x.ndim != 2:
        raise UploadError(
            "X", f"X must be 2-D (samples, features) but has shape {x.shape}", x.ndim
        )
    if y.ndim != 1:
        raise UploadError(
            "y", f"y must be 1-D (samples,) but has shape {y.shape}", y.ndim
        )
    if len(y) != len(x):
        raise UploadError(
            "y",
            f"y has {len(y)} samples but X has {len(x)}; both need one row per sample",
            len(y),
        )
    _check_size(x.shape[0], x.shape[1], limits)
    if x.dtype.kind not in "biuf":
        raise UploadError(
            "X",
            f"X has dtype {x.dtype}; it must be numeric (bool, integer or float)",
            str(x.dtype),
        )
    return np.asarray(x, dtype=np.float64), y


def _check_members(archive: zipfile.ZipFile) -> None:
    names = sorted(archive.namelist())
    arrays = [name.removesuffix(".npy") for name in names]
    missing = [name for name in NPZ_MEMBERS if f"{name}.npy" not in names]
    extra = [
        array
        for array, name in zip(arrays, names, strict=True)
        if array not in NPZ_MEMBERS or not name.endswith(".npy")
    ]
    if missing or extra:
        raise UploadError(
            missing[0] if missing else extra[0],
            f"the archive must contain exactly the arrays X and y but contains "
            f"{arrays}; save it with numpy.savez(file, X=X, y=y)",
            arrays,
        )


def _read_member(
    archive: zipfile.ZipFile, name: str, limits: UploadLimits
) -> np.ndarray:
    """Check one .npy member's header, then load it without pickle."""
    info = archive.getinfo(f"{name}.npy")
    limit = limits.max_stored_bytes + NPY_HEADER_BYTES
    if info.file_size > limit:
        raise UploadError(
            name,
            f"{name} takes {info.file_size} bytes uncompressed but a dataset "
            f"may store at most {limits.max_stored_bytes}; send fewer samples",
            info.file_size,
        )
    try:
        with archive.open(info) as member:
            shape, dtype = _read_header(member, name)
        declared = math.prod(shape) * dtype.itemsize
        if declared > info.file_size:
            raise UploadError(
                name,
                f"{name} declares shape {shape} of {dtype} ({declared} bytes) but "
                f"the archive contains only {info.file_size} bytes for it; the "
                "file is truncated or corrupt",
                list(shape),
            )
        with archive.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except ARCHIVE_ERRORS as error:
        raise UploadError(name, f"{name} could not be read: {error}") from error


def _read_header(member: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as error:
        raise UploadError(
            name, f"{name} is not a valid .npy array: {error}", None
        ) from error
    if dtype.hasobject:
        raise UploadError(
            name,
            f"{name} is an object array ({dtype}), which only pickle can load, "
            "and uploads are never unpickled; save numeric arrays, or strings "
            "as a fixed-width str dtype for y",
            str(dtype),
        )
    return shape, dtype


# CSV


def read_csv(
    body: bytes, options: UploadOptions, limits: UploadLimits
) -> tuple[np.ndarray, np.ndarray | list[str], list[str]]:
    """Read X (N, F) as float64, the targets and the feature names from CSV.

    Regression targets come back as float64 (N,), classification labels as
    the raw strings of the label column.
    """
    if options.label_column is None:
        raise UploadError(
            "label_column",
            "a CSV upload needs label_column, the name of the column that contains "
            "the labels; pass it as a query parameter",
        )
    rows = csv.reader(io.StringIO(_decode(body)))
    header = next(rows, None)
    if not header:
        raise UploadError("body", "the CSV is empty; send a header row and data")
    label_index = _label_index(header, options.label_column)
    feature_names = header[:label_index] + header[label_index + 1 :]
    _check_size(1, len(feature_names), limits)

    regression = options.task == Task.REGRESSION
    values: array.array[float] = array.array("d")
    targets: array.array[float] = array.array("d")
    labels: list[str] = []
    for line, row in _data_rows(rows, len(header)):
        if regression:
            targets.append(_parse_float(row[label_index], header[label_index], line))
        else:
            labels.append(row[label_index])
        for column, cell in enumerate(row):
            if column != label_index:
                values.append(_parse_float(cell, header[column], line))
        samples = len(targets) + len(labels)
        if samples > limits.max_rows:
            _check_size(samples, len(feature_names), limits)
    samples = len(targets) + len(labels)
    if samples == 0:
        raise UploadError("body", "the CSV has a header but no data rows")
    _check_size(samples, len(feature_names), limits)
    x = np.frombuffer(values, dtype=np.float64).reshape(samples, -1)
    y = np.frombuffer(targets, dtype=np.float64) if regression else labels
    return x, y, feature_names


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UploadError(
            "body",
            f"the CSV is not UTF-8 text (invalid byte at offset {error.start}); "
            "save it as UTF-8",
        ) from error


def _label_index(header: list[str], label_column: str) -> int:
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise UploadError(
            "body",
            f"the CSV header repeats the column names {duplicates}; give every "
            "column a unique name",
            duplicates,
        )
    if label_column not in header:
        raise UploadError(
            "label_column",
            f"column {label_column!r} is not in the CSV header; the columns are "
            f"{header[:20]}",
            label_column,
        )
    if len(header) < 2:
        raise UploadError(
            "body",
            "the CSV has only the label column; it needs at least one feature column",
        )
    return header.index(label_column)


def _data_rows(rows: "Reader", width: int) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, row) for every non-blank data row of equal width."""
    try:
        for row in rows:
            if not row:
                continue
            line = rows.line_num
            if len(row) != width:
                raise UploadError(
                    "body",
                    f"line {line} has {len(row)} fields but the header has "
                    f"{width}; every row needs one value per column",
                    len(row),
                )
            yield line, row
    except csv.Error as error:
        raise UploadError("body", f"the CSV is malformed: {error}") from error


def _parse_float(cell: str, column: str, line: int) -> float:
    try:
        return float(cell)
    except ValueError:
        problem = "is empty" if not cell.strip() else f"{cell[:50]!r} is not a number"
        raise UploadError(
            column,
            f"column {column!r}, line {line}: the value {problem}; feature "
            "columns must contain numbers",
            cell[:50],
        ) from None


# Shared checks


def _check_size(rows: int, features: int, limits: UploadLimits) -> None:
    if rows > limits.max_rows:
        raise UploadError(
            "X",
            f"the dataset has more than {limits.max_rows} samples, the maximum "
            "this service stores (setting SADDLE_MAX_DATASET_ROWS); send fewer",
            rows,
        )
    if features > limits.max_features:
        raise UploadError(
            "X",
            f"the dataset has {features} features but this service stores at "
            f"most {limits.max_features} (setting SADDLE_MAX_DATASET_FEATURES)",
            features,
        )
    if features < 1:
        raise UploadError("X", "the dataset needs at least one feature", features)
    stored = rows * (features + 1) * STORED_VALUE_BYTES
    if stored > limits.max_stored_bytes:
        raise UploadError(
            "X",
            f"{rows} samples of {features} features take {stored} bytes as "
            f"float64 but a dataset may store at most {limits.max_stored_bytes} "
            "(setting SADDLE_MAX_DATASET_BYTES); send fewer samples or features",
            stored,
        )


def _check_finite(field: str, values: np.ndarray) -> None:
    finite = np.isfinite(values)
    if finite.all():
        return
    position = tuple(int(index) for index in np.argwhere(~finite)[0])
    where = (
        f"row {position[0]}, column {position[1]}"
        if len(position) == 2
        else f"row {position[0]}"
    )
    raise UploadError(
        field,
        f"{field} has the non-finite value {values[position]} at {where} "
        f"(0-based) and {int((~finite).sum())} in all; remove or fill in NaN "
        "and infinite values",
        str(values[position]),
    )


def _check_image_shape(image_shape: tuple[int, int, int] | None, features: int) -> None:
    if image_shape is not None and math.prod(image_shape) != features:
        raise UploadError(
            "image_shape",
            f"image_shape {image_shape} has {math.prod(image_shape)} values but "
            f"each sample has {features} features; channels * height * width "
            "must equal the feature count",
            list(image_shape),
        )


def encode_targets(
    raw: np.ndarray | list[str], task: Task, field: str, limits: UploadLimits
) -> tuple[np.ndarray, list[str] | None]:
    """Return targets ready to store and, for mapped string labels, the labels.

    Classification labels become int64 indices in [0, C) with every class
    present at least twice, because a stratified split needs that. Integer
    labels must already be 0 to C - 1, and string labels map to indices in
    sorted order.
    Regression targets become finite float64.
    """
    if task == Task.REGRESSION:
        return _regression_targets(raw, field), None
    labels, class_labels = _class_indices(raw, field)
    _check_classes(labels, class_labels, field, limits)
    return labels, class_labels


def _regression_targets(raw: np.ndarray | list[str], field: str) -> np.ndarray:
    if isinstance(raw, list) or raw.dtype.kind not in "biuf":
        dtype = "str" if isinstance(raw, list) else raw.dtype
        raise UploadError(
            field,
            f"regression targets must be numbers but {field} has dtype {dtype}",
            str(dtype),
        )
    targets = np.asarray(raw, dtype=np.float64)
    _check_finite(field, targets)
    return targets


def _class_indices(
    raw: np.ndarray | list[str], field: str
) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(raw, list):
        integers = _as_integers(raw)
        if integers is not None:
            return integers, None
        raw = np.array(raw)
    if raw.dtype.kind in "biu":
        return np.asarray(raw, dtype=np.int64), None
    if raw.dtype.kind == "U":
        class_labels, labels = np.unique(raw, return_inverse=True)
        return labels.astype(np.int64), [str(label) for label in class_labels]
    raise UploadError(
        field,
        f"classification labels must be integers 0 to C - 1 or strings, but "
        f"{field} has dtype {raw.dtype}; cast them, or upload with "
        "task=regression for real-valued targets",
        str(raw.dtype),
    )


def _as_integers(cells: list[str]) -> np.ndarray | None:
    try:
        return np.array([int(cell) for cell in cells], dtype=np.int64)
    except (ValueError, OverflowError):
        return None


def _check_classes(
    labels: np.ndarray,
    class_labels: list[str] | None,
    field: str,
    limits: UploadLimits,
) -> None:
    if labels.min() < 0:
        raise UploadError(
            field,
            f"{field} has the negative label {labels.min()}; integer labels "
            "must be 0 to C - 1, or use string labels",
            int(labels.min()),
        )
    classes = int(labels.max()) + 1
    if classes > limits.max_classes:
        raise UploadError(
            field,
            f"{field} has {classes} classes but this service accepts at most "
            f"{limits.max_classes} (setting SADDLE_MAX_DATASET_CLASSES)",
            classes,
        )
    counts = np.bincount(labels, minlength=classes)
    if classes < 2:
        raise UploadError(
            field, f"{field} has one class only; classification needs 2 or more"
        )
    sparse = int(np.argmin(counts))
    if counts[sparse] < 2:
        name = repr(class_labels[sparse]) if class_labels else str(sparse)
        raise UploadError(
            field,
            f"class {name} has {counts[sparse]} samples but a stratified split "
            "needs at least 2 of every class 0 to C - 1; add samples or "
            "renumber the labels without gaps",
            int(counts[sparse]),
        )
