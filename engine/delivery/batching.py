"""Pure: turn claimed events into request bodies under maximum_events and maximum_size.

Body format: with maximum_events = 1, one JSON object
``{"id": <event id>, "type": <topic>, "timestamp": <created_at, RFC 3339 UTC>, "data": <payload>}``;
with maximum_events > 1, a JSON array of such objects, even when it holds one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson

from engine.models import Batch, Event

# Bytes an envelope adds around the payload and the JSON-encoded id, topic and timestamp.
_ENVELOPE_FIXED = len(b'{"id":,"type":,"timestamp":,"data":}')


def encode_event(event: Event) -> bytes:
    return b'{"id":%d,"type":%b,"timestamp":%b,"data":%b}' % (
        event.id,
        orjson.dumps(event.topic),
        orjson.dumps(event.created_at, option=orjson.OPT_UTC_Z),
        event.payload,
    )


def envelope_overhead_estimate() -> int:
    """Bytes per event beyond payload and topic, for the claim query's size estimate."""
    return _ENVELOPE_FIXED + 20 + 2 + 32  # id digits, topic quotes, timestamp with quotes


def encode_ultracart(event: Event) -> bytes:
    """UltraCart's one-key object: {"<event name>": <payload>}, the name being the topic with
    dots as underscores ("order.create" -> "order_create")."""
    return b"{%b:%b}" % (orjson.dumps(event.topic.replace(".", "_")), event.payload)


def encode_payload(event: Event) -> bytes:
    """The payload alone (WooCommerce, ReadyCloud)."""
    return event.payload


@dataclass(frozen=True, kw_only=True)
class BodyFormat:
    """How events become a request body: each event's bytes, and whether several go into one
    JSON array (else every request carries exactly one event, as it is)."""

    item: Callable[[Event], bytes] = encode_event
    array: bool = True


def split(
    events: Sequence[Event],
    maximum_events: int,
    maximum_size: int,
    body_format: BodyFormat | None = None,
) -> list[Batch]:
    """Group `events` (in id order) into batches.

    Each batch holds at most `maximum_events` events and its body at most `maximum_size` bytes,
    except that one event larger than `maximum_size` on its own is a batch by itself (oversize):
    it is sent, never dropped. Without `body_format`: the standard envelope, alone when
    maximum_events is 1, else in an array.
    """
    if maximum_events < 1 or maximum_size < 1:
        raise ValueError("maximum_events and maximum_size must be at least 1")
    fmt = body_format or BodyFormat(array=maximum_events > 1)
    encoded = [(event, fmt.item(event)) for event in events]
    if not fmt.array:
        return [
            Batch(events=(event,), body=body, oversize=len(body) > maximum_size)
            for event, body in encoded
        ]
    batches: list[Batch] = []
    current: list[tuple[Event, bytes]] = []
    size = 2  # the brackets
    for event, body in encoded:
        added = len(body) + (1 if current else 0)
        if current and (len(current) >= maximum_events or size + added > maximum_size):
            batches.append(_array_batch(current, maximum_size))
            current, size = [], 2
            added = len(body)
        current.append((event, body))
        size += added
    if current:
        batches.append(_array_batch(current, maximum_size))
    return batches


def _array_batch(items: Iterable[tuple[Event, bytes]], maximum_size: int) -> Batch:
    items = list(items)
    body = b"[" + b",".join(body for _, body in items) + b"]"
    return Batch(
        events=tuple(event for event, _ in items),
        body=body,
        oversize=len(body) > maximum_size,
    )
