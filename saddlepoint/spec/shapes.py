"""Shape inference and parameter counts of a model spec, without PyTorch.

The API uses it to reject impossible models and to count parameters at submit
time, and the worker builds its modules from the same plan, so both sides
agree on every shape. A shape is ``(features,)`` for a flat vector or
``(channels, height, width)`` for an image, always per sample.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from saddlepoint.datasets import DatasetInfo
from saddlepoint.spec.model import (
    ActivationLayer,
    BatchNormLayer,
    Conv2dLayer,
    DropoutLayer,
    FlattenLayer,
    LayersSpec,
    LinearLayer,
    MaxPool2dLayer,
    MlpSpec,
    ValuesInit,
    nested_shape,
)

Shape = tuple[int, ...]
Location = tuple[str | int, ...]


@dataclass(frozen=True)
class PlannedLayer:
    """One layer with its input and output shapes per sample."""

    layer: Any
    input_shape: Shape
    output_shape: Shape
    parameters: int
    # True for the first spatial layer on an image dataset: the worker views
    # the flat input (F,) as (channels, height, width) right before it.
    reshape_input: bool = False


@dataclass(frozen=True)
class ModelPlan:
    layers: list[PlannedLayer]
    input_shape: Shape

    @property
    def parameter_count(self) -> int:
        return sum(planned.parameters for planned in self.layers)

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].output_shape if self.layers else self.input_shape

    @property
    def max_activation_size(self) -> int:
        """Largest number of values one sample has at any point of the model."""
        sizes = [math.prod(planned.output_shape) for planned in self.layers]
        return max([math.prod(self.input_shape), *sizes])

    @property
    def has_flat_batch_norm(self) -> bool:
        """Return whether some batch_norm gets flat vectors (needs 2+ per batch)."""
        return any(
            isinstance(planned.layer, BatchNormLayer) and len(planned.input_shape) == 1
            for planned in self.layers
        )


@dataclass(frozen=True)
class ShapeProblem:
    """A model field that cannot work with the dataset, with the fix."""

    loc: Location
    message: str
    value: object = None


class ModelShapeError(ValueError):
    """The model does not fit the dataset's input or output shape."""

    def __init__(self, problem: ShapeProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def plan_model(
    model: MlpSpec | LayersSpec, info: DatasetInfo, dataset: str
) -> ModelPlan:
    """Infer every layer's shapes for ``info`` and check the output width.

    ``dataset`` names the dataset in messages. Raises ModelShapeError with
    the location of the first problem, relative to the model spec (for
    example ``("layers", 3, "kernel_size")``).
    """
    layers: Sequence[Any] = (
        model.to_layers(info.outputs) if isinstance(model, MlpSpec) else model.layers
    )
    walker = _ShapeWalker(info, dataset)
    planned = [walker.plan(index, layer) for index, layer in enumerate(layers)]
    plan = ModelPlan(layers=planned, input_shape=(info.features,))
    _check_output(plan, info, dataset)
    return plan


def describe_outputs(info: DatasetInfo) -> str:
    if info.classes is None:
        return "1 prediction per sample for regression"
    return f"1 logit per class for {info.classes} classes"


class _ShapeWalker:
    """Carries the current per-sample shape from one layer to the next."""

    def __init__(self, info: DatasetInfo, dataset: str) -> None:
        self.info = info
        self.dataset = dataset
        self.shape: Shape = (info.features,)
        # The shape is still the dataset's flat input, which a spatial layer
        # may view as an image; a linear or flatten layer ends that.
        self.raw_input = True

    def plan(self, index: int, layer: Any) -> PlannedLayer:
        input_shape = self.shape
        reshape = False
        parameters = 0
        if isinstance(layer, LinearLayer):
            parameters = self._linear(index, layer)
        elif isinstance(layer, Conv2dLayer | MaxPool2dLayer):
            reshape = self._to_image(index, layer.kind)
            input_shape = self.shape
            parameters = self._spatial(index, layer)
        elif isinstance(layer, FlattenLayer):
            self.shape = (math.prod(self.shape),)
            self.raw_input = False
        elif isinstance(layer, BatchNormLayer):
            parameters = 2 * self.shape[0] if layer.affine else 0
        elif not isinstance(layer, ActivationLayer | DropoutLayer):
            raise TypeError(f"unknown layer spec {layer!r}")
        return PlannedLayer(layer, input_shape, self.shape, parameters, reshape)

    def _linear(self, index: int, layer: LinearLayer) -> int:
        if len(self.shape) != 1:
            raise _problem(
                (index,),
                f"linear needs a flat input but gets shape {self.shape} from "
                f'layer {index - 1}; add {{"kind": "flatten"}} before it',
                layer.kind,
            )
        in_features = self.shape[0]
        self.shape = (layer.out_features,)
        self.raw_input = False
        _check_values(index, layer, (layer.out_features, in_features))
        return in_features * layer.out_features + layer.bias * layer.out_features

    def _to_image(self, index: int, kind: str) -> bool:
        """Make the current shape an image; return True if the input is viewed."""
        if len(self.shape) == 3:
            return False
        if self.raw_input and self.info.image_shape is not None:
            self.shape = self.info.image_shape
            return True
        if self.raw_input:
            message = (
                f"{kind} needs an image input, but dataset {self.dataset} has no "
                f"image shape (each sample is a flat vector of {self.shape[0]} "
                "features); use linear layers, or upload the data with an "
                "image_shape"
            )
        else:
            message = (
                f"{kind} needs an image input (channels, height, width) but gets "
                f"a flat vector of {self.shape[0]} features from layer "
                f"{index - 1}; put conv2d and max_pool2d layers before flatten "
                "and linear layers"
            )
        raise _problem((index,), message, kind)

    def _spatial(self, index: int, layer: Conv2dLayer | MaxPool2dLayer) -> int:
        channels, height, width = self.shape
        if isinstance(layer, Conv2dLayer):
            stride, out_channels = layer.stride, layer.out_channels
        else:
            stride, out_channels = layer.resolved_stride, channels
        padded = min(height, width) + 2 * layer.padding
        if layer.kernel_size > padded:
            raise _problem(
                (index, "kernel_size"),
                f"kernel_size {layer.kernel_size} is larger than the input "
                f"{height} x {width} with padding {layer.padding}; use "
                f"kernel_size at most {padded} or more padding",
                layer.kernel_size,
            )
        self.shape = (
            out_channels,
            _window_count(height, layer.kernel_size, stride, layer.padding),
            _window_count(width, layer.kernel_size, stride, layer.padding),
        )
        if not isinstance(layer, Conv2dLayer):
            return 0
        kernel = (out_channels, channels, layer.kernel_size, layer.kernel_size)
        _check_values(index, layer, kernel)
        return math.prod(kernel) + layer.bias * out_channels


def _window_count(size: int, kernel_size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel_size) // stride + 1


def _check_values(
    index: int, layer: LinearLayer | Conv2dLayer, weight_shape: Shape
) -> None:
    init = layer.init
    if not isinstance(init, ValuesInit):
        return
    shape = nested_shape(init.weight)
    if shape != weight_shape:
        raise _problem(
            (index, "init", "weight"),
            f"weight has shape {shape} but this {layer.kind} layer needs "
            f"{weight_shape} ({_weight_axes(layer)})",
            list(shape),
        )
    outputs = weight_shape[0]
    if layer.bias and init.bias is None:
        raise _problem(
            (index, "init", "bias"),
            f"bias is required because the layer has a bias of {outputs} "
            "values; give init.bias or set the layer's bias to false",
        )
    if not layer.bias and init.bias is not None:
        raise _problem(
            (index, "init", "bias"),
            "the layer has bias false, so init.bias must be left out",
            len(init.bias),
        )
    if init.bias is not None and len(init.bias) != outputs:
        raise _problem(
            (index, "init", "bias"),
            f"bias has {len(init.bias)} values but the layer has {outputs} outputs",
            len(init.bias),
        )


def _weight_axes(layer: LinearLayer | Conv2dLayer) -> str:
    if isinstance(layer, LinearLayer):
        return "out_features, in_features"
    return "out_channels, in_channels, kernel_size, kernel_size"


def _check_output(plan: ModelPlan, info: DatasetInfo, dataset: str) -> None:
    expected = (info.outputs,)
    if plan.output_shape == expected:
        return
    needs = f"dataset {dataset} needs {info.outputs} ({describe_outputs(info)})"
    last_linear = _last_width_layer(plan)
    if len(plan.output_shape) == 1 and last_linear is not None:
        raise _problem(
            (last_linear, "out_features"),
            f"the model outputs {plan.output_shape[0]} values per sample but "
            f"{needs}; set out_features of the last linear layer to "
            f"{info.outputs}",
            plan.output_shape[0],
        )
    flatten = '{"kind": "flatten"}, ' if len(plan.output_shape) == 3 else ""
    raise ModelShapeError(
        ShapeProblem(
            loc=("layers",),
            message=(
                f"the model outputs shape {plan.output_shape} per sample but "
                f"{needs}; end the list with {flatten}"
                f'{{"kind": "linear", "out_features": {info.outputs}}}'
            ),
            value=list(plan.output_shape),
        )
    )


def _last_width_layer(plan: ModelPlan) -> int | None:
    """Index of the last linear layer if no later layer changes the width."""
    for index in range(len(plan.layers) - 1, -1, -1):
        layer = plan.layers[index].layer
        if isinstance(layer, LinearLayer):
            return index
        if isinstance(layer, Conv2dLayer | MaxPool2dLayer | FlattenLayer):
            return None
    return None


def _problem(loc: Location, message: str, value: object = None) -> ModelShapeError:
    return ModelShapeError(
        ShapeProblem(loc=("layers", *loc), message=message, value=value)
    )
