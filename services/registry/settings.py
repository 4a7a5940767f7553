"""Settings of the registry service."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Environment variables prefixed REGISTRY_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="REGISTRY_", env_ignore_empty=True, extra="ignore")

    data_dir: Path = Field(default=Path(".data"), description="Where the local-dev principals file is made.")
    principals_file: Path | None = Field(
        default=None,
        description="JSON list of {id, role, secret}; unset: <data_dir>/registry/principals.json, "
        "generated with random secrets at first start (local development only).",
    )
    principals_json: str | None = Field(default=None, description="The same list inline (e.g. a secret).")
    key_prefix: str = Field(default="registry", pattern=r"^[A-Za-z0-9_.:-]+$", description="Redis keys.")
    token_ttl_s: int = Field(default=3600, ge=60, le=86400, description="Bearer token lifetime.")
    import_max_rows: int = Field(default=50_000, ge=1, description="Rows per bulk import request.")
    publish_concurrency: int = Field(default=256, ge=1, le=5000, description="Publishes in flight.")
