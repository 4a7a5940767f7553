"""The ops room in a real headless Chromium against real registry and opsroom processes on the real
broker and Redis: log in, see the overview fill in, see a live value change after a test activation,
search a site, exclude it and find the audit entry, fail to see a site without consent; and the
overview screenshot for the README."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis
from playwright.sync_api import Page, sync_playwright

from hybridpool_cli.infra import free_port
from hybridpool_shared import topics
from hybridpool_shared.messages import (
    AggregateQuality,
    AuditRecorded,
    BalancePriceComputed,
    BidCleared,
    BidSubmitted,
    DayAheadPriceIngested,
    Direction,
    Message,
    QuarterAggregated,
    ReactionMeasured,
    ReserveProduct,
    SitePlanComputed,
    SitePoolMembershipChanged,
)
from hybridpool_shared.sitestate import STATE_INDEX_KEY, SiteLiveState, state_key
from hybridpool_shared.timeutil import floor_quarter, utc_now
from hybridpool_shared.topics import TopicSpec
from tests.infra import Infra, RunningService, produce, start_service, unique, wait_for_records

pytestmark = pytest.mark.e2e
T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "overview.png"
FLEET = 60  # live sites written as the telemetry service would; the first three are registered
SITE_KW = 2.5
PURPOSE = "operations"
OPSROOM_DB = 5
AUDITOR = unique("auditor")


@dataclass
class World:
    """The running services and the people and sites the test made."""

    registry: RunningService
    opsroom: RunningService
    operator: str
    password: str
    fleet: list[str]
    consented: list[str]
    refused: str
    bid_id: str
    plan_id: str
    installer: str


def _principals(operator: str, owner: str, installer: str, secret: str) -> str:
    return json.dumps(
        [
            {"id": operator, "role": "operator", "secret": secret},
            {"id": AUDITOR, "role": "auditor", "secret": secret},
            {"id": owner, "role": "user", "secret": secret},
            {"id": installer, "role": "installer", "secret": secret},
        ]
    )


def _token(client: httpx.Client, url: str, who: str, secret: str) -> dict[str, str]:
    form = {"grant_type": "password", "username": who, "password": secret}
    response = client.post(f"{url}/token", data=form)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _master(site_id: str, owner: str, n: int) -> dict[str, object]:
    return {
        "site_id": site_id,
        "make_model": f"Nibe F{2040 + n}",
        "location": {
            "address": f"Skolevej {n}, Aarhus",
            "latitude_deg": 56.1,
            "longitude_deg": 10.2,
            "price_area": "DK1",
        },
        "hp_heat_power_kw": 9.0,
        "hp_electric_power_kw": SITE_KW,
        "boiler_power_kw": 24.0,
        "control_options": ["sg_ready"],
        "owner_id": owner,
    }


def _register(
    registry_url: str, owner: str, installer: str, operator: str, secret: str, sites: list[str]
) -> None:
    with httpx.Client(timeout=10) as client:
        as_installer = _token(client, registry_url, installer, secret)
        as_owner = _token(client, registry_url, owner, secret)
        for n, site_id in enumerate(sites):
            client.post(
                f"{registry_url}/sites", json=_master(site_id, owner, n), headers=as_installer
            ).raise_for_status()
        expires = (utc_now() + timedelta(days=1)).isoformat()
        for site_id in sites[:2]:
            grant = {"actor_id": operator, "purpose": PURPOSE, "expires_at": expires}
            client.post(
                f"{registry_url}/sites/{site_id}/consents", json=grant, headers=as_owner
            ).raise_for_status()
        status = {
            "gateway": "ok",
            "data_link": "ok",
            "heat_pump": "ok",
            "maintenance": "due",
            "sg_ready_mode": 2,
            "reported_at": utc_now().isoformat(),
        }
        as_operator = _token(client, registry_url, operator, secret)
        client.put(
            f"{registry_url}/sites/{sites[0]}/status",
            params={"purpose": PURPOSE},
            json=status,
            headers=as_operator,
        ).raise_for_status()


def own_db(redis_url: str) -> str:
    """The ops room's own Redis database: its fleet is exactly the sites this test writes."""
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    return f"{base}/{OPSROOM_DB}"


def write_states(redis_url: str, ids: list[str], running: list[bool]) -> None:
    """Write live site states exactly as the telemetry service does (sitestate.py contract)."""
    now = utc_now()
    client = redis.Redis.from_url(redis_url)
    try:
        with client.pipeline(transaction=False) as pipe:
            for site_id, on in zip(ids, running, strict=True):
                state = SiteLiveState(
                    site_id=site_id,
                    measured_at=now,
                    electric_power_kw=SITE_KW if on else 0.05,
                    meter_reading_kwh=1000.0,
                    hp_running=on,
                    boiler_running=not on,
                    sg_ready_state=2 if on else 1,
                    indoor_temp_c=21.0,
                    outdoor_temp_c=4.0,
                    lockout_ends_at=None if on else now + timedelta(minutes=15),
                    updated_at=now,
                )
                pipe.hset(state_key(site_id), mapping=state.to_redis())
                pipe.sadd(STATE_INDEX_KEY, site_id)
            pipe.execute()
    finally:
        client.close()


def send(infra: Infra, records: Sequence[tuple[TopicSpec, Message]]) -> None:
    """Publish messages as the upstream services would."""

    async def all_of_them() -> None:
        for spec, message in records:
            await produce(infra.kafka_bootstrap, spec.name, message.to_json_bytes(), message.kafka_key())

    in_thread(all_of_them())


def in_thread(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end in a thread of its own: Playwright's loop owns this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


def market_records(site_id: str, bid_id: str, now: datetime) -> list[tuple[TopicSpec, Message]]:
    """A bid in force now and its acceptance, an hour of spot prices and a site's balance price."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    bid = BidSubmitted(
        bid_id=bid_id,
        area="DK1",
        product=ReserveProduct.FCR_N,
        direction=Direction.SYMMETRIC,
        capacity_mw=0.3,
        price_eur_per_mw_per_h=18.0,
        interval_start=hour,
        interval_end=hour + timedelta(hours=1),
        interval_minutes=60,
        submitted_at=now,
    )
    cleared = BidCleared(
        bid_id=bid_id, accepted=True, accepted_mw=0.3, clearing_price_eur_per_mw_per_h=20.0, cleared_at=now
    )
    records: list[tuple[TopicSpec, Message]] = [(topics.MARKET_BIDS, bid), (topics.MARKET_RESULTS, cleared)]
    first = floor_quarter(now) - timedelta(hours=1)
    for n in range(8):
        start = first + timedelta(minutes=15 * n)
        spot = DayAheadPriceIngested(
            area="DK1",
            interval_start=start,
            interval_end=start + timedelta(minutes=15),
            interval_minutes=15,
            price_eur_per_mwh=60.0 + 5 * n,
            source="e2e",
            ingested_at=now,
        )
        records.append((topics.PRICES_DAY_AHEAD, spot))
    start = floor_quarter(now)
    balance = BalancePriceComputed(
        site_id=site_id,
        area="DK1",
        cop=3.4,
        balance_price_eur_per_mwh=212.5,
        spot_price_eur_per_mwh=80.0,
        interval_start=start,
        interval_end=start + timedelta(minutes=15),
        interval_minutes=15,
    )
    records.append((topics.SITES_BALANCE_PRICE, balance))
    return records


def plan_and_history(sites: list[str], plan_id: str, now: datetime) -> list[tuple[TopicSpec, Message]]:
    """A plan for two sites (one on the solver's fallback) and a few quarter aggregates of the first."""
    first = floor_quarter(now) + timedelta(days=2)  # newer than any plan another test may have left
    records: list[tuple[TopicSpec, Message]] = [
        (
            topics.POOL_PLAN,
            SitePlanComputed(
                plan_id=plan_id,
                site_id=site_id,
                first_quarter_start=first,
                hp_on=(True, True, False, True),
                expected_hp_power_kw=(SITE_KW, SITE_KW, 0.0, SITE_KW),
                fallback=n == 1,
            ),
        )
        for n, site_id in enumerate(sites[:2])
    ]
    for n in range(4):
        start = floor_quarter(now) - timedelta(minutes=15 * (4 - n))
        quarter = QuarterAggregated(
            site_id=sites[0],
            quality=AggregateQuality.MEASURED,
            readings=90,
            mean_power_kw=1.5 + n * 0.25,
            cop_measured=3.0 + n * 0.1,
            outdoor_temp_mean_c=3.0,
            interval_start=start,
            interval_end=start + timedelta(minutes=15),
            interval_minutes=15,
        )
        records.append((topics.SITES_TELEMETRY_QUARTER, quarter))
    return records


@pytest.fixture(scope="module")
def world(infra: Infra) -> Iterator[World]:
    """A registry with an operator, an owner of three sites (two consented) and an ops room using it."""
    operator, owner, installer = unique("op"), unique("owner"), unique("inst")
    secret = unique("secret-pw")
    fleet = [unique("villa") for _ in range(FLEET)]
    started: list[RunningService] = []
    with tempfile.TemporaryDirectory(prefix="opsroom-e2e-") as tmp:
        try:
            registry = start_service(
                "registry",
                infra,
                {
                    "REGISTRY_PRINCIPALS_JSON": _principals(operator, owner, installer, secret),
                    "REGISTRY_DATA_DIR": tmp,
                    "REGISTRY_KEY_PREFIX": unique("reg"),
                },
            )
            started.append(registry)
            opsroom = start_service(
                "opsroom",
                infra,
                {
                    "REDIS_URL": own_db(infra.redis_url),  # its own database: the fleet is this test's
                    "OPSROOM_REGISTRY_URL": registry.url,
                    "OPSROOM_BIDDING_URL": f"http://127.0.0.1:{free_port()}",  # no bidding in this test
                    "OPSROOM_DISPATCH_URL": f"http://127.0.0.1:{free_port()}",  # nor dispatch: own measure
                    "OPSROOM_TICK_S": "0.5",
                    "OPSROOM_VISIBLE_CACHE_S": "0",
                },
            )
            started.append(opsroom)
            _register(registry.url, owner, installer, operator, secret, fleet[:3])
            write_states(own_db(infra.redis_url), fleet, [True] * FLEET)
            bid_id, plan_id = unique("bid"), unique("plan")
            send(
                infra,
                market_records(fleet[0], bid_id, utc_now()) + plan_and_history(fleet, plan_id, utc_now()),
            )
            yield World(
                registry, opsroom, operator, secret, fleet, fleet[:2], fleet[2], bid_id, plan_id, installer
            )
        finally:
            for svc in started:
                svc.process.stop()


@pytest.fixture(scope="module")
def page(world: World) -> Iterator[Page]:
    """A logged-out page of the ops room in a fresh headless Chromium profile."""
    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(world.opsroom.url)
        yield page
        context.close()


def until(page: Page, script: str, arg: object, expected: object, timeout_s: float = 20.0) -> None:
    """Poll an async page script (fetching with the page's session) until it returns expected."""
    deadline = time.monotonic() + timeout_s
    while (got := page.evaluate(script, arg)) != expected:
        assert time.monotonic() < deadline, f"{script} returned {got!r}, not {expected!r}"
        time.sleep(0.2)


def _float(page: Page, selector: str) -> float:
    text = page.inner_text(selector)
    return float(text) if text not in ("", "–") else float("nan")


def test_login_is_required_and_the_overview_fills_in(world: World, page: Page) -> None:
    """Without a session the API answers 401; a wrong password is refused; the operator sees the fleet."""
    assert httpx.get(f"{world.opsroom.url}/api/overview").status_code == 401
    not_operator = {"username": world.installer, "password": world.password}
    refused = httpx.post(f"{world.opsroom.url}/api/login", json=not_operator)
    assert refused.status_code == 401
    assert "not an operator" in refused.json()["detail"]
    page.wait_for_selector("#login-form")
    page.fill("#username", world.operator)
    page.fill("#password", "wrong-password-123")
    page.click("#login-button")
    page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    assert page.is_visible("#login-form")

    page.fill("#password", world.password)
    page.click("#login-button")
    page.wait_for_selector("#view-overview", state="visible")
    page.wait_for_function(f"Number(document.getElementById('kpi-hp').textContent) >= {FLEET}")
    assert _float(page, "#kpi-power") >= FLEET * SITE_KW - 1e-6
    assert page.inner_text("#who") == world.operator


def test_market_data_reaches_the_pages(world: World, page: Page) -> None:
    """Bids, results, prices and balance prices read from their topics show on the overview and pages."""
    page.wait_for_function("Number(document.getElementById('kpi-up-committed').textContent) >= 0.3")
    assert float(page.inner_text("#kpi-down-committed")) >= 0.3  # symmetric FCR-N
    page.wait_for_selector(f"#alarms li:has-text('{world.plan_id}')")
    alarm = page.locator(f"#alarms li:has-text('{world.plan_id}')")
    assert "solver_fallback" in alarm.inner_text()
    alarm.locator("button").click()
    page.wait_for_selector(f"#alarms li:has-text('ack. {world.operator}')")
    page.goto(f"{world.opsroom.url}/#bids")
    page.wait_for_function(f"document.getElementById('plan-id').textContent === '{world.plan_id}'")
    assert page.inner_text("#plan-line") == "2 sites planned · 1 on the fallback plan"
    assert page.inner_text("#bidding-line").startswith("Bidding's plan status unavailable: ")
    plan = page.evaluate("async () => (await (await fetch('/api/bids')).json()).plan")
    assert plan["hp_on"] == [2, 2, 0, 2]
    assert plan["expected_kw"] == pytest.approx([2 * SITE_KW, 2 * SITE_KW, 0.0, 2 * SITE_KW])
    page.wait_for_selector(f"#bids-table tr:has-text('{world.bid_id}')")
    assert "accepted 0.3 MW" in page.inner_text(f"#bids-table tr:has-text('{world.bid_id}')")
    spot = (
        "async () => (await (await fetch('/api/prices?area=DK1')).json()).curves['day_ahead:DK1:spot:none']"
    )
    until(page, f"async () => ((await ({spot})()) || []).length >= 8", None, True)
    prices = page.evaluate("async () => (await fetch('/api/prices?area=DK1')).json()")
    assert prices["balance_sites"] >= 1
    assert sum(prices["balance_histogram"]["counts"]) == prices["balance_sites"]
    page.goto(f"{world.opsroom.url}/#prices")
    page.wait_for_selector("#price-chart .main-svg")
    row = "async (id) => (await (await fetch('/api/sites?q=' + id)).json()).sites[0]"
    until(page, f"async (id) => ((await ({row})(id)).cop)", world.consented[0], 3.4)
    assert page.evaluate(row, world.consented[0])["balance_price_eur_per_mwh"] == 212.5


def test_live_value_changes_after_a_test_activation(world: World, page: Page, infra: Infra) -> None:
    """A test activation appears at once; HPs switching off show up as delivered power within seconds."""
    page.goto(f"{world.opsroom.url}/#overview")
    page.select_option("#test-direction", "up")
    page.fill("#test-mw", "0.1")
    page.fill("#test-s", "600")
    page.click("#test-form button")
    page.wait_for_function("document.getElementById('test-result').textContent.startsWith('started test-')")
    activation_id = page.inner_text("#test-result").split()[-1]
    page.wait_for_function(
        f"document.getElementById('act-id').textContent === '{activation_id}'"
        " && document.getElementById('act-line').textContent.includes('requested 100 kW')"
        " && document.getElementById('act-line').textContent.includes('(pool power vs baseline)')"
    )
    before = float(page.get_attribute("#act-line", "data-delivered") or "nan")
    assert abs(before) < 1.0

    # The pool responds: ten HPs at a time switch off, as dispatch and the homes would.
    for step in range(1, 5):
        n = step * 10
        write_states(own_db(infra.redis_url), world.fleet, [i >= n for i in range(FLEET)])
        page.wait_for_function(
            f"Number(document.getElementById('act-line').dataset.delivered) >= {n * SITE_KW * 0.9}",
            timeout=2_000 + 1_000,  # a live value reaches the page within 2 s (+ a tick of slack)
        )
    page.wait_for_function("document.getElementById('act-verdict').textContent === 'compliant'")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let Plotly finish its transition before the picture
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000

    # Dispatch's measured reactions: the site without consent is counted but never named.
    now = utc_now()
    reactions = [
        ReactionMeasured(
            command_id=unique("cmd"),
            site_id=site_id,
            activation_id=activation_id,
            sent_at=now - timedelta(seconds=3),
            reached_50_at=now - timedelta(seconds=1) if ok else None,
            expected_change_kw=-SITE_KW,
            observed_change_kw=-SITE_KW if ok else 0.0,
            responded=ok,
        )
        for site_id, ok in ((world.consented[0], True), (world.refused, False))
    ]
    send(infra, [(topics.DISPATCH_REACTIONS, r) for r in reactions])
    until(
        page,
        "async (id) => (await (await fetch('/api/activations/' + id)).json()).sites_used_count",
        activation_id,
        2,
    )
    page.goto(f"{world.opsroom.url}/#activations")
    page.click(f"#acts-table tr:has-text('{activation_id}')")
    page.wait_for_function("document.getElementById('ad-used').textContent.startsWith('2 ')")
    assert page.inner_text("#ad-used") == f"2 ({world.consented[0]})"
    assert page.inner_text("#ad-failed") == "1 (none visible)"
    assert page.inner_text("#ad-verdict") == "compliant"


def test_search_exclude_and_audit(world: World, page: Page, infra: Infra) -> None:
    """Search finds a consented site; excluding it is shown, published for dispatch and bidding on
    pool.membership, and recorded in the audit trail."""
    target = world.consented[1]
    page.goto(f"{world.opsroom.url}/#sites")
    page.fill("#site-search", target)
    row = f"#sites-table tr[data-site='{target}']"
    page.wait_for_function("document.getElementById('sites-count').textContent === '1 sites'")
    page.wait_for_selector(row)
    assert page.locator("#sites-table tr").count() == 1
    page.click(f"{row} button[data-action='exclude']")
    page.wait_for_selector(f"{row} button[data-action='include']")
    published = in_thread(
        wait_for_records(
            infra.kafka_bootstrap, topics.POOL_MEMBERSHIP.name, lambda r: r.key == target.encode()
        )
    )
    change = SitePoolMembershipChanged.from_json_bytes(published[0].value)
    assert (change.in_pool, change.changed_by) == (False, world.operator)
    in_registry = in_thread(
        wait_for_records(
            infra.kafka_bootstrap,
            topics.AUDIT_LOG.name,
            lambda r: (
                (a := AuditRecorded.from_json_bytes(r.value or b"")).site_id == target
                and a.action == "opsroom:site.exclude"
            ),
        )
    )
    assert AuditRecorded.from_json_bytes(in_registry[0].value or b"").actor_id == world.operator

    page.goto(f"{world.opsroom.url}/#audit")
    page.wait_for_selector("#audit-table tr")
    entry = page.locator("#audit-table tr", has_text=target).first
    assert "site.exclude" in entry.inner_text()
    assert world.operator in entry.inner_text()
    assert page.inner_text("#audit-chain") == "chain intact"
    acknowledged = page.locator("#audit-table tr", has_text="alarm.acknowledge").first
    assert world.plan_id in acknowledged.inner_text()


def test_a_site_without_consent_stays_hidden(world: World, page: Page) -> None:
    """The registered site whose owner gave no consent is neither listed nor readable, even by URL."""
    page.goto(f"{world.opsroom.url}/#sites")
    page.fill("#site-search", "")
    page.fill("#site-search", world.refused)
    page.wait_for_function("document.getElementById('sites-count').textContent === '0 sites'")
    assert page.locator("#sites-table tr").count() == 0
    status = page.evaluate("async (id) => (await fetch('/api/sites/' + id)).status", world.refused)
    assert status == 404
    consented = page.evaluate("async (id) => (await fetch('/api/sites/' + id)).status", world.consented[0])
    assert consented == 200

    # The site page: quarter-hour history, and the HP-Hub status read through the registry.
    page.fill("#site-search", world.consented[0])
    page.wait_for_function("document.getElementById('sites-count').textContent === '1 sites'")
    page.click(f"#sites-table tr[data-site='{world.consented[0]}']")
    page.wait_for_selector("#sd-chart .main-svg")
    assert world.consented[0] in page.inner_text("#sd-id")
    powers = (
        "async (id) => (await (await fetch('/api/sites/' + id)).json()).quarters.map((q) => q.mean_power_kw)"
    )
    until(page, powers, world.consented[0], [1.5, 1.75, 2.0, 2.25])
    assert "gateway ok, heat pump ok, maintenance due" in page.inner_text("#sd-line")

    # The registry checked consent for that status itself and recorded the operator's read.
    with httpx.Client(timeout=10) as client:
        as_auditor = _token(client, world.registry.url, AUDITOR, world.password)
        audit = client.get(
            f"{world.registry.url}/audit", params={"site_id": world.consented[0]}, headers=as_auditor
        ).json()
    reads = [
        r for r in audit["records"] if r["action"] == "operational.read" and r["actor_id"] == world.operator
    ]
    assert reads
    assert reads[-1]["purpose"] == PURPOSE


def test_an_open_live_stream_does_not_hold_up_a_stop(world: World, page: Page) -> None:
    """With a browser's event stream open, SIGTERM still stops the ops room well inside uvicorn's 10 s
    graceful timeout, and the stream ends instead of being cut. (Last test: it stops the service.)"""
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    proc = world.opsroom.process.proc
    with (
        httpx.Client(base_url=world.opsroom.url, cookies=cookies, timeout=10) as client,
        client.stream("GET", "/api/stream") as stream,
    ):
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event: "))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for _ in lines:  # ends when the server closes the stream
            pass
        proc.wait(10)
        took = time.monotonic() - started
    assert took < 6.0, f"stop took {took:.1f} s with a stream open"
    log = world.opsroom.process.log.read_text()
    assert "opsroom stopped" in log  # the lifespan shutdown ran: a clean stop, not a kill
    assert "timeout graceful shutdown exceeded" not in log
