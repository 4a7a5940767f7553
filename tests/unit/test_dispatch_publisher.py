"""The command publisher (partitions ahead of a burst, per-batch confirmation); the claim's input checks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from aiokafka.partitioner import DefaultPartitioner

from hybridpool_shared.messages import SgReadyState, SwitchHeatPump
from services.dispatch.adapters import ClaimRequest, CommandPublisher, SafetyStore
from services.dispatch.dispatcher import build_switches


class _Producer:
    """Just enough of AIOKafkaProducer: the partitions of a topic."""

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3, 4, 5}


async def test_warm_computes_each_new_sites_partition_once_like_the_default_partitioner() -> None:
    publisher = CommandPublisher("unused:9092", idempotence=False, client_id="t")
    publisher._producer = _Producer()
    keys = [f"site-{i}".encode() for i in range(50)]
    assert await publisher.warm(keys) == 50
    assert await publisher.warm([*keys, b"site-new"]) == 1
    partitioner = DefaultPartitioner()
    parts = [0, 1, 2, 3, 4, 5]
    assert {k: publisher._partition_of[k] for k in keys} == {k: partitioner(k, parts, parts) for k in keys}
    assert len(set(publisher._partition_of.values())) > 1


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, timestamp: None, key: bytes, value: bytes, headers: object) -> object:
        self.records.append((key, value))
        return object()


class _FlakyProducer(_Producer):
    """Hands each partition's batch over; the broker refuses the batch of one partition."""

    def __init__(self, failing_partition: int) -> None:
        self.failing_partition = failing_partition
        self.sent: list[_Batch] = []

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[object]:
        self.sent.append(batch)
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if partition == self.failing_partition:
            fut.set_exception(ConnectionError("not leader"))
        else:
            fut.set_result(None)
        return fut


def _commands(n: int) -> list[SwitchHeatPump]:
    now = datetime.now(tz=UTC)
    return [
        SwitchHeatPump(
            command_id=f"c{i}",
            site_id=f"site-{i}",
            seq=1,
            sg_ready_state=SgReadyState.BLOCK,
            issued_at=now,
            valid_until=now + timedelta(minutes=30),
            activation_id="a1",
            reason="mfrr_energy up",
        )
        for i in range(n)
    ]


async def test_each_command_goes_out_keyed_by_site_as_its_own_json() -> None:
    publisher = CommandPublisher("unused:9092", idempotence=False, client_id="t")
    producer = _FlakyProducer(failing_partition=-1)
    publisher._producer = producer
    msgs = _commands(20)
    await publisher.publish_many(msgs)
    sent = sorted(r for batch in producer.sent for r in batch.records)
    assert sent == sorted((m.kafka_key(), m.to_json_bytes()) for m in msgs)


async def test_a_failed_batch_fails_the_call_but_every_other_batch_is_confirmed() -> None:
    publisher = CommandPublisher("unused:9092", idempotence=False, client_id="t")
    msgs = _commands(60)
    publisher._producer = _Producer()
    await publisher.warm([m.kafka_key() for m in msgs])
    failing = publisher._partition_of[msgs[0].kafka_key()]
    publisher._producer = _FlakyProducer(failing)
    confirmed: list[SwitchHeatPump] = []
    with pytest.raises(ConnectionError):
        await publisher.publish_many(msgs, confirmed.append)
    lost = [m for m in msgs if publisher._partition_of[m.kafka_key()] == failing]
    assert 0 < len(lost) < len(msgs)
    assert sorted(m.command_id for m in confirmed) == sorted(m.command_id for m in msgs if m not in lost)


@pytest.mark.parametrize("command_id", ["", "a,b", "a;b", "a|b", "a\nb"])
async def test_a_claim_with_a_command_id_the_script_cannot_parse_is_refused_before_redis(
    command_id: str,
) -> None:
    store = SafetyStore(aioredis.Redis(host="unused.invalid"), "t")  # never connected: refused first
    good = ClaimRequest("s1", "block", "a1", "cmd-1", 1, 2, 3, 4)
    bad = good._replace(site_id="s2", command_id=command_id)
    with pytest.raises(ValueError, match="command_id"):
        await store.claim([good, bad, good._replace(site_id="s3", command_id="cmd-3")], 1)


def test_one_invalid_command_does_not_keep_the_rest_of_its_chunk_from_being_built() -> None:
    msgs = _commands(5)
    fields = [m.model_dump(exclude={"schema_version"}) for m in msgs]
    fields[2]["site_id"] = "not a site id"
    assert build_switches(fields) == [m for i, m in enumerate(msgs) if i != 2]
