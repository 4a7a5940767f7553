"""The embedded Redis is handed out only once it has replayed its AOF, not merely once it listens."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from hybridpool_cli.infra import start_redis

pytestmark = pytest.mark.integration
KEYS = 300_000


def test_a_restarted_redis_answers_at_once_with_all_its_data(tmp_path: Path) -> None:
    proc, url = start_redis(tmp_path)
    try:
        client = redis.Redis.from_url(url)
        with client.pipeline(transaction=False) as pipe:
            for i in range(KEYS):
                pipe.set(f"k:{i}", b"x" * 64)
            pipe.execute()
        client.close()
    finally:
        proc.stop()  # SIGTERM: the AOF is flushed
    proc, url = start_redis(tmp_path)
    try:
        client = redis.Redis.from_url(url)
        assert client.get(f"k:{KEYS - 1}") == b"x" * 64  # LOADING would raise here
        assert client.dbsize() == KEYS
        client.close()
    finally:
        proc.stop()
