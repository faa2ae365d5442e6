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
    max_total_steps: int = Field(
        1_000_000, ge=1, description="Most optimizer updates one experiment may run."
    )
    run_time_limit_s: int = Field(
        3600, ge=1, description="Wall time after which training fails as time_limit."
    )
    analysis_time_limit_s: int = Field(
        1800, ge=1, description="Time allowed for the analysis after training."
    )
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body the API reads."
    )
    heartbeat_ttl_s: int = Field(
        30, ge=3, description="Seconds a worker counts as alive after a heartbeat."
    )
    metrics_flush_interval_s: float = Field(
        0.5, gt=0, description="Longest a metric record waits before Redis has it."
    )

    @property
    def limits(self) -> Limits:
        return Limits(
            max_exact_parameters=self.max_exact_parameters,
            max_total_steps=self.max_total_steps,
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
