"""Model part of the spec: an MLP shorthand or a list of layers.

Both forms expand to one list of layers, which :mod:`saddlepoint.spec.shapes`
checks shape by shape without PyTorch and the worker builds in that order.
"""

import itertools
import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from saddlepoint.spec.base import StrictModel
from saddlepoint.spec.unions import tag_validator, validation_error

MAX_WIDTH = 4096
MAX_CHANNELS = 512
MAX_KERNEL_SIZE = 32
MAX_LAYERS = 64
# Explicit initial values: at most this many numbers per tensor, each at most
# this large in magnitude, so a spec stays small.
MAX_EXPLICIT_VALUES = 65_536
MAX_EXPLICIT_MAGNITUDE = 1e6


class Activation(StrEnum):
    RELU = "relu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    GELU = "gelu"
    IDENTITY = "identity"


class Distribution(StrEnum):
    UNIFORM = "uniform"
    NORMAL = "normal"


class FanMode(StrEnum):
    FAN_IN = "fan_in"
    FAN_OUT = "fan_out"


class GainNonlinearity(StrEnum):
    RELU = "relu"
    LINEAR = "linear"
    TANH = "tanh"
    SIGMOID = "sigmoid"


Magnitude = Annotated[
    float, Field(ge=-MAX_EXPLICIT_MAGNITUDE, le=MAX_EXPLICIT_MAGNITUDE)
]
BiasValue = Annotated[
    Magnitude, Field(description="Value of every bias entry, when the layer has one.")
]


class DefaultInit(StrictModel):
    """PyTorch's default initialization of the layer, under the spec's seed."""

    kind: Literal["default"] = "default"


class ZerosInit(StrictModel):
    """Every weight and bias entry 0."""

    kind: Literal["zeros"]


class ConstantInit(StrictModel):
    """Every weight entry ``value`` and every bias entry ``bias``."""

    kind: Literal["constant"]
    value: Magnitude
    bias: BiasValue = 0.0


class NormalInit(StrictModel):
    """Weights drawn from N(mean, std²), and every bias entry set to ``bias``."""

    kind: Literal["normal"]
    mean: Magnitude = 0.0
    std: float = Field(0.01, gt=0, le=100)
    bias: BiasValue = 0.0


class XavierInit(StrictModel):
    """Glorot and Bengio (2010): variance 2 * gain² / (fan_in + fan_out).

    ``uniform`` draws from U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)),
    ``normal`` from N(0, 2 * gain² / (fan_in + fan_out)). Biases are ``bias``.
    """

    kind: Literal["xavier"]
    distribution: Distribution = Distribution.UNIFORM
    gain: float = Field(1.0, gt=0, le=100)
    bias: BiasValue = 0.0


class KaimingInit(StrictModel):
    """He et al. (2015): variance gain² / fan, gain from the nonlinearity.

    The gain is sqrt(2) for relu, 5/3 for tanh and 1 for linear and sigmoid
    (``torch.nn.init.calculate_gain``). Biases are ``bias``.
    """

    kind: Literal["kaiming"]
    distribution: Distribution = Distribution.NORMAL
    mode: FanMode = FanMode.FAN_IN
    nonlinearity: GainNonlinearity = GainNonlinearity.RELU
    bias: BiasValue = 0.0


class ValuesInit(StrictModel):
    """Exact initial values, so a run starts at a chosen point.

    ``weight`` is nested lists of shape (out_features, in_features) for linear
    or (out_channels, in_channels, kernel_size, kernel_size) for conv2d.
    ``bias`` has out_features or out_channels entries, and is required when
    the layer has a bias and rejected when it has none. Training runs in
    float32, so each value becomes its nearest float32.
    """

    kind: Literal["values"]
    weight: list[Any] = Field(
        description="Nested lists of numbers in the layer's weight shape."
    )
    bias: list[Magnitude] | None = Field(
        None, max_length=MAX_WIDTH, description="One number per output."
    )

    @field_validator("weight")
    @classmethod
    def _weight_is_regular(cls, weight: list[Any]) -> list[Any]:
        nested_shape(weight)
        return weight


InitUnion = (
    DefaultInit
    | ZerosInit
    | ConstantInit
    | NormalInit
    | XavierInit
    | KaimingInit
    | ValuesInit
)
InitSpec = Annotated[
    InitUnion,
    Field(discriminator="kind"),
    tag_validator(InitUnion, "kind", "initialization", default="default"),
]

INIT_DESCRIPTION = "Initial weights and biases; PyTorch's default unless set."


def nested_shape(value: list[Any]) -> tuple[int, ...]:
    """Return the shape of regular nested lists of finite, bounded numbers.

    Raises PydanticCustomError when the lists are ragged, too deep, too large,
    or hold something other than numbers within ``MAX_EXPLICIT_MAGNITUDE``.
    """
    shape: list[int] = []
    level: list[Any] = [value]
    while level and all(isinstance(item, list) for item in level):
        lengths = {len(item) for item in level}
        if len(lengths) > 1 or 0 in lengths:
            raise PydanticCustomError(
                "ragged_values",
                "values must be non-empty nested lists of equal length at each "
                "depth (a regular array); lengths {lengths} were found at depth "
                "{depth}",
                {"lengths": sorted(lengths), "depth": len(shape)},
            )
        shape.append(lengths.pop())
        if len(shape) > 4 or math.prod(shape) > MAX_EXPLICIT_VALUES:
            raise PydanticCustomError(
                "too_many_values",
                "values may have at most 4 dimensions and {limit} numbers",
                {"limit": MAX_EXPLICIT_VALUES},
            )
        level = [item for sublist in level for item in sublist]
    for item in level:
        _check_number(item)
    return tuple(shape)


def _check_number(item: object) -> None:
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise PydanticCustomError(
            "number_expected",
            "values must be numbers or lists of numbers, found {item}",
            {"item": repr(item)[:50]},
        )
    if not (math.isfinite(item) and abs(item) <= MAX_EXPLICIT_MAGNITUDE):
        raise PydanticCustomError(
            "value_out_of_range",
            "values must be finite with magnitude at most {limit:g}, found {item}",
            {"limit": MAX_EXPLICIT_MAGNITUDE, "item": repr(item)},
        )


class LinearLayer(StrictModel):
    """Fully connected layer: y = x W^T + b on a flat input of in_features."""

    kind: Literal["linear"]
    out_features: int = Field(ge=1, le=MAX_WIDTH)
    bias: bool = True
    init: InitSpec = Field(default_factory=DefaultInit, description=INIT_DESCRIPTION)


class ActivationLayer(StrictModel):
    """Elementwise nonlinearity that keeps the shape."""

    kind: Literal["relu", "tanh", "sigmoid", "gelu", "identity"]


class DropoutLayer(StrictModel):
    """Zeroes each entry with probability p in training, scales the rest by 1/(1-p).

    The analysis runs the model in eval mode, where dropout does nothing.
    """

    kind: Literal["dropout"]
    p: float = Field(0.5, ge=0, lt=1)


class BatchNormLayer(StrictModel):
    """Batch normalization over features (flat input) or channels (image input).

    Training uses batch statistics, so every batch of a flat input needs at
    least 2 samples. Evaluation and the analysis use the running statistics.
    """

    kind: Literal["batch_norm"]
    momentum: float = Field(0.1, gt=0, le=1)
    eps: float = Field(1e-5, gt=0, le=1)
    affine: bool = Field(True, description="Learn a scale and shift per feature.")


class Conv2dLayer(StrictModel):
    """2-D convolution with square kernels on a (channels, height, width) input.

    Output size per side: floor((size + 2 * padding - kernel_size) / stride) + 1.
    """

    kind: Literal["conv2d"]
    out_channels: int = Field(ge=1, le=MAX_CHANNELS)
    kernel_size: int = Field(3, ge=1, le=MAX_KERNEL_SIZE)
    stride: int = Field(1, ge=1, le=MAX_KERNEL_SIZE)
    padding: int = Field(0, ge=0, le=MAX_KERNEL_SIZE)
    bias: bool = True
    init: InitSpec = Field(default_factory=DefaultInit, description=INIT_DESCRIPTION)


class MaxPool2dLayer(StrictModel):
    """2-D max pooling with square windows. ``stride`` defaults to ``kernel_size``.

    ``padding`` may be at most half of ``kernel_size``, as PyTorch requires.
    """

    kind: Literal["max_pool2d"]
    kernel_size: int = Field(2, ge=1, le=MAX_KERNEL_SIZE)
    stride: int | None = Field(None, ge=1, le=MAX_KERNEL_SIZE)
    padding: int = Field(0, ge=0, le=MAX_KERNEL_SIZE // 2)

    @model_validator(mode="after")
    def _padding_fits_kernel(self) -> "MaxPool2dLayer":
        if 2 * self.padding > self.kernel_size:
            raise validation_error(
                "pool_padding_too_large",
                f"max_pool2d padding {self.padding} is more than half of "
                f"kernel_size {self.kernel_size}; use padding at most "
                f"{self.kernel_size // 2}",
                ("padding",),
                self.padding,
            )
        return self

    @property
    def resolved_stride(self) -> int:
        return self.kernel_size if self.stride is None else self.stride


class FlattenLayer(StrictModel):
    """Reshape (channels, height, width) into a flat vector, row-major."""

    kind: Literal["flatten"]


LayerUnion = (
    LinearLayer
    | ActivationLayer
    | DropoutLayer
    | BatchNormLayer
    | Conv2dLayer
    | MaxPool2dLayer
    | FlattenLayer
)
LayerSpec = Annotated[
    LayerUnion, Field(discriminator="kind"), tag_validator(LayerUnion, "kind", "layer")
]

# Layers whose learnable tensors an ``init`` sets.
WeightedLayer = LinearLayer | Conv2dLayer


class MlpSpec(StrictModel):
    """Fully connected network: input, hidden layers with one activation, output.

    The output layer has as many units as the task needs (one per class, or
    one for regression) and no activation after it.
    """

    kind: Literal["mlp"] = "mlp"
    hidden_sizes: list[Annotated[int, Field(ge=1, le=MAX_WIDTH)]] = Field(
        default_factory=lambda: [32],
        max_length=8,
        description="Width of each hidden layer; an empty list is a linear model.",
    )
    activation: Activation = Activation.RELU
    init: InitSpec = Field(
        default_factory=DefaultInit,
        description=(
            "Initialization of every linear layer. Explicit values need the "
            'layer list form, {"kind": "layers"}.'
        ),
    )

    @field_validator("init")
    @classmethod
    def _no_explicit_values(cls, init: Any) -> Any:
        if isinstance(init, ValuesInit):
            raise PydanticCustomError(
                "values_need_layers",
                "explicit values differ in shape per layer; write the model as "
                '{"kind": "layers", "layers": [...]} and give init values per '
                "linear layer",
            )
        return init

    def to_layers(self, outputs: int) -> list[LinearLayer | ActivationLayer]:
        """Expand to linear layers with the activation between them."""
        layers: list[LinearLayer | ActivationLayer] = []
        for width in self.hidden_sizes:
            layers.append(
                LinearLayer(kind="linear", out_features=width, init=self.init)
            )
            layers.append(ActivationLayer.model_validate({"kind": self.activation}))
        layers.append(LinearLayer(kind="linear", out_features=outputs, init=self.init))
        return layers

    def parameter_count(self, features: int, outputs: int) -> int:
        """Count weights and biases of the network for the given input and output."""
        widths = [features, *self.hidden_sizes, outputs]
        return sum(
            fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(widths)
        )


class LayersSpec(StrictModel):
    """Layers applied in order to each sample.

    The input is the flat feature vector. On a dataset with an image shape
    (digits is 1 x 8 x 8), a conv2d or max_pool2d layer that comes before any
    linear or flatten layer receives the input as (channels, height, width). The
    last layer must output exactly the width the task needs: one logit per
    class, or 1 for regression. Nothing is appended automatically.
    """

    kind: Literal["layers"]
    layers: list[LayerSpec] = Field(min_length=1, max_length=MAX_LAYERS)


ModelSpec = Annotated[
    MlpSpec | LayersSpec,
    Field(discriminator="kind"),
    tag_validator(MlpSpec | LayersSpec, "kind", "model", default="mlp"),
]
