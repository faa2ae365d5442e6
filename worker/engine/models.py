"""Networks built from a spec."""

from torch import nn

from saddlepoint.spec import Activation, MlpSpec

ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.RELU: nn.ReLU,
    Activation.TANH: nn.Tanh,
    Activation.SIGMOID: nn.Sigmoid,
    Activation.IDENTITY: nn.Identity,
}


def build_mlp(spec: MlpSpec, features: int, outputs: int) -> nn.Sequential:
    """Build Linear layers of the spec's widths with its activation between them.

    The output layer has no activation: it returns logits, and the loss applies
    softmax where it needs one. Weights use PyTorch's default initialization
    under whatever seed the caller has set.
    """
    layers: list[nn.Module] = []
    fan_in = features
    for width in spec.hidden_sizes:
        layers.append(nn.Linear(fan_in, width))
        layers.append(ACTIVATIONS[spec.activation]())
        fan_in = width
    layers.append(nn.Linear(fan_in, outputs))
    return nn.Sequential(*layers)
