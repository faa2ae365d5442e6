"""Model part of the spec."""

import itertools
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from saddlepoint.spec.base import StrictModel


class Activation(StrEnum):
    RELU = "relu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    IDENTITY = "identity"


class MlpSpec(StrictModel):
    """Fully connected network: input, hidden layers with one activation, output."""

    kind: Literal["mlp"] = "mlp"
    hidden_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [32],
        max_length=8,
        description="Width of each hidden layer; an empty list is a linear model.",
    )
    activation: Activation = Activation.RELU

    def parameter_count(self, features: int, outputs: int) -> int:
        """Count weights and biases of the network for the given input and output."""
        widths = [features, *self.hidden_sizes, outputs]
        return sum(
            fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(widths)
        )
