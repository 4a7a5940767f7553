"""The command publisher works out site partitions ahead of a burst, as the broker's partitioner would."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from services.dispatch.adapters import CommandPublisher


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
