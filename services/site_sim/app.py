"""Wiring of the site_sim service: settings, connections, subscriptions."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.messages import SiteMasterDataChanged
from hybridpool_shared.runtime import Service, build_service, serve
from hybridpool_shared.timeutil import utc_now
from services.site_sim.api import add_routes
from services.site_sim.clock import SimClock
from services.site_sim.domain.fleet import FleetParams, generate
from services.site_sim.domain.sim import FleetSim
from services.site_sim.registration import keep_trying_to_register
from services.site_sim.runner import SimRunner
from services.site_sim.settings import SiteSimSettings


def fleet_params(settings: SiteSimSettings) -> FleetParams:
    """Draw the fleet the settings describe (the same seed gives the same fleet)."""
    return generate(
        settings.sites,
        buildings=settings.buildings,
        seed=settings.seed,
        changed_at=utc_now(),
        prefix=settings.site_prefix,
    )


def master_data(settings: SiteSimSettings | None = None) -> list[SiteMasterDataChanged]:
    """Return the simulated fleet's master data, for registration by other code."""
    return fleet_params(settings or SiteSimSettings()).master


def build(settings: SiteSimSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "site_sim",
        settings,
        consumes=(topics.DISPATCH_COMMANDS,),
        produces=(topics.SITES_TELEMETRY, topics.DISPATCH_ACKS),
    )
    clock = SimClock(utc_now().timestamp() - settings.start_offset_h * 3600.0, settings.speedup)
    params = fleet_params(settings)
    sim = FleetSim(params, clock.start_s, seed=settings.seed)
    runner = SimRunner(service, sim, clock, settings)
    service.consumer.subscribe(topics.DISPATCH_COMMANDS, runner.on_command)
    service.background.append(runner.run)
    if settings.register_fleet:

        async def register() -> None:
            await keep_trying_to_register(settings, params.master)

        service.background.append(register)
    add_routes(service.api, sim, clock)
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(SiteSimSettings()))
