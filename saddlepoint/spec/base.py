"""Base of every spec model: strict about unknown fields and non-finite numbers."""

from pydantic import BaseModel, ConfigDict

UINT32_MAX = 2**32 - 1


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
