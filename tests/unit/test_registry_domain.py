"""Registry rules without I/O: access decisions, consent expiry, the audit hash chain, principals, CSV."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hybridpool_shared.messages.registry import ControlOption, SiteLocation, SiteMasterDataChanged
from services.registry import bulk
from services.registry.adapters import StoredPrincipal
from services.registry.domain import (
    GENESIS_HASH,
    Action,
    AuditEntry,
    Consent,
    Principal,
    Role,
    chain,
    site_access,
    verify_chain,
)
from services.registry.principals import dev_file, load_specs
from services.registry.settings import RegistrySettings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SITE = SiteMasterDataChanged(
    site_id="villa-1",
    changed_at=NOW,
    location=SiteLocation(latitude_deg=55.0, longitude_deg=9.0, price_area="DK1"),
    hp_heat_power_kw=5.0,
    hp_electric_power_kw=1.5,
    control_options=(ControlOption.SG_READY,),
    owner_id="owner-1",
    installer_id="inst-1",
)


def consent(actor: str = "op-1", purpose: str = "balance", days: float = 1, revoked: bool = False) -> Consent:
    return Consent(
        site_id="villa-1",
        actor_id=actor,
        purpose=purpose,
        granted_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(days=days),
        revoked_at=NOW - timedelta(hours=1) if revoked else None,
    )


def allowed(who: Principal, action: Action, consents: list[Consent], purpose: str | None = "balance") -> bool:
    return site_access(who, action, SITE, consents, purpose, NOW).allowed


def test_operator_with_consent_reads_operational_data_for_that_purpose_only() -> None:
    op = Principal("op-1", Role.OPERATOR)
    assert allowed(op, Action.OPS_READ, [consent()])
    assert not allowed(op, Action.OPS_READ, [consent()], purpose="marketing")
    assert not allowed(op, Action.OPS_READ, [consent()], purpose=None)
    assert not allowed(Principal("op-2", Role.OPERATOR), Action.OPS_READ, [consent()])


def test_expired_and_revoked_consents_do_not_count() -> None:
    op = Principal("op-1", Role.OPERATOR)
    assert not allowed(op, Action.OPS_READ, [consent(days=-0.001)])
    assert not allowed(op, Action.OPS_READ, [consent(revoked=True)])
    assert not allowed(op, Action.SITE_READ, [consent(revoked=True)])


def test_consent_must_expire_after_it_was_granted() -> None:
    with pytest.raises(ValueError, match="after granted_at"):
        Consent(site_id="s", actor_id="a", purpose="balance", granted_at=NOW, expires_at=NOW)


def test_owner_installer_and_auditor_rules() -> None:
    assert allowed(Principal("owner-1", Role.USER), Action.CONSENT_GRANT, [])
    assert not allowed(Principal("owner-2", Role.USER), Action.OPS_READ, [])
    assert allowed(Principal("inst-1", Role.INSTALLER), Action.SITE_UPDATE, [])
    assert not allowed(Principal("inst-2", Role.INSTALLER), Action.SITE_UPDATE, [])
    assert not allowed(Principal("inst-1", Role.INSTALLER), Action.OPS_READ, [])
    assert not allowed(Principal("aud", Role.AUDITOR), Action.SITE_READ, [])
    assert not allowed(Principal("op-1", Role.OPERATOR), Action.SITE_UPDATE, [consent()])


def _records(n: int) -> list[bytes]:
    entries = [AuditEntry(f"actor-{i}", "user", "site.read", "allowed", "villa-1") for i in range(n)]
    return [r.to_json_bytes() for r in chain(entries, 0, GENESIS_HASH, NOW)]


def test_an_intact_chain_verifies() -> None:
    report = verify_chain(_records(5))
    assert report.ok
    assert report.checked == 5


def test_a_modified_entry_is_detected() -> None:
    raws = _records(5)
    record = json.loads(raws[2])
    record["outcome"] = "denied"
    raws[2] = json.dumps(record).encode()
    report = verify_chain(raws)
    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert "hash" in report.problem


def test_a_rehashed_modification_breaks_the_next_link() -> None:
    from services.registry.domain import record_hash

    raws = _records(5)
    record = json.loads(raws[2])
    record["actor_id"] = "mallory"
    record["hash"] = record_hash(record)
    raws[2] = json.dumps(record).encode()
    report = verify_chain(raws)
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert "prev_hash" in report.problem


def test_deleted_or_reordered_entries_are_detected() -> None:
    raws = _records(4)
    assert verify_chain([raws[0], raws[2], raws[3]]).first_bad_seq == 1
    assert verify_chain([raws[1], raws[0]]).first_bad_seq == 0


def test_control_characters_cannot_forge_log_lines() -> None:
    entry = AuditEntry("evil\nactor", "user", "login", "denied", detail="x\r\ny")
    record = chain([entry], 0, GENESIS_HASH, NOW)[0]
    assert "\n" not in record.actor_id
    assert "\n" not in record.detail


def test_secrets_are_stored_hashed() -> None:
    stored = StoredPrincipal.create("op-1", Role.OPERATOR, "correct horse battery")
    assert "correct" not in stored.model_dump_json()
    assert stored.check("correct horse battery")
    assert not stored.check("wrong")


def test_local_dev_principals_are_generated_once_with_random_secrets(tmp_path: Path) -> None:
    settings = RegistrySettings(data_dir=tmp_path, kafka_bootstrap="x:1", redis_url="redis://x")
    first = load_specs(settings)
    assert {s.role for s in first} == set(Role)
    assert dev_file(settings).stat().st_mode & 0o077 == 0
    assert load_specs(settings) == first
    other = load_specs(
        RegistrySettings(data_dir=tmp_path / "b", kafka_bootstrap="x:1", redis_url="redis://x")
    )
    assert {s.secret for s in other}.isdisjoint({s.secret for s in first})


def test_a_configured_principals_file_must_exist(tmp_path: Path) -> None:
    settings = RegistrySettings(
        principals_file=tmp_path / "missing.json", kafka_bootstrap="x:1", redis_url="r"
    )
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        load_specs(settings)


def test_csv_rows_are_validated_with_row_numbers() -> None:
    text = ",".join(bulk.CSV_COLUMNS) + "\n"
    text += "v1,M,,55,9,DK1,5,1.5,0,30,0.9,15,15,3,180,0,sg_ready|evu,,,150,o1\n"
    text += "v2,M,,55,9,DK1,5,1.5,0,30,0.9,15,-1,3,180,0,sg_ready,,,150,o1\n"
    good, errors = bulk.validate_rows(bulk.parse_rows(text.encode(), "text/csv"))
    assert [s.site_id for _, s in good] == ["v1"]
    assert good[0][1].control_options == (ControlOption.SG_READY, ControlOption.EVU)
    assert errors[0].row == 2
    assert errors[0].errors[0].startswith("lockout_minutes:")


def test_unknown_csv_columns_are_refused() -> None:
    with pytest.raises(bulk.BadImportError, match="unknown CSV columns: colour"):
        bulk.parse_rows(b"site_id,colour\nv1,red\n", "text/csv")
