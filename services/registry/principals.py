"""Bootstrap principals from settings or a file; generate a local-dev file with random secrets.

Order: REGISTRY_PRINCIPALS_JSON (inline list), else REGISTRY_PRINCIPALS_FILE (must exist), else the
local-development file `<data dir>/registry/principals.json`, created at first start with one
principal per role (dev-installer, dev-operator, dev-auditor, dev-owner) and random secrets, mode 0600.
The data dir is REGISTRY_DATA_DIR, or the directory of `hybridpool up`'s infra.json, or `.data`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from hybridpool_shared.settings import INFRA_FILE_ENV
from services.registry.adapters import StoredPrincipal
from services.registry.domain import Role
from services.registry.settings import RegistrySettings

LOGGER = logging.getLogger(__name__)
DEV_PRINCIPALS = (
    ("dev-installer", Role.INSTALLER),
    ("dev-operator", Role.OPERATOR),
    ("dev-auditor", Role.AUDITOR),
    ("dev-owner", Role.USER),
)


class PrincipalSpec(BaseModel):
    """One principal as configured: the secret is hashed before it is stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$")
    role: Role
    secret: str = Field(min_length=12, description="Client secret (systems) or password (people).")


SPECS = TypeAdapter(list[PrincipalSpec])


def dev_file(settings: RegistrySettings) -> Path:
    """Return where the local-development principals file lives."""
    base = settings.data_dir
    if "data_dir" not in settings.model_fields_set and (infra := os.environ.get(INFRA_FILE_ENV)):
        base = Path(infra).parent
    return base / "registry" / "principals.json"


def load_specs(settings: RegistrySettings) -> list[PrincipalSpec]:
    """Return configured principals: inline JSON, a file, or a generated local-dev file."""
    if settings.principals_json:
        return SPECS.validate_json(settings.principals_json)
    path = settings.principals_file or dev_file(settings)
    if not path.is_file():
        if settings.principals_file is not None:
            raise FileNotFoundError(f"REGISTRY_PRINCIPALS_FILE {path} does not exist")
        _generate(path)
    return SPECS.validate_json(path.read_text())


def _generate(path: Path) -> None:
    specs = [
        PrincipalSpec(id=pid, role=role, secret=secrets.token_urlsafe(24)) for pid, role in DEV_PRINCIPALS
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps([s.model_dump(mode="json") for s in specs], indent=2)
    temp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    try:
        # A hard link fails if another replica got there first: then its file is the one used.
        os.link(temp, path)
    except FileExistsError:
        return
    finally:
        temp.unlink()
    LOGGER.warning("generated local-development principals with random secrets in %s", path)


def hashed(specs: list[PrincipalSpec]) -> list[StoredPrincipal]:
    """Hash each configured secret."""
    return [StoredPrincipal.create(s.id, s.role, s.secret) for s in specs]
