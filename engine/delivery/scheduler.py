"""The delivery loop: wait for work, claim each ready endpoint's head batches, hand them to the
worker under global and per-endpoint limits, and stop cleanly."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import structlog

from engine.aio import wait_event
from engine.config import DeliveryConfig
from engine.db.store import DB_ERRORS, ClaimBudget, EndpointState, Settlement, Store
from engine.delivery import batching
from engine.delivery.backoff import Reconnect
from engine.delivery.recorder import Recorder
from engine.delivery.worker import Worker
from engine.models import Batch, Outcome, Webhook
from engine.ops.logfields import endpoint_fields
from engine.wire import profiles

log = structlog.get_logger("engine.scheduler")

# Claim up to this many times the concurrency limits (global and per endpoint): the batches
# beyond the limits wait for a slot in this process, so a request that finishes is followed at
# once by the next one instead of a claim round trip later (measured: one endpoint's 8 slots
# sat idle most of the time without it). Leases cover the wait.
PREFETCH = 2
# An endpoint that answers fast is claimed further ahead, up to DEEP_PREFETCH times its
# concurrency, as long as the batches claimed ahead wait no longer than AHEAD_S by its recent
# pace: each claim (and the passes that lead to it) then serves up to four times as many
# requests. Measured on one endpoint answering in about a millisecond: with PREFETCH alone the
# passes took about 11 % of the daemon's CPU (py-spy) and a claim 13 rows; with this, 42.
DEEP_PREFETCH = 8
AHEAD_S = 0.05
# Weight of the newest request in an endpoint's pace (an exponential moving average).
_PACE_WEIGHT = 0.1
# Each endpoint of a pass may claim this many batches at least, even when many are ready: an
# endpoint's queue length is unknown until claimed, and a claim that finds fewer rows than it
# asked for has drained it in one go. Claiming one batch each took six claims and settles to
# drain an endpoint of five events (bench/scale.py: 10,000 such endpoints ran at 0.78 of one
# endpoint's rate).
MIN_SHARE = 8


class Scheduler:
    def __init__(
        self, store: Store, worker: Worker, recorder: Recorder, config: DeliveryConfig
    ) -> None:
        self._store = store
        self._worker = worker
        self._recorder = recorder
        self._config = config
        self._wake = asyncio.Event()
        self._stopping = False
        self._global = asyncio.Semaphore(config.concurrency)
        self._lanes: dict[int, _Lane] = {}  # per webhook with batches in flight here
        # Seconds per request, a moving average, for endpoints with batches in flight here.
        self._pace: dict[int, float] = {}
        # The last pass left due endpoints unserved for want of free slots: any finished
        # request may let the next pass serve them.
        self._starved = False
        self._in_flight: dict[int, int] = {}  # batches claimed and not yet finished, per webhook
        self._sending = 0
        self._awaiting_flush: dict[int, int] = {}  # failed batches whose backoff is not written yet
        self._failing_since: dict[int, float] = {}  # monotonic time an endpoint was seen failing
        self._disabled: set[int] = set()  # endpoints this daemon disabled, to notice re-enabling
        self._tasks: set[asyncio.Task[None]] = set()
        self._rotation = 0
        # time.monotonic() of the last loop iteration, for the systemd watchdog.
        self.last_pass_at = time.monotonic()

    def wake(self) -> None:
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """Batches claimed and not yet finished: being sent, or claimed ahead and waiting for a
        slot (PREFETCH)."""
        return sum(self._in_flight.values())

    @property
    def sending(self) -> int:
        """Requests being sent right now."""
        return self._sending

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Deliver until `stop` is set (or, with burst, until nothing is left to do)."""
        # One task for the whole run turns `stop` into a wake-up, so each idle wait is a plain
        # timed wait on one event (no tasks created per pass).
        stop_watch = asyncio.create_task(self._wake_on(stop), name="scheduler-stop-watch")
        try:
            await self._loop(stop, burst)
        finally:
            stop_watch.cancel()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _loop(self, stop: asyncio.Event, burst: bool) -> None:
        reconnect = Reconnect()
        while not stop.is_set():
            self.last_pass_at = time.monotonic()
            self._wake.clear()
            try:
                timeout = await self._pass(burst)
                reconnect.reset()
            except DB_ERRORS as exc:
                # Postgres restarted or our connection was cut: the pool reconnects; back off.
                timeout = reconnect.next_delay_s()
                log.warning(
                    "scheduler.database_error",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(timeout, 3),
                )
            if timeout is None:
                break  # burst: nothing left
            if timeout > 0:
                await wait_event(self._wake, timeout)

    async def _pass(self, burst: bool) -> float | None:
        """One scheduling pass; returns how long to wait for a wake-up before the next one
        (0: go again at once; None: burst mode has nothing left to do)."""
        if await self._schedule_once():
            return 0.0
        if burst and self._idle() and await self._store.next_wakeup_s(pending_only=True) is None:
            return None
        timeout = self._config.poll_interval_s
        if self.in_flight == 0:
            until_retry = await self._store.next_wakeup_s()
            if until_retry is not None:
                timeout = min(timeout, until_retry + 0.001)
        return timeout

    def _idle(self) -> bool:
        return not (self._tasks or self._recorder.pending or self._awaiting_flush)

    async def drain(self, grace_s: float) -> None:
        """Stop starting requests; let in-flight ones finish within `grace_s`, release the rest."""
        self._stopping = True
        if self._tasks:
            log.info("scheduler.draining", in_flight=self.in_flight, grace_s=grace_s)
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("scheduler.grace_expired", cancelled=len(pending))
                await asyncio.wait(pending)

    def on_flush(self, outcomes: Sequence[Outcome], states: Sequence[EndpointState]) -> None:
        """Called by the recorder once outcomes are committed."""
        all_delivered = True
        for outcome in outcomes:
            if outcome.success:
                continue
            all_delivered = False
            if outcome.sent:
                left = self._awaiting_flush.get(outcome.webhook_id, 0) - 1
                if left > 0:
                    self._awaiting_flush[outcome.webhook_id] = left
                else:
                    self._awaiting_flush.pop(outcome.webhook_id, None)
        webhooks = {o.webhook_id: o.webhook for o in outcomes}
        for state in states:
            webhook = webhooks.get(state.webhook_id)
            endpoint = endpoint_fields(webhook) if webhook else {"webhook_id": state.webhook_id}
            if state.disabled_reason is not None:
                self._disabled.add(state.webhook_id)
                log.error(
                    "endpoint.disabled",
                    **endpoint,
                    consecutive_failures=state.consecutive_failures,
                    reason=state.disabled_reason,
                )
            elif state.retry_in_s is not None:
                log.warning(
                    "endpoint.backing_off",
                    **endpoint,
                    consecutive_failures=state.consecutive_failures,
                    retry_in_s=round(state.retry_in_s, 3),
                )
            else:
                log.info("endpoint.recovered", **endpoint)
        # Successes alone change nothing a pass decides on while requests are in flight (their
        # completions woke it as needed); failures and releases do, and so does the last flush
        # when nothing is in flight (burst mode then finds out there is nothing left).
        if states or self._starved or not self._tasks or not all_delivered:
            self._wake.set()

    async def _schedule_once(self) -> bool:
        free = PREFETCH * self._config.concurrency - self.in_flight
        self._starved = free <= 0
        if free <= 0:
            return False
        # Enough endpoints to fill `free` at MIN_SHARE each, besides those busy here (they are
        # among the due ones too).
        limit = -(-free // MIN_SHARE) + len(self._in_flight)
        due = await self._store.due_webhooks(limit)
        ready = [d for d in due if d.deliverable and d.webhook.id not in self._awaiting_flush]
        for d in ready:
            if d.webhook.id in self._disabled:
                self._disabled.discard(d.webhook.id)
                log.info("endpoint.reenabled", **endpoint_fields(d.webhook))
        settlements = [
            Settlement(webhook_id=d.webhook.id, version=d.version, mode="hold")
            for d in due
            if not d.deliverable
        ]
        budgets = self._budgets([d.webhook for d in ready], free)
        claimed = await self._store.claim(budgets, self._config.lease_s) if budgets else {}
        for budget in budgets:
            webhook = budget.webhook
            events = claimed.get(webhook.id, [])
            body_format = profiles.body_format(webhook)
            for batch in batching.split(
                events, webhook.maximum_events, webhook.maximum_size, body_format
            ):
                self._start(webhook, batch)
        versions = {d.webhook.id: d.version for d in ready}
        # Endpoints with rows left go to the back of the line, so those beyond this pass's limit
        # are served next; when every due endpoint fit in this pass there is no line to join.
        rotate = len(due) >= limit
        self._starved = self._starved or rotate
        for b in budgets:
            # Fewer rows than asked for: none left to claim (or the byte budget cut them short,
            # which settle_due finds out cheaply).
            dry = len(claimed.get(b.webhook.id, ())) < b.max_rows
            if dry or rotate:
                settlements.append(
                    Settlement(
                        webhook_id=b.webhook.id,
                        version=versions[b.webhook.id],
                        mode="dry" if dry else "next",
                    )
                )
        await self._store.settle_due(settlements)
        return bool(claimed)

    def _budgets(self, ready: list[Webhook], free: int) -> list[ClaimBudget]:
        """Share the free global slots among ready endpoints, evenly but at least MIN_SHARE
        each (an endpoint's queue length is unknown until claimed), starting at a rotating offset
        so no endpoint is always served last."""
        if not ready:
            return []
        self._rotation = (self._rotation + 1) % len(ready)
        share = max(MIN_SHARE, free // len(ready))
        budgets: list[ClaimBudget] = []
        for webhook in ready[self._rotation :] + ready[: self._rotation]:
            if free <= 0:
                self._starved = True  # due endpoints left for a later pass
                break
            cap = self._capacity(webhook)
            busy = self._in_flight.get(webhook.id, 0)
            slots = min(cap - busy, free, share)
            # Claim for a busy endpoint in bunches, not one query and commit per freed slot.
            if slots <= 0 or (busy and slots < _bunch(cap)):
                continue
            free -= slots
            budgets.append(
                ClaimBudget(
                    webhook=webhook,
                    max_rows=slots * webhook.maximum_events,
                    max_bytes=slots * webhook.maximum_size,
                )
            )
        return budgets

    def _capacity(self, webhook: Webhook) -> int:
        """Batches this endpoint may have claimed here at once: its concurrency times how far
        ahead it is claimed (PREFETCH, deeper when it answers fast); one probe batch when it has
        been failing."""
        if webhook.consecutive_failures:
            return 1
        return self._config.per_endpoint_concurrency * claim_depth(self._pace.get(webhook.id))

    def _start(self, webhook: Webhook, batch: Batch) -> None:
        """Queue a claimed batch in its endpoint's lane, and start one more of the lane's
        senders if it has fewer than the endpoint's concurrency."""
        self._in_flight[webhook.id] = self._in_flight.get(webhook.id, 0) + 1
        lane = self._lanes.get(webhook.id)
        if lane is None:
            lane = self._lanes[webhook.id] = _Lane()
        lane.waiting.append((webhook, batch, time.monotonic()))
        if lane.senders < self._config.per_endpoint_concurrency:
            lane.senders += 1
            task = asyncio.create_task(
                self._run_lane(webhook.id, lane), name=f"deliver-{webhook.id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_lane(self, webhook_id: int, lane: _Lane) -> None:
        """One of an endpoint's concurrency slots: send its waiting batches one after the other,
        in claim order. (A task per batch, each waiting on two semaphores, cost 11 us of CPU per
        batch, measured alone; a lane's loop costs under 1 us.)"""
        try:
            while lane.waiting:
                webhook, batch, claimed_at = lane.waiting.popleft()
                await self._deliver(webhook, batch, claimed_at=claimed_at)
        finally:
            lane.senders -= 1
            if not lane.senders:
                # Cancelled with the others (the drain's grace ran out): what still waits was
                # never sent.
                while lane.waiting:
                    webhook, batch, _ = lane.waiting.popleft()
                    self._finish(webhook, batch, None)
                if self._lanes.get(webhook_id) is lane:
                    del self._lanes[webhook_id]

    def _classify(self, webhook_id: int, started: float, outcome: Outcome) -> Outcome:
        """Mark failures of requests that started before their endpoint was seen failing as
        collateral: they do not add to consecutive_failures."""
        if outcome.success:
            self._failing_since.pop(webhook_id, None)
            return outcome
        since = self._failing_since.get(webhook_id)
        if since is None:
            self._failing_since[webhook_id] = time.monotonic()
            return outcome
        if outcome.gone or outcome.retry_after_s is not None:
            return outcome  # the endpoint said something specific: always acted on
        return outcome if started >= since else replace(outcome, counts=False)

    async def _deliver(self, webhook: Webhook, batch: Batch, *, claimed_at: float) -> None:
        outcome: Outcome | None = None
        try:
            async with self._global:
                if self._may_send(webhook, batch, claimed_at):
                    started = time.monotonic()
                    self._sending += 1
                    try:
                        result = await self._worker.deliver(webhook, batch)
                    finally:
                        self._sending -= 1
                    self._note_pace(webhook.id, time.monotonic() - started)
                    outcome = self._classify(webhook.id, started, result)
        except asyncio.CancelledError:
            log.warning("delivery.interrupted", **endpoint_fields(webhook), events=batch.event_ids)
            raise
        except Exception as exc:
            # A bug of ours, not the receiver's: count it as a failed attempt so the endpoint
            # backs off instead of retrying in a tight loop, and keep the events queued.
            log.exception("delivery.crashed", **endpoint_fields(webhook), events=batch.event_ids)
            outcome = Outcome(
                webhook=webhook,
                event_ids=batch.event_ids,
                success=False,
                sent=True,
                error=f"internal error: {type(exc).__name__}: {exc}",
            )
        finally:
            self._finish(webhook, batch, outcome)

    def _finish(self, webhook: Webhook, batch: Batch, outcome: Outcome | None) -> None:
        """Hand a batch's outcome to the recorder and free its place."""
        if outcome is None:
            # Not attempted (stopping, or the endpoint failed while this batch waited for a
            # slot) or interrupted: release the lease so nothing waits for it to expire, and
            # count no attempt. An interrupted request may have arrived: at-least-once.
            outcome = Outcome(webhook=webhook, event_ids=batch.event_ids, success=False, sent=False)
        elif not outcome.success:
            self._awaiting_flush[webhook.id] = self._awaiting_flush.get(webhook.id, 0) + 1
        self._recorder.add(outcome)
        left = self._in_flight[webhook.id] - 1
        if left:
            self._in_flight[webhook.id] = left
        else:
            del self._in_flight[webhook.id]
            self._pace.pop(webhook.id, None)
        # A pass claims for a busy endpoint only once a bunch of its slots is free: waking one
        # for every finished request mostly ran the due query for nothing.
        cap = self._capacity(webhook)
        if self._starved or not left or cap - left >= _bunch(cap) or not outcome.success:
            self._wake.set()

    def _note_pace(self, webhook_id: int, seconds: float) -> None:
        pace = self._pace.get(webhook_id)
        self._pace[webhook_id] = seconds if pace is None else pace + _PACE_WEIGHT * (seconds - pace)

    def _may_send(self, webhook: Webhook, batch: Batch, claimed_at: float) -> bool:
        """A batch that waited for its slot goes out unless the daemon is stopping, its
        endpoint failed meanwhile, or its lease could run out before the request's timeout (the
        events could then be claimed again and sent twice): it is released instead, with no
        attempt counted, and claimed again with a fresh lease."""
        if self._stopping or self._failed_since(webhook.id, claimed_at):
            return False
        lease_left_s = claimed_at + self._config.lease_s - time.monotonic()
        if lease_left_s < self._config.total_timeout_s + _LEASE_MARGIN_S:
            log.warning(
                "delivery.lease_too_short",
                **endpoint_fields(webhook),
                events=batch.event_ids,
                lease_left_s=round(lease_left_s, 3),
                hint="the batch waited for a slot too long: raise delivery.lease_s",
            )
            return False
        return True

    def _failed_since(self, webhook_id: int, claimed_at: float) -> bool:
        """Did the endpoint fail after this batch was claimed? Then it waits for the backoff
        with the rest of the queue instead of going out behind the failure."""
        since = self._failing_since.get(webhook_id)
        return since is not None and since > claimed_at


# The claim's lease starts in Postgres a round trip before `claimed_at` is read here.
_LEASE_MARGIN_S = 0.1


def claim_depth(pace_s: float | None) -> int:
    """How many rounds of an endpoint's concurrency to claim at once, given its recent seconds
    per request (None: not known yet): the rounds beyond the first drain within AHEAD_S."""
    if pace_s is None:
        return PREFETCH
    depth = 1 + int(AHEAD_S / max(pace_s, 1e-4))
    return min(DEEP_PREFETCH, max(PREFETCH, depth))


def _bunch(capacity: int) -> int:
    """While requests are in flight, wait until this many slots are free before claiming more
    (half the capacity: one concurrency's worth at PREFETCH), so each claim's round trip and
    commit serve that many requests."""
    return max(1, capacity // 2)


@dataclass(eq=False)
class _Lane:
    """An endpoint's claimed batches waiting to be sent, in claim order, and how many tasks send
    them (at most its concurrency)."""

    waiting: deque[tuple[Webhook, Batch, float]] = field(default_factory=deque)
    senders: int = 0
