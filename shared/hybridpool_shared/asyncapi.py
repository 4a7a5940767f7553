"""Generate a service's AsyncAPI 3.0 document from the topic catalogue."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hybridpool_shared.topics import TopicSpec, dead_letter_spec


def _channel(spec: TopicSpec) -> dict[str, Any]:
    name = spec.model.__name__
    return {
        "address": spec.name,
        "description": spec.description,
        "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        "bindings": {
            "kafka": {
                "partitions": spec.partitions,
                "topicConfiguration": {
                    "cleanup.policy": ["compact" if spec.compacted else "delete"],
                    "retention.ms": spec.retention_ms,
                },
            }
        },
        "x-key": spec.key,
    }


def _operation(spec: TopicSpec, action: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{spec.name}"},
        "messages": [{"$ref": f"#/channels/{spec.name}/messages/{spec.model.__name__}"}],
    }


def build_asyncapi(
    service: str, version: str, consumes: Iterable[TopicSpec], produces: Iterable[TopicSpec]
) -> dict[str, Any]:
    """Return the AsyncAPI document of a service that consumes and produces the given topics."""
    consumed = list(consumes)
    produced = [*produces, *(dead_letter_spec(spec) for spec in consumed)]
    every = {spec.name: spec for spec in [*consumed, *produced]}
    messages = {
        spec.model.__name__: {
            "name": spec.model.__name__,
            "title": spec.model.__name__,
            "summary": (spec.model.__doc__ or "").strip(),
            "contentType": "application/json",
            "payload": spec.model.model_json_schema(),
        }
        for spec in every.values()
    }
    operations = {f"receive_{s.name}": _operation(s, "receive") for s in consumed}
    operations.update({f"send_{s.name}": _operation(s, "send") for s in produced})
    return {
        "asyncapi": "3.0.0",
        "info": {"title": f"hybridpool {service}", "version": version},
        "defaultContentType": "application/json",
        "channels": {name: _channel(spec) for name, spec in every.items()},
        "operations": operations,
        "components": {"messages": messages},
    }
