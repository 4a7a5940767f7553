"""`hybridpool prices backfill` run twice over the same range leaves the topics unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import date

import pytest

from hybridpool_shared import topics
from hybridpool_shared.messages import DayAheadPriceIngested, ReservePriceIngested
from hybridpool_shared.timeutil import local_day_bounds, utc_now
from tests.fixtures.prices.eds_server import FakeEds, serving
from tests.infra import REPO, Infra, unique
from tests.integration.test_price_ingest import read_all

pytestmark = pytest.mark.integration
FIRST, LAST = date(2025, 11, 10), date(2025, 11, 11)


@pytest.fixture(scope="module")
def eds() -> Iterator[FakeEds]:
    with serving(FakeEds()) as server:
        yield server


def backfill(infra: Infra, eds: FakeEds, namespace: str) -> str:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "REDIS_URL": infra.redis_url,
        "PRICE_INGEST_SOURCE": "api",
        "PRICE_INGEST_API_BASE_URL": eds.url,
        "PRICE_INGEST_REDIS_NAMESPACE": namespace,
        "COLUMNS": "200",
    }
    cmd = [sys.executable, "-m", "hybridpool_cli.main", "prices", "backfill"]
    args = ["--from", str(FIRST), "--to", str(LAST), "--dataset", "all"]
    done = subprocess.run([*cmd, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def topic_state(infra: Infra, since: object) -> tuple[list[bytes], list[bytes]]:
    start, end = local_day_bounds(FIRST)[0], local_day_bounds(LAST)[1]

    def mine(model: type[DayAheadPriceIngested] | type[ReservePriceIngested], raw: bytes) -> bool:
        msg = model.from_json_bytes(raw)
        return msg.ingested_at >= since and start <= msg.interval_start < end  # type: ignore[operator]

    day_ahead = await read_all(infra.kafka_bootstrap, topics.PRICES_DAY_AHEAD.name, 6)
    reserve = await read_all(infra.kafka_bootstrap, topics.PRICES_RESERVE.name, 6)
    return (
        sorted(r for r in day_ahead if mine(DayAheadPriceIngested, r)),
        sorted(r for r in reserve if mine(ReservePriceIngested, r)),
    )


async def test_backfill_twice_is_idempotent(infra: Infra, eds: FakeEds) -> None:
    namespace = unique("backfill") + ":"
    since = utc_now()
    first_out = backfill(infra, eds, namespace)
    assert "published 576" in first_out  # 2 days x 96 x 2 areas spot + 2 x 24 x 2 x 2 mFRR capacity
    after_first = await topic_state(infra, since)
    assert (len(after_first[0]), len(after_first[1])) == (384, 192)

    second_out = backfill(infra, eds, namespace)
    assert "published 0" in second_out
    assert "unchanged 576" in second_out
    after_second = await topic_state(infra, since)
    assert after_second == after_first
    keys = Counter(DayAheadPriceIngested.from_json_bytes(r).kafka_key() for r in after_second[0])
    assert set(keys.values()) == {1}
