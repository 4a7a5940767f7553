"""The topic catalogue and the AsyncAPI documents generated from it."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.asyncapi import build_asyncapi
from hybridpool_shared.messages import DeadLettered, Message


def test_every_topic_has_a_distinct_name_a_model_and_a_dead_letter_topic() -> None:
    names = [spec.name for spec in topics.all_topics()]
    assert len(names) == len(set(names)) == 2 * len(topics.CATALOGUE)
    for spec in topics.CATALOGUE:
        assert issubclass(spec.model, Message)
        assert spec.dlq in names
        assert spec.model.model_config.get("extra") == "forbid"


def test_compacted_topics_say_so_in_their_config() -> None:
    assert topics.SITES_REGISTRY.configs()["cleanup.policy"] == "compact"
    assert topics.SITES_TELEMETRY.configs()["cleanup.policy"] == "delete"


def test_asyncapi_lists_inputs_outputs_and_dead_letter_topics() -> None:
    doc = build_asyncapi(
        "balance", "1", consumes=(topics.PRICES_DAY_AHEAD,), produces=(topics.SITES_BALANCE_PRICE,)
    )
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["channels"]) == {"prices.day_ahead", "sites.balance_price", "prices.day_ahead.dlq"}
    assert doc["operations"]["receive_prices.day_ahead"]["action"] == "receive"
    assert doc["operations"]["send_prices.day_ahead.dlq"]["action"] == "send"
    schema = doc["components"]["messages"]["DayAheadPriceIngested"]["payload"]
    assert "price_eur_per_mwh" in schema["properties"]
    assert DeadLettered.__name__ in doc["components"]["messages"]
