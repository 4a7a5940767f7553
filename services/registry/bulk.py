"""Bulk import and export formats: JSON lists and flat CSV rows of site master data."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hybridpool_shared.messages.registry import SiteMasterDataChanged
from services.registry.domain import SiteMasterDataIn

LOCATION_COLUMNS = ("address", "latitude_deg", "longitude_deg", "price_area")
CSV_COLUMNS = (
    "site_id",
    "make_model",
    *LOCATION_COLUMNS,
    "hp_heat_power_kw",
    "hp_electric_power_kw",
    "immersion_heater_kw",
    "boiler_power_kw",
    "boiler_efficiency",
    "min_run_minutes",
    "lockout_minutes",
    "max_starts_per_hour",
    "dhw_tank_l",
    "buffer_tank_l",
    "control_options",
    "meter_number",
    "immersion_heater_placement",
    "heated_area_m2",
    "owner_id",
)
OPTION_SEPARATOR = "|"


class RowError(BaseModel):
    """Why one row of an import was rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    row: int = Field(description="1-based row number (CSV: data rows after the header).")
    site_id: str | None
    errors: list[str]


class ImportReport(BaseModel):
    """The outcome of a bulk import: stored rows count, rejected rows with reasons."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accepted: int
    rejected: int
    site_ids: list[str] = Field(description="Sites stored and published, in input order.")
    errors: list[RowError]


class BadImportError(ValueError):
    """The import body as a whole cannot be read."""


def parse_rows(body: bytes, content_type: str) -> list[dict[str, Any]]:
    """Return the rows of a JSON (list or {"sites": list}) or CSV body as dictionaries."""
    if "csv" in content_type:
        return _csv_rows(body)
    if "json" in content_type:
        return _json_rows(body)
    raise BadImportError(f"content type {content_type!r}: send application/json or text/csv")


def _json_rows(body: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadImportError(f"body is not JSON: {exc}") from exc
    if isinstance(data, dict) and set(data) == {"sites"}:
        data = data["sites"]
    if not isinstance(data, list):
        raise BadImportError('expected a JSON list of sites or {"sites": [...]}')
    return [row if isinstance(row, dict) else {"<row>": row} for row in data]


def _csv_rows(body: bytes) -> list[dict[str, Any]]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadImportError("CSV must be UTF-8") from exc
    reader = csv.DictReader(io.StringIO(text))
    unknown = set(reader.fieldnames or ()) - set(CSV_COLUMNS)
    if unknown:
        raise BadImportError(
            f"unknown CSV columns: {', '.join(sorted(unknown))}; known: {', '.join(CSV_COLUMNS)}"
        )
    return [_from_flat(row) for row in reader]


def _from_flat(row: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
    location = {
        k: _number(flat.pop(k)) if k.endswith("_deg") else flat.pop(k) for k in LOCATION_COLUMNS if k in flat
    }
    if "control_options" in flat:
        flat["control_options"] = [
            o.strip() for o in flat["control_options"].split(OPTION_SEPARATOR) if o.strip()
        ]
    return {**flat, "location": location}


def _number(text: str) -> float | str:
    # The location model is strict: convert here, and keep bad text so the error names it.
    try:
        return float(text)
    except ValueError:
        return text


def validate_rows(rows: list[dict[str, Any]]) -> tuple[list[tuple[int, SiteMasterDataIn]], list[RowError]]:
    """Validate every row; return the good ones with their row numbers and the errors of the rest."""
    good: list[tuple[int, SiteMasterDataIn]] = []
    errors: list[RowError] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        site_id = row.get("site_id") if isinstance(row.get("site_id"), str) else None
        try:
            site = SiteMasterDataIn.model_validate(row)
        except ValidationError as exc:
            errors.append(RowError(row=number, site_id=site_id, errors=describe(exc)))
            continue
        if site.site_id in seen:
            errors.append(RowError(row=number, site_id=site_id, errors=["site_id repeated in this import"]))
            continue
        seen.add(site.site_id)
        good.append((number, site))
    return good, errors


def describe(exc: ValidationError) -> list[str]:
    """Return one readable line per validation error: field path and message."""
    return [f"{'.'.join(str(p) for p in e['loc']) or '<row>'}: {e['msg']}" for e in exc.errors()]


def to_csv(sites: list[SiteMasterDataChanged]) -> str:
    """Return sites as CSV with the import's columns (round-trips through import)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for site in sites:
        data = site.model_dump(mode="json", include=set(CSV_COLUMNS) | {"location"})
        location = data.pop("location")
        data["control_options"] = OPTION_SEPARATOR.join(data["control_options"])
        writer.writerow({**data, **{k: location[k] for k in LOCATION_COLUMNS}})
    return out.getvalue()
