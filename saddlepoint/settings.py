"""Deployment settings, read from the environment by the API and the workers."""

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from saddlepoint.spec import Limits


class Settings(BaseSettings):
    """Settings named ``SADDLE_<FIELD>`` in the environment, plus ``REDIS_URL``."""

    model_config = SettingsConfigDict(
        env_prefix="SADDLE_", extra="ignore", populate_by_name=True
    )

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "SADDLE_REDIS_URL"),
    )
    max_exact_parameters: int = Field(
        5000,
        ge=1,
        description=(
            "Largest model the exact Hessian analysis accepts. The Hessian of P "
            "parameters takes 8*P*P bytes in float64 (200 MB at 5,000)."
        ),
    )
    auto_exact_parameters: int = Field(
        1200,
        ge=1,
        description=(
            'Largest model that analysis.method "auto" analyzes exactly; larger '
            "ones use Lanczos. bench/auto_threshold.py measured the crossover at "
            "about 1,200 parameters on digits-sized data, 2 CPU cores "
            "(docs/benchmarks.md)."
        ),
    )
    max_total_steps: int = Field(
        1_000_000, ge=1, description="Most optimizer updates one experiment may run."
    )
    run_time_limit_s: int = Field(
        3600, ge=1, description="Wall time after which training fails as time_limit."
    )
    analysis_time_limit_s: int = Field(
        1800, ge=1, description="Time allowed for the analysis after training."
    )
    max_sweep_children: int = Field(
        256, ge=1, description="Maximum number of experiments one sweep may create."
    )
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body the API reads."
    )
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description=(
            "Longest wait for the next part of a request body; a client that "
            "pauses longer gets 408."
        ),
    )
    max_parameters: int = Field(
        20_000_000,
        ge=1,
        description="Maximum parameters of a model a worker trains, analysis or not.",
    )
    max_activation_values: int = Field(
        250_000_000,
        ge=1,
        description=(
            "Maximum values in one layer output over the whole training split, "
            "which evaluation runs in one batch (1 GB in float32 at the default)."
        ),
    )
    max_upload_bytes: int = Field(
        50_000_000,
        ge=1024,
        description="Maximum bytes of a dataset upload body (POST /v1/datasets).",
    )
    max_dataset_rows: int = Field(
        200_000, ge=10, description="Maximum samples of an uploaded dataset."
    )
    max_dataset_features: int = Field(
        4096, ge=1, description="Maximum features of an uploaded dataset."
    )
    max_dataset_classes: int = Field(
        1000, ge=2, le=4096, description="Maximum classes of an uploaded dataset."
    )
    max_dataset_bytes: int = Field(
        200_000_000,
        ge=1024,
        description=(
            "Maximum stored bytes of an uploaded dataset, 8 per value of X and y."
        ),
    )
    max_datasets: int = Field(
        100, ge=1, description="Maximum number of uploaded datasets stored at once."
    )
    lease_s: float = Field(
        60.0,
        ge=5,
        description=(
            "A running experiment's lease: a worker that stops renewing it for "
            "this long counts as dead, and another worker restarts the run."
        ),
    )
    heartbeat_ttl_s: int = Field(
        30, ge=3, description="Seconds a worker counts as alive after a heartbeat."
    )
    metrics_flush_interval_s: float = Field(
        0.5,
        gt=0,
        description="Maximum seconds a metric record waits before Redis stores it.",
    )

    @property
    def limits(self) -> Limits:
        return Limits(
            max_exact_parameters=self.max_exact_parameters,
            max_total_steps=self.max_total_steps,
            max_parameters=self.max_parameters,
            max_activation_values=self.max_activation_values,
        )

    @property
    def visibility_timeout_s(self) -> int:
        """Broker visibility timeout: above the longest run the API accepts.

        Redis redelivers a task that stays unacknowledged longer than this, so
        it must exceed training plus analysis, or a healthy run would start twice.
        """
        return self.run_time_limit_s + self.analysis_time_limit_s + 600


@lru_cache
def get_settings() -> Settings:
    return Settings()
