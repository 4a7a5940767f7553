"""Error hierarchy for message handling.

HandlingError
├── PermanentError   – the message can never be processed: dead-letter it and go on.
└── TransientError   – the world is not ready (Redis down, timeout): retry with back-off.
"""

from __future__ import annotations


class HandlingError(Exception):
    """Base of errors a handler raises on purpose."""


class PermanentError(HandlingError):
    """The message is bad for good; it goes to the dead-letter topic with this reason."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class TransientError(HandlingError):
    """A temporary failure; the message is redelivered after a back-off."""
