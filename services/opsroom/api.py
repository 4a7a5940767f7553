"""HTTP API and page of the ops room: login, overview, live stream, markets, activations, sites, actions."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from hybridpool_shared.messages import Direction, PoolActivated, ReserveProduct, SitePoolMembershipChanged
from hybridpool_shared.timeutil import utc_now
from services.opsroom.adapters import OpsStore, joined, labels
from services.opsroom.domain import (
    AuditDraft,
    CurvePoint,
    Freshness,
    LiveSite,
    assess,
    capacity_revenue_eur,
    histogram,
    hours_without_bid,
    pool_plan,
    reaction_profile,
    search_page,
    site_status,
    verify_audit,
)
from services.opsroom.live import CLOSE, HEARTBEAT_S, Aggregator, Broadcaster
from services.opsroom.registry_client import (
    BiddingClient,
    DispatchClient,
    LoginRefusedError,
    RegistryClient,
    RegistryUnavailableError,
    TokenExpiredError,
)

LOGGER = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def _plotly_js() -> Path | None:
    """plotly.min.js as shipped in the installed plotly wheel (None when plotly is not installed)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


PLOTLY_JS = _plotly_js()
COOKIE = "opsroom_session"
DISPATCH_SUMMARY = (
    "verdict",
    "reasons",
    "delivered_share",
    "time_to_50_s",
    "time_to_100_s",
    "units_dispatched",
    "units_replaced",
    "units_unresponsive",
    "finished",
)
PublishActivation = Callable[[PoolActivated], Awaitable[None]]
PublishMembership = Callable[[SitePoolMembershipChanged], Awaitable[None]]


@dataclass(frozen=True)
class Operator:
    """The logged-in operator of a request."""

    principal_id: str
    role: str
    token: str
    session_id: str


@dataclass
class Context:
    """Everything the routes need."""

    store: OpsStore
    registry: RegistryClient
    bidding: BiddingClient
    dispatch: DispatchClient
    hub: Broadcaster
    aggregator: Aggregator
    publish_activation: PublishActivation
    publish_membership: PublishMembership
    fresh: Freshness
    purpose: str
    session_ttl_s: int
    cookie_secure: bool


class LoginBody(BaseModel):
    """An operator's credentials as the registry knows them."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class TestActivationBody(BaseModel):
    """Command: activate the pool for a test."""

    model_config = ConfigDict(extra="forbid")

    direction: Literal["up", "down"]
    power_mw: float = Field(gt=0, le=50)
    duration_s: int = Field(default=300, ge=30, le=3600)
    product: ReserveProduct = ReserveProduct.MFRR_ENERGY


class Me(BaseModel):
    """Who is logged in."""

    principal_id: str
    role: str


def build_router(ctx: Context) -> APIRouter:
    """Return every ops-room route."""
    router = APIRouter()
    _auth_routes(router, ctx)
    _live_routes(router, ctx)
    _market_routes(router, ctx)
    _activation_routes(router, ctx)
    _site_routes(router, ctx)
    _action_routes(router, ctx)
    return router


def mount(api: FastAPI, ctx: Context) -> None:
    """Add the page, its assets and the API to the service's app."""
    api.state.opsroom = ctx
    api.include_router(build_router(ctx))
    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    @api.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @api.get("/vendor/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        # Served from the installed plotly wheel: no CDN, nothing vendored into the repository.
        if PLOTLY_JS is None:
            raise HTTPException(503, "charts need the plotly package: pip install plotly")
        return FileResponse(
            PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
        )


async def current_operator(request: Request) -> Operator:
    """Return the operator of the request's session cookie or answer 401."""
    ctx: Context = request.app.state.opsroom
    session_id = request.cookies.get(COOKIE)
    data = await ctx.store.session(session_id) if session_id else None
    if data is None or session_id is None:
        raise HTTPException(401, "login required")
    return Operator(data["principal_id"], data["role"], data["token"], session_id)


Who = Annotated[Operator, Depends(current_operator)]


async def _visible(ctx: Context, who: Operator) -> dict[str, dict[str, Any]]:
    try:
        return await ctx.registry.visible_sites(who.token, ctx.purpose)
    except TokenExpiredError as exc:
        await ctx.store.drop_session(who.session_id)
        raise HTTPException(401, "session expired at the registry: log in again") from exc
    except RegistryUnavailableError as exc:
        raise HTTPException(503, str(exc)) from exc


async def _audit(
    ctx: Context, who: Operator, action: str, outcome: str, site_id: str | None = None, detail: str = ""
) -> None:
    """Record in the ops room's own chain, then in the registry's, which auditors read for everything."""
    await ctx.store.audit(AuditDraft(who.principal_id, who.role, action, outcome, site_id, detail), utc_now())
    try:
        await ctx.registry.record_operation(who.token, action, outcome, site_id, detail[:2000])
    except (RegistryUnavailableError, TokenExpiredError) as exc:
        LOGGER.warning("%s by %s is only in the ops room's audit chain: %s", action, who.principal_id, exc)


def _auth_routes(router: APIRouter, ctx: Context) -> None:
    @router.post("/api/login", tags=["auth"], response_model=Me)
    async def login(body: LoginBody, response: Response) -> Me:
        """Log in with the operator's registry credentials; sets an HttpOnly session cookie."""
        try:
            done = await ctx.registry.login(body.username, body.password)
        except LoginRefusedError as exc:
            draft = AuditDraft(body.username, "unknown", "login", "denied", None, str(exc))
            await ctx.store.audit(draft, utc_now())
            raise HTTPException(401, str(exc)) from exc
        except RegistryUnavailableError as exc:
            raise HTTPException(503, str(exc)) from exc
        await ctx.store.audit(AuditDraft(done.principal_id, done.role, "login", "allowed"), utc_now())
        session_id = secrets.token_urlsafe(32)
        ttl = min(ctx.session_ttl_s, done.expires_in_s)
        await ctx.store.put_session(
            session_id, {"principal_id": done.principal_id, "role": done.role, "token": done.token}, ttl
        )
        response.set_cookie(
            COOKIE, session_id, max_age=ttl, httponly=True, samesite="strict", secure=ctx.cookie_secure
        )
        return Me(principal_id=done.principal_id, role=done.role)

    @router.post("/api/logout", tags=["auth"], status_code=204)
    async def logout(request: Request) -> Response:
        """End the session."""
        if session_id := request.cookies.get(COOKIE):
            await ctx.store.drop_session(session_id)
        response = Response(status_code=204)
        response.delete_cookie(COOKIE)
        return response

    @router.get("/api/me", tags=["auth"], response_model=Me)
    async def me(who: Who) -> Me:
        """Return the logged-in operator (401 when not logged in)."""
        return Me(principal_id=who.principal_id, role=who.role)


def _live_routes(router: APIRouter, ctx: Context) -> None:
    @router.get("/api/overview", tags=["overview"])
    async def overview(who: Who) -> dict[str, Any]:
        """Fleet status, pool power, capacity available vs committed, current activation, open alarms."""
        return ctx.aggregator.live.overview or await ctx.aggregator.tick(utc_now())

    @router.get("/api/stream", tags=["overview"], response_class=StreamingResponse)
    async def stream(who: Who, request: Request) -> StreamingResponse:
        """Server-sent events: `overview` every tick, `activation` the moment one arrives."""
        return StreamingResponse(
            _events(ctx, request), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )


async def _events(ctx: Context, request: Request) -> AsyncIterator[str]:
    async with ctx.hub.subscribe() as queue:
        yield "retry: 2000\n\n"
        while not ctx.hub.closed and not await request.is_disconnected():
            try:
                async with asyncio.timeout(HEARTBEAT_S):  # not wait_for: it can swallow a cancellation
                    frame = await queue.get()
            except TimeoutError:
                frame = ": keep-alive\n\n"
            if frame == CLOSE:
                return
            yield frame


def _market_routes(router: APIRouter, ctx: Context) -> None:
    @router.get("/api/prices", tags=["prices"])
    async def prices(
        who: Who,
        area: Annotated[str, Query(pattern=r"^[A-Z0-9]{2,4}$")] = "DK1",
        hours_back: Annotated[float, Query(ge=0, le=24 * 14)] = 24,
        hours_ahead: Annotated[float, Query(ge=0, le=48)] = 36,
    ) -> dict[str, Any]:
        """Day-ahead, imbalance and reserve price curves of one area, and the fleet's balance prices."""
        now = utc_now()
        lo, hi = now - timedelta(hours=hours_back), now + timedelta(hours=hours_ahead)
        names = [c for c in await ctx.store.curves() if c.split(":")[1] == area]
        curves = {name: await ctx.store.curve(name, lo, hi) for name in names}
        balances = [b for b in (await ctx.store.balances()).values() if b["area"] == area]
        values = [float(b["balance_price_eur_per_mwh"]) for b in balances]
        spots = [
            float(b["spot_price_eur_per_mwh"])
            for b in balances
            if b.get("spot_price_eur_per_mwh") is not None
        ]
        return {
            "area": area,
            "curves": curves,
            "balance_histogram": asdict(histogram(values)),
            "balance_sites": len(values),
            "spot_now_eur_per_mwh": spots[-1] if spots else None,
            "sites_hp_cheaper": sum(1 for b in balances if _hp_cheaper(b)),
        }

    @router.get("/api/bids", tags=["bids"])
    async def bids(
        who: Who,
        hours_back: Annotated[float, Query(ge=0, le=24 * 31)] = 24,
        hours_ahead: Annotated[float, Query(ge=0, le=48)] = 36,
    ) -> dict[str, Any]:
        """The latest pool plan, bids sent with results, capacity revenue so far, and hours without a bid."""
        now = utc_now()
        lo, hi = now - timedelta(hours=hours_back), now + timedelta(hours=hours_ahead)
        rows = await ctx.store.bids(lo, hi)
        cleared = [joined(b, r) for b, r in rows]
        revenue = sum(capacity_revenue_eur(c) for c in cleared if c.start <= now)
        latest = await ctx.store.latest_plan()
        bidding_plan = await ctx.bidding.latest_plan()
        explained = bidding_plan.get("periods_without_bid", [])
        return {
            "bidding_plan": bidding_plan,
            "plan": None if latest is None else {"plan_id": latest[0], **asdict(pool_plan(latest[1]))},
            "bids": [b | {"result": r} for b, r in rows],
            "revenue_so_far_eur": revenue,
            "accepted": sum(1 for c in cleared if c.accepted),
            "rejected": sum(1 for c in cleared if c.accepted is False),
            "pending": sum(1 for c in cleared if c.accepted is None),
            "hours_without_bid": hours_without_bid([(c.start, c.end) for c in cleared], now, hi, explained),
        }


def _hp_cheaper(balance: dict[str, Any]) -> bool:
    spot = balance.get("spot_price_eur_per_mwh")
    return spot is not None and float(spot) < float(balance["balance_price_eur_per_mwh"])


def _activation_routes(router: APIRouter, ctx: Context) -> None:
    @router.get("/api/activations", tags=["activations"])
    async def activations(who: Who, days: Annotated[float, Query(gt=0, le=31)] = 2) -> dict[str, Any]:
        """Recent activations, newest first, with their compliance verdicts."""
        now = utc_now()
        items = await ctx.store.activations(now - timedelta(days=days), now + timedelta(hours=1), limit=100)
        out = []
        for item in items:
            curve = await ctx.store.curve_points(item["activation_id"])
            out.append(item | _compliance(item, curve, now))
        return {"activations": out}

    @router.get("/api/activations/{activation_id}", tags=["activations"])
    async def activation(activation_id: str, who: Who) -> dict[str, Any]:
        """One activation: response curve, time to 50 %/100 %, verdict, sites used and sites that failed."""
        item = await ctx.store.activation(activation_id)
        if item is None:
            raise HTTPException(404, f"no activation {activation_id}")
        curve = await ctx.store.curve_points(activation_id)
        reactions = await ctx.store.activation_reactions(activation_id)
        visible = await _visible(ctx, who)
        used = sorted(r["site_id"] for r in reactions)
        failed = sorted(r["site_id"] for r in reactions if not r["responded"])
        report = await ctx.dispatch.report(activation_id)
        return (
            item
            | _compliance(item, curve, utc_now())
            | {
                "dispatch": None if report is None else {k: report.get(k) for k in DISPATCH_SUMMARY},
                "curve": [asdict(p) for p in curve],
                "sites_used_count": len(used),
                "sites_failed_count": len(failed),
                # Site ids only where the owner consented; the counts cover the whole pool.
                "sites_used": [s for s in used if s in visible],
                "sites_failed": [s for s in failed if s in visible],
            }
        )


def _compliance(item: dict[str, Any], curve: list[CurvePoint], now: datetime) -> dict[str, Any]:
    start, end = datetime.fromisoformat(item["start"]), datetime.fromisoformat(item["end"])
    elapsed = (min(now, end) - start).total_seconds()
    result = assess(
        [p for p in curve if p.requested_kw > 0], item["product"], item["power_mw"] * 1000, elapsed
    )
    return {
        "verdict": result.verdict.value,
        "verdict_reason": result.reason,
        "t50_s": result.t50_s,
        "t100_s": result.t100_s,
        "full_deadline_s": result.full_deadline_s,
    }


def _site_routes(router: APIRouter, ctx: Context) -> None:
    @router.get("/api/sites", tags=["sites"])
    async def sites(
        who: Who,
        q: Annotated[str, Query(max_length=80)] = "",
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """One page of the sites whose owners consented, searchable by id, make, address or area."""
        visible = await _visible(ctx, who)
        found = search_page(visible, labels(_summaries(visible), visible), q, page, page_size)
        return {
            "total": found.total,
            "page": found.page,
            "pages": found.pages,
            "sites": await _rows(ctx, found.items, visible),
        }

    @router.get("/api/sites/{site_id}", tags=["sites"])
    async def site(site_id: str, who: Who) -> dict[str, Any]:
        """One site: master data, live state, balance price, reaction profile, telemetry history."""
        visible = await _visible(ctx, who)
        if site_id not in visible:
            await _audit(ctx, who, "site.read", "denied", site_id, "no consent")
            raise HTTPException(404, f"no site {site_id} you may see")
        row = (await _rows(ctx, [site_id], visible))[0]
        return row | {
            "registry_status": await _registry_status(ctx, who, site_id),
            "master": visible[site_id],
            "live_state": await ctx.store.live_raw(site_id),
            "quarters": await ctx.store.quarters(site_id),
        }


async def _registry_status(ctx: Context, who: Operator, site_id: str) -> dict[str, Any] | None:
    try:
        return await ctx.registry.site_status(who.token, site_id, ctx.purpose)
    except TokenExpiredError as exc:
        await ctx.store.drop_session(who.session_id)
        raise HTTPException(401, "session expired at the registry: log in again") from exc
    except RegistryUnavailableError as exc:
        raise HTTPException(503, str(exc)) from exc


def _summaries(visible: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        k: {
            "make_model": v.get("make_model", ""),
            "address": v["location"].get("address", ""),
            "area": v["location"]["price_area"],
        }
        for k, v in visible.items()
    }


async def _rows(ctx: Context, ids: list[str], visible: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    now = utc_now()
    states = await ctx.store.live(ids)
    balances = await ctx.store.balances(ids)
    reactions = await ctx.store.reaction_samples(ids)
    excluded = await ctx.store.excluded()
    return [
        _row(
            site_id,
            visible[site_id],
            state,
            balances.get(site_id),
            reactions.get(site_id, []),
            site_id in excluded,
            ctx.fresh,
            now,
        )
        for site_id, state in zip(ids, states, strict=True)
    ]


def _row(
    site_id: str,
    master: dict[str, Any],
    state: LiveSite | None,
    balance: dict[str, Any] | None,
    reactions: list[Any],
    excluded: bool,
    fresh: Freshness,
    now: datetime,
) -> dict[str, Any]:
    profile = reaction_profile(reactions)
    return {
        "site_id": site_id,
        "make_model": master.get("make_model", ""),
        "area": master["location"]["price_area"],
        "status": "no data"
        if state is None
        else site_status(state.gateway_status, state.measured_at, now, fresh).value,
        "hp_running": None if state is None else state.hp_running,
        "on_gas": None if state is None else state.boiler_running and not state.hp_running,
        "electric_power_kw": None if state is None else state.electric_power_kw,
        "lockout_remaining_s": None if state is None else state.lockout_remaining_s(now),
        "reaction": asdict(profile),
        "cop": None if balance is None else balance["cop"],
        "balance_price_eur_per_mwh": None if balance is None else balance["balance_price_eur_per_mwh"],
        "excluded": excluded,
    }


def _action_routes(router: APIRouter, ctx: Context) -> None:
    async def set_excluded(site_id: str, who: Operator, exclude: bool) -> dict[str, Any]:
        action = "site.exclude" if exclude else "site.include"
        if site_id not in await _visible(ctx, who):
            await _audit(ctx, who, action, "denied", site_id, "no consent")
            raise HTTPException(404, f"no site {site_id} you may see")
        change = SitePoolMembershipChanged(
            site_id=site_id,
            in_pool=not exclude,
            changed_at=utc_now(),
            changed_by=who.principal_id,
            reason=f"{action} by {who.role} in the ops room",
        )
        await ctx.publish_membership(change)  # dispatch and bidding act on the event, not on our set
        await ctx.store.set_excluded(site_id, exclude)
        await _audit(ctx, who, action, "allowed", site_id)
        ctx.hub.poke()
        return {"site_id": site_id, "excluded": exclude}

    @router.post("/api/sites/{site_id}/exclude", tags=["actions"])
    async def exclude(site_id: str, who: Who) -> dict[str, Any]:
        """Take a site out of the pool (audited)."""
        return await set_excluded(site_id, who, True)

    @router.post("/api/sites/{site_id}/include", tags=["actions"])
    async def include(site_id: str, who: Who) -> dict[str, Any]:
        """Put an excluded site back into the pool (audited)."""
        return await set_excluded(site_id, who, False)

    @router.post("/api/test-activation", tags=["actions"], status_code=202)
    async def test_activation(body: TestActivationBody, who: Who) -> dict[str, Any]:
        """Activate the pool for a test: published on market.activations like a TSO activation (audited)."""
        now = utc_now()
        message = PoolActivated(
            activation_id=f"test-{uuid.uuid4().hex[:12]}",
            product=body.product,
            direction=Direction(body.direction),
            power_mw=body.power_mw,
            start=now,
            end=now + timedelta(seconds=body.duration_s),
            requested_at=now,
        )
        await ctx.publish_activation(message)
        detail = f"{message.activation_id} {body.direction} {body.power_mw} MW {body.duration_s} s"
        await _audit(ctx, who, "activation.test", "allowed", None, detail)
        return {"activation_id": message.activation_id}

    @router.get("/api/alarms", tags=["alarms"])
    async def alarms(who: Who) -> dict[str, Any]:
        """Every alarm, newest first."""
        return {"alarms": await ctx.store.alarms()}

    @router.post("/api/alarms/{alarm_id}/ack", tags=["actions"])
    async def acknowledge(alarm_id: str, who: Who) -> dict[str, Any]:
        """Acknowledge an alarm (audited)."""
        alarm = await ctx.store.acknowledge_alarm(alarm_id, who.principal_id, utc_now())
        if alarm is None:
            raise HTTPException(404, f"no alarm {alarm_id}")
        await _audit(ctx, who, "alarm.acknowledge", "allowed", None, alarm_id)
        ctx.hub.poke()
        return alarm

    @router.get("/api/audit", tags=["audit"])
    async def audit(who: Who, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        """The ops room's own audit trail (newest first) and whether its hash chain holds."""
        records = await ctx.store.audit_records()
        broken = verify_audit(records)
        return {
            "records": [r.to_dict() for r in reversed(records[-limit:])],
            "total": len(records),
            "chain_ok": broken is None,
            "first_bad_seq": broken,
        }
