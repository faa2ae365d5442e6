"""Measurement part of the spec: extra numbers the training loop records."""

from collections import Counter
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from saddlepoint.spec.base import StrictModel

MAX_GRADIENT_NOISE_EPOCHS = 100


class MetricsSpec(StrictModel):
    """Measurements beyond the loss, accuracy and timings every run records."""

    gradient_noise_epochs: list[Annotated[int, Field(ge=0, le=100_000)]] = Field(
        default_factory=list,
        max_length=MAX_GRADIENT_NOISE_EPOCHS,
        description=(
            "Epochs (0-based) at whose end the gradient noise is measured: one "
            "extra pass over the training split without updates, costing about "
            "one epoch of gradient computation each."
        ),
    )

    @field_validator("gradient_noise_epochs")
    @classmethod
    def _epochs_unique(cls, epochs: list[int]) -> list[int]:
        counts = Counter(epochs)
        repeated = sorted(epoch for epoch, count in counts.items() if count > 1)
        if repeated:
            raise PydanticCustomError(
                "gradient_noise_epochs_repeated",
                "gradient_noise_epochs lists epochs {repeated} more than once; "
                "list each epoch once",
                {"repeated": repeated},
            )
        return epochs

    def check_epochs(self, epochs: int) -> None:
        """Raise PydanticCustomError unless every listed epoch is below ``epochs``.

        An experiment spec calls this with its own ``epochs``, which this model
        cannot see on its own.
        """
        late = [epoch for epoch in self.gradient_noise_epochs if epoch >= epochs]
        if late:
            raise PydanticCustomError(
                "gradient_noise_epoch_out_of_range",
                "gradient_noise_epochs {late} are not below epochs={epochs}, so "
                "they would never be measured; use epochs from 0 to {last}",
                {"late": late, "epochs": epochs, "last": epochs - 1},
            )
