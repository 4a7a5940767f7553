"""Settings every service shares; each service subclasses ServiceSettings once with its own prefix."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

INFRA_FILE_ENV = "HYBRIDPOOL_INFRA_FILE"
DEFAULT_INFRA_FILE = Path(".data") / "infra.json"


class InfrastructureNotFoundError(RuntimeError):
    """Neither explicit addresses nor a running embedded infrastructure were found."""


class ServiceSettings(BaseSettings):
    """Connection, HTTP and logging settings; KAFKA_BOOTSTRAP and REDIS_URL select infrastructure."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP"),
        description="host:port[,host:port]; unset: the embedded broker of `hybridpool up`.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL"),
        description="redis://…; unset: the embedded Redis of `hybridpool up`.",
    )
    kafka_idempotence: bool = Field(
        default=False,
        validation_alias=AliasChoices("KAFKA_IDEMPOTENCE"),
        description="Idempotent producer: on for a real Kafka cluster; the embedded broker refuses it.",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535, description="0: pick a free port.")
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL"))
    instance_id: str = Field(default="", description="Distinguishes replicas in logs/metrics.")

    def resolved_kafka_bootstrap(self) -> str:
        """Return the broker address: explicit setting, else the embedded broker's."""
        return self.kafka_bootstrap or str(_embedded_infra()["kafka_bootstrap"])

    def resolved_redis_url(self) -> str:
        """Return the Redis URL: explicit setting, else the embedded Redis's."""
        return self.redis_url or str(_embedded_infra()["redis_url"])


def _embedded_infra() -> dict[str, object]:
    path = Path(os.environ.get(INFRA_FILE_ENV, str(DEFAULT_INFRA_FILE)))
    if not path.is_file():
        raise InfrastructureNotFoundError(
            f"KAFKA_BOOTSTRAP/REDIS_URL are unset and no embedded infrastructure is described "
            f"in {path}: start it with `hybridpool up` (or `hybridpool infra`), or set both."
        )
    data: dict[str, object] = json.loads(path.read_text())
    return data
