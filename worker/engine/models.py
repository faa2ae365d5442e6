"""Networks built from a spec, layer by layer from its shape plan."""

from typing import Any

import torch
from torch import nn

from saddlepoint.datasets import DatasetInfo
from saddlepoint.spec import (
    Activation,
    ActivationLayer,
    BatchNormLayer,
    ConstantInit,
    Conv2dLayer,
    DefaultInit,
    DropoutLayer,
    FlattenLayer,
    KaimingInit,
    LayersSpec,
    LinearLayer,
    MaxPool2dLayer,
    MlpSpec,
    NormalInit,
    PlannedLayer,
    ValuesInit,
    XavierInit,
    ZerosInit,
    plan_model,
)
from saddlepoint.spec.model import Distribution

ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.RELU: nn.ReLU,
    Activation.TANH: nn.Tanh,
    Activation.SIGMOID: nn.Sigmoid,
    Activation.GELU: nn.GELU,
    Activation.IDENTITY: nn.Identity,
}


def build_model(
    spec: MlpSpec | LayersSpec, info: DatasetInfo, dataset: str = "in use"
) -> nn.Sequential:
    """Build the spec's layers for inputs (N, F) and outputs (N, info.outputs).

    The model always takes flat rows (N, F). On an image dataset it views them
    as (N, C, H, W) with ``nn.Unflatten`` right before the first conv2d or
    max_pool2d layer (the one the plan marks with ``reshape_input``). Linear
    and conv2d layers are initialized after construction. Random methods,
    PyTorch's default among them, draw from the global generator, so the
    caller seeds it first.

    Raises ModelShapeError when the model does not fit ``info``. ``dataset``
    names the dataset in its message.
    """
    plan = plan_model(spec, info, dataset)
    modules: list[nn.Module] = []
    for planned in plan.layers:
        if planned.reshape_input:
            modules.append(nn.Unflatten(1, planned.input_shape))
        modules.append(_build_layer(planned))
    return nn.Sequential(*modules)


def build_mlp(spec: MlpSpec | LayersSpec, features: int, outputs: int) -> nn.Sequential:
    """Build a model for flat inputs of ``features`` and ``outputs`` classes.

    Kept for callers that have no DatasetInfo; it cannot build convolution
    layers, which need an image shape, so prefer :func:`build_model`.
    """
    return build_model(spec, DatasetInfo(samples=1, features=features, classes=outputs))


def _build_layer(planned: PlannedLayer) -> nn.Module:
    layer = planned.layer
    if isinstance(layer, LinearLayer | Conv2dLayer):
        module = _build_weighted(layer, planned)
        initialize(module, layer.init)
        return module
    if isinstance(layer, ActivationLayer):
        return ACTIVATIONS[Activation(layer.kind)]()
    if isinstance(layer, DropoutLayer):
        return nn.Dropout(p=layer.p)
    if isinstance(layer, BatchNormLayer):
        norm = nn.BatchNorm1d if len(planned.input_shape) == 1 else nn.BatchNorm2d
        return norm(
            planned.input_shape[0],
            eps=layer.eps,
            momentum=layer.momentum,
            affine=layer.affine,
        )
    if isinstance(layer, MaxPool2dLayer):
        return nn.MaxPool2d(
            layer.kernel_size, stride=layer.resolved_stride, padding=layer.padding
        )
    if isinstance(layer, FlattenLayer):
        return nn.Flatten()
    raise TypeError(f"unknown layer spec {layer!r}")


def _build_weighted(
    layer: LinearLayer | Conv2dLayer, planned: PlannedLayer
) -> nn.Linear | nn.Conv2d:
    if isinstance(layer, LinearLayer):
        return nn.Linear(planned.input_shape[0], layer.out_features, bias=layer.bias)
    return nn.Conv2d(
        planned.input_shape[0],
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        bias=layer.bias,
    )


@torch.no_grad()
def initialize(module: nn.Linear | nn.Conv2d, init: Any) -> None:
    """Set ``module``'s weight and bias as the init spec defines them.

    Random methods draw from PyTorch's global generator.
    """
    weight, bias = module.weight, module.bias
    match init:
        case DefaultInit():
            return
        case ValuesInit():
            weight.copy_(torch.tensor(init.weight, dtype=weight.dtype))
            if bias is not None and init.bias is not None:
                bias.copy_(torch.tensor(init.bias, dtype=bias.dtype))
            return
        case ZerosInit():
            nn.init.zeros_(weight)
        case ConstantInit():
            nn.init.constant_(weight, init.value)
        case NormalInit():
            nn.init.normal_(weight, mean=init.mean, std=init.std)
        case XavierInit():
            _xavier(weight, init)
        case KaimingInit():
            _kaiming(weight, init)
        case _:
            raise TypeError(f"unknown init spec {init!r}")
    if bias is not None:
        nn.init.constant_(bias, getattr(init, "bias", 0.0))


def _xavier(weight: torch.Tensor, init: XavierInit) -> None:
    if init.distribution == Distribution.UNIFORM:
        nn.init.xavier_uniform_(weight, gain=init.gain)
    else:
        nn.init.xavier_normal_(weight, gain=init.gain)


def _kaiming(weight: torch.Tensor, init: KaimingInit) -> None:
    options: dict[str, Any] = {
        "mode": init.mode.value,
        "nonlinearity": init.nonlinearity.value,
    }
    if init.distribution == Distribution.UNIFORM:
        nn.init.kaiming_uniform_(weight, **options)
    else:
        nn.init.kaiming_normal_(weight, **options)
