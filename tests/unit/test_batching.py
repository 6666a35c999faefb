"""engine.batching: bodies, limits and order, checked on plain Event values."""

from __future__ import annotations

import itertools
import json
import random
import string
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.delivery.batching import encode_event, split
from engine.models import Batch, Event

CREATED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def make_event(
    event_id: int,
    *,
    topic: str = "order.created",
    payload: bytes = b'{"a": 1}',
    attempt: int = 1,
) -> Event:
    return Event(id=event_id, topic=topic, created_at=CREATED, payload=payload, attempt=attempt)


def flat_ids(batches: list[Batch]) -> list[int]:
    return [event_id for batch in batches for event_id in batch.event_ids]


def array_size(events: list[Event]) -> int:
    """Bytes of a JSON array body holding `events`."""
    return 2 + sum(len(encode_event(e)) for e in events) + max(len(events) - 1, 0)


def test_encode_event_has_the_envelope_fields() -> None:
    parsed = json.loads(encode_event(make_event(7)))

    assert parsed == {
        "id": 7,
        "type": "order.created",
        "timestamp": "2024-05-06T07:08:09.123456Z",
        "data": {"a": 1},
    }
    assert datetime.fromisoformat(parsed["timestamp"]) == CREATED


def test_encode_event_timestamp_without_microseconds_ends_with_z() -> None:
    event = Event(
        id=1,
        topic="t",
        created_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        payload=b"1",
        attempt=1,
    )

    assert json.loads(encode_event(event))["timestamp"] == "2024-01-02T03:04:05Z"


def test_one_event_per_batch_gives_json_objects() -> None:
    events = [make_event(i) for i in (3, 4, 5)]

    batches = split(events, maximum_events=1, maximum_size=10_000)

    assert [b.event_ids for b in batches] == [[3], [4], [5]]
    for batch, event in zip(batches, events, strict=True):
        parsed = json.loads(batch.body)
        assert isinstance(parsed, dict)
        assert set(parsed) == {"id", "type", "timestamp", "data"}
        assert parsed["id"] == event.id
        assert parsed["type"] == "order.created"
        assert parsed["timestamp"].endswith("Z")
        assert parsed["data"] == {"a": 1}
        assert batch.body == encode_event(event)
        assert batch.oversize is False


def test_several_events_per_batch_gives_an_array_even_for_one_event() -> None:
    [batch] = split([make_event(9)], maximum_events=10, maximum_size=10_000)

    parsed = json.loads(batch.body)
    assert isinstance(parsed, list)
    assert len(parsed) == 1
    assert parsed[0]["id"] == 9
    assert parsed[0]["data"] == {"a": 1}


def test_array_body_is_the_encoded_events_joined() -> None:
    events = [make_event(i) for i in range(1, 4)]

    [batch] = split(events, maximum_events=10, maximum_size=10_000)

    assert batch.body == b"[" + b",".join(encode_event(e) for e in events) + b"]"
    assert [item["id"] for item in json.loads(batch.body)] == [1, 2, 3]


def test_no_events_gives_no_batches() -> None:
    assert split([], maximum_events=1, maximum_size=100) == []
    assert split([], maximum_events=5, maximum_size=100) == []


def test_batches_hold_at_most_maximum_events() -> None:
    events = [make_event(i) for i in range(1, 26)]

    batches = split(events, maximum_events=4, maximum_size=1_000_000)

    assert [len(b.events) for b in batches] == [4, 4, 4, 4, 4, 4, 1]
    assert flat_ids(batches) == list(range(1, 26))


def test_size_limit_is_inclusive() -> None:
    events = [make_event(i) for i in range(10, 20)]
    three = array_size(events[:3])

    exactly = split(events, maximum_events=100, maximum_size=three)
    one_less = split(events, maximum_events=100, maximum_size=three - 1)

    assert [len(b.events) for b in exactly] == [3, 3, 3, 1]
    assert all(len(b.body) <= three for b in exactly)
    assert [len(b.events) for b in one_less] == [2, 2, 2, 2, 2]
    assert all(len(b.body) <= three - 1 for b in one_less)
    assert not any(b.oversize for b in exactly + one_less)


@pytest.mark.parametrize("maximum_events", [1, 10])
def test_oversize_event_is_alone_and_flagged(maximum_events: int) -> None:
    big = b'{"blob": "' + b"x" * 1000 + b'"}'
    events = [make_event(1), make_event(2), make_event(3, payload=big), make_event(4)]

    batches = split(events, maximum_events=maximum_events, maximum_size=300)

    oversize = [b for b in batches if b.oversize]
    assert [b.event_ids for b in oversize] == [[3]]
    assert len(oversize[0].body) > 300
    parsed = json.loads(oversize[0].body)
    item = parsed if maximum_events == 1 else parsed[0]
    assert item["data"] == {"blob": "x" * 1000}
    assert all(len(b.body) <= 300 for b in batches if not b.oversize)
    assert flat_ids(batches) == [1, 2, 3, 4]


def test_event_larger_than_limit_at_start_and_end() -> None:
    big = b'"' + b"y" * 500 + b'"'
    events = [make_event(1, payload=big), make_event(2), make_event(3, payload=big)]

    batches = split(events, maximum_events=5, maximum_size=200)

    assert [(b.event_ids, b.oversize) for b in batches] == [([1], True), ([2], False), ([3], True)]


def test_payload_bytes_are_embedded_verbatim() -> None:
    payload = b'{"n":  123456789012345678901234567890, "f": 2.50, "s": "caf\xc3\xa9"}'
    events = [make_event(1, payload=payload), make_event(2, payload=b"[1, 2]")]

    single = split(events, maximum_events=1, maximum_size=10_000)
    array = split(events, maximum_events=2, maximum_size=10_000)

    assert payload in single[0].body
    assert payload in array[0].body
    assert json.loads(single[0].body)["data"]["n"] == 123456789012345678901234567890
    parsed = json.loads(array[0].body)
    assert parsed[0]["data"] == {"n": 123456789012345678901234567890, "f": 2.5, "s": "café"}
    assert parsed[1]["data"] == [1, 2]


@pytest.mark.parametrize(
    "topic",
    ['say "hi"', "back\\slash", "line\nbreak\ttab", "café ☕ 😀", "\x01control", ""],
)
def test_topic_is_json_escaped(topic: str) -> None:
    event = make_event(1, topic=topic)

    [single] = split([event], maximum_events=1, maximum_size=10_000)
    [array] = split([event], maximum_events=3, maximum_size=10_000)

    assert json.loads(single.body)["type"] == topic
    assert json.loads(array.body)[0]["type"] == topic


def test_batch_attempt_is_the_highest_of_its_events() -> None:
    events = [make_event(1, attempt=2), make_event(2, attempt=5), make_event(3, attempt=1)]

    [batch] = split(events, maximum_events=3, maximum_size=10_000)

    assert batch.attempt == 5


@pytest.mark.parametrize(("maximum_events", "maximum_size"), [(0, 100), (-1, 100), (1, 0), (5, -3)])
def test_limits_below_one_are_rejected(maximum_events: int, maximum_size: int) -> None:
    with pytest.raises(ValueError):
        split([make_event(1)], maximum_events=maximum_events, maximum_size=maximum_size)


def random_event(rng: random.Random, event_id: int) -> Event:
    text = "".join(rng.choice(string.ascii_letters + ' "\\é☕') for _ in range(rng.randint(0, 300)))
    payload = json.dumps({"text": text, "n": rng.randint(-(10**30), 10**30)}).encode()
    topic = "".join(rng.choice(string.ascii_lowercase + '."é') for _ in range(rng.randint(0, 20)))
    return Event(
        id=event_id,
        topic=topic,
        created_at=CREATED,
        payload=payload,
        attempt=rng.randint(1, 5),
    )


def check_invariants(
    events: list[Event], batches: list[Batch], maximum_events: int, maximum_size: int
) -> None:
    assert [e for b in batches for e in b.events] == events
    for batch in batches:
        assert 1 <= len(batch.events) <= maximum_events
        encoded = [encode_event(e) for e in batch.events]
        if maximum_events == 1:
            assert batch.body == encoded[0]
            parsed: Any = [json.loads(batch.body)]
        else:
            assert batch.body == b"[" + b",".join(encoded) + b"]"
            parsed = json.loads(batch.body)
            assert isinstance(parsed, list)
        assert [item["id"] for item in parsed] == batch.event_ids
        assert [item["data"] for item in parsed] == [json.loads(e.payload) for e in batch.events]
        if len(batch.body) > maximum_size:
            assert batch.oversize
            assert len(batch.events) == 1
        else:
            assert not batch.oversize
    if maximum_events > 1:
        # Greedy: a batch is closed only when it is full or the next event would not fit.
        for current, following in itertools.pairwise(batches):
            next_size = len(current.body) + 1 + len(encode_event(following.events[0]))
            assert len(current.events) == maximum_events or next_size > maximum_size


@pytest.mark.parametrize("seed", range(200))
def test_random_splits_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    events = [random_event(rng, i) for i in range(1, rng.randint(0, 40) + 1)]
    maximum_events = rng.choice([1, 1, 2, 3, 5, 10, 100])
    maximum_size = rng.randint(1, 3000)

    batches = split(events, maximum_events=maximum_events, maximum_size=maximum_size)

    check_invariants(events, batches, maximum_events, maximum_size)
