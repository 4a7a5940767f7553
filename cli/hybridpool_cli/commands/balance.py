"""`hybridpool balance-price …` what-if maths, and `hybridpool balance site|portfolio` reads over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from hybridpool_cli import supervisor
from hybridpool_shared.domain.balance import GasTariff, balance_price_eur_per_mwh
from hybridpool_shared.domain.cop import lorentz_cop

balance_app = typer.Typer(help="Balance prices of the running platform's balance service.")
SPREAD_K = 5.0


def register(app: typer.Typer) -> None:
    """Add `balance-price` and the `balance` command group."""
    app.command("balance-price")(balance_price)
    app.add_typer(balance_app, name="balance")


def what_if(
    *,
    cop: float | None,
    outdoor_c: float | None,
    flow_c: float | None,
    efficiency: float,
    gas_price_per_m3: float,
    kwh_per_m3: float,
    boiler_efficiency: float,
    adders_per_mwh: float,
    spot_per_mwh: float | None,
) -> dict[str, Any]:
    """Return the balance price (and decision for a spot price) for explicit inputs."""
    result: dict[str, Any] = {}
    if cop is None:
        if outdoor_c is None or flow_c is None:
            raise ValueError("give --cop, or both --outdoor-c and --flow-c")
        lorentz = float(lorentz_cop(flow_c, flow_c - SPREAD_K, outdoor_c, outdoor_c - SPREAD_K))
        cop = efficiency * lorentz
        result.update(
            lorentz_cop=round(lorentz, 4), efficiency=efficiency, outdoor_c=outdoor_c, flow_c=flow_c
        )
    tariff = GasTariff(gas_price_per_m3, kwh_per_m3, boiler_efficiency, adders_per_mwh)
    balance = balance_price_eur_per_mwh(cop, tariff)
    result.update(
        cop=round(cop, 4),
        gas_price_per_m3=gas_price_per_m3,
        kwh_per_m3=kwh_per_m3,
        boiler_efficiency=boiler_efficiency,
        gas_heat_price_per_mwh=round(tariff.gas_heat_price_eur_per_mwh, 4),
        adders_per_mwh=adders_per_mwh,
        balance_price_per_mwh=round(balance, 4),
    )
    if spot_per_mwh is not None:
        result.update(
            spot_per_mwh=spot_per_mwh,
            preferred_source="heat_pump" if spot_per_mwh < balance else "gas",
            saving_per_mwh_heat=round(abs(balance - spot_per_mwh) / cop, 4),
        )
    return result


def balance_price(
    cop: Annotated[
        float | None, typer.Option(help="COP; or give --outdoor-c and --flow-c.", min=0.5, max=15)
    ] = None,
    outdoor_c: Annotated[float | None, typer.Option(help="Outdoor (source) temperature, °C.")] = None,
    flow_c: Annotated[float | None, typer.Option(help="Flow (supply) temperature, °C.")] = None,
    efficiency: Annotated[float, typer.Option(help="COP = Lorentz COP × this.", min=0.05, max=0.9)] = 0.36,
    gas_price_per_m3: Annotated[float, typer.Option(help="Gas price per m³ (any currency).", min=0)] = 0.80,
    kwh_per_m3: Annotated[float, typer.Option(help="Calorific value, kWh per m³.", min=1)] = 11.0,
    boiler_efficiency: Annotated[
        float, typer.Option(help="Boiler efficiency (0–1.1].", min=0.01, max=1.1)
    ] = 0.95,
    adders_per_mwh: Annotated[float, typer.Option(help="Non-spot electricity costs per MWh.")] = 135.0,
    spot_per_mwh: Annotated[float | None, typer.Option(help="A spot price to decide HP or gas for.")] = None,
) -> None:
    """Print the balance price for explicit inputs as JSON (same currency as the gas price, per MWh)."""
    try:
        result = what_if(
            cop=cop,
            outdoor_c=outdoor_c,
            flow_c=flow_c,
            efficiency=efficiency,
            gas_price_per_m3=gas_price_per_m3,
            kwh_per_m3=kwh_per_m3,
            boiler_efficiency=boiler_efficiency,
            adders_per_mwh=adders_per_mwh,
            spot_per_mwh=spot_per_mwh,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(json.dumps(result, indent=2))


Url = Annotated[str, typer.Option(help="Balance service URL (default: from the running platform).")]
DataDir = Annotated[Path, typer.Option(help="Data dir of `hybridpool up`.")]


def service_url(url: str, data_dir: Path) -> str:
    """Return the balance service's URL: explicit, or from the running platform's state file."""
    if url:
        return url.rstrip("/")
    state = supervisor.read_state(data_dir)
    services = state.get("services", []) if state else []
    for svc in services if isinstance(services, list) else []:
        if svc.get("name") == "balance":
            return f"http://127.0.0.1:{svc['port']}"
    raise typer.BadParameter(f"no running platform in {data_dir}: start `hybridpool up` or pass --url")


def _get(url: str, path: str, params: dict[str, str]) -> None:
    response = httpx.get(f"{url}{path}", params={k: v for k, v in params.items() if v}, timeout=60)
    if response.status_code != 200:
        raise typer.BadParameter(f"{response.status_code}: {response.text}")
    typer.echo(json.dumps(response.json(), indent=2))


@balance_app.command("site")
def site(
    site_id: Annotated[str, typer.Argument(help="Site id (HP-Hub 101).")],
    start: Annotated[str, typer.Option("--from", help="Range start, ISO 8601 with offset.")] = "",
    end: Annotated[str, typer.Option("--to", help="Range end (exclusive), ISO 8601 with offset.")] = "",
    url: Url = "",
    data_dir: DataDir = Path(".data"),
) -> None:
    """Print one site's balance prices per quarter-hour for a date range as JSON."""
    _get(service_url(url, data_dir), f"/sites/{site_id}/balance-prices", {"start": start, "end": end})


@balance_app.command("portfolio")
def portfolio(
    area: Annotated[str, typer.Option(help="Price area.")] = "DK1",
    start: Annotated[str, typer.Option("--from", help="Range start, ISO 8601 with offset.")] = "",
    end: Annotated[str, typer.Option("--to", help="Range end (exclusive), ISO 8601 with offset.")] = "",
    url: Url = "",
    data_dir: DataDir = Path(".data"),
) -> None:
    """Print how many sites prefer gas per quarter and the fleet's balance-price distribution."""
    _get(service_url(url, data_dir), "/portfolio/summary", {"area": area, "start": start, "end": end})
