"""Process lifecycle: wire the parts together, run them as named tasks, stop on a signal."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from typing import Protocol

import asyncpg
import structlog

from engine.aio import wait_first
from engine.config import Config
from engine.db.ops import OpsReader
from engine.db.store import SCHEMA_VERSION, EndpointState, Store
from engine.delivery.backoff import Reconnect
from engine.delivery.listener import Listener
from engine.delivery.policy import RetryPolicy
from engine.delivery.recorder import Recorder
from engine.delivery.scheduler import Scheduler
from engine.delivery.sender import Sender
from engine.delivery.worker import Worker
from engine.models import Outcome
from engine.ops.health import Health
from engine.ops.logfields import database_fields
from engine.ops.metrics import QUEUE_COUNT_CAP, Metrics
from engine.ops.pruner import Pruner
from engine.ops.server import OpsServer
from engine.ops.stats import StatsLogger
from engine.ops.vacuum import QueueVacuum
from engine.ops.watchdog import Watchdog, notify, watchdog_timeout_s
from engine.wire.networks import NetworkPolicy

log = structlog.get_logger("engine.daemon")


class SchemaError(RuntimeError):
    pass


class BackgroundLoop(Protocol):
    """A side loop of the daemon (listener, pruner, vacuum): runs until `stop` is set."""

    async def run(self, stop: asyncio.Event) -> None: ...


def schema_problem(version: int | None) -> str | None:
    """Why the daemon cannot run on a database whose schema has `version`, or None."""
    if version is None:
        return (
            "the webhook-engine tables are missing in this database: run `webhook-engine init-db`"
        )
    if version < SCHEMA_VERSION:
        return (
            f"the database schema is version {version}, this daemon needs {SCHEMA_VERSION}: "
            "run `webhook-engine init-db` (safe on a live database)"
        )
    if version > SCHEMA_VERSION:
        return (
            f"the database schema is version {version}, newer than this daemon's "
            f"{SCHEMA_VERSION}: upgrade webhook-engine"
        )
    return None


async def run(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    burst: bool = False,
    handle_signals: bool = True,
) -> int:
    """Deliver until stopped (SIGTERM/SIGINT or `stop`), or with `burst` until the queue has
    nothing ready. Returns the process exit code."""
    stop = stop or asyncio.Event()
    if handle_signals:
        _install_signal_handlers(stop)
    metrics = Metrics(per_tenant=config.metrics.per_tenant) if config.metrics.listen else None
    store = await _open_store(config, stop, metrics)
    if store is None:
        return 0
    problem = schema_problem(await store.schema_version())
    if problem:
        await store.close()
        raise SchemaError(problem)
    policy = RetryPolicy.from_config(config.retry)
    d = config.delivery
    try:
        async with Sender(
            concurrency=d.concurrency,
            connect_timeout_s=d.connect_timeout_s,
            total_timeout_s=d.total_timeout_s,
            response_limit_chars=config.recorder.log_body_limit_chars,
            ca_bundle=d.ca_bundle,
            networks=NetworkPolicy.from_cidrs(d.allow_networks),
        ) as sender:
            worker = Worker(
                sender,
                policy=policy,
                user_agent=d.user_agent,
                log_body_limit_chars=config.recorder.log_body_limit_chars,
                previous_secret_ttl_s=d.previous_secret_ttl_s,
            )
            scheduler: Scheduler
            stats: StatsLogger
            recorder = Recorder(
                store,
                policy=policy,
                flush_interval_s=config.recorder.flush_interval_ms / 1000,
                flush_max_items=config.recorder.flush_max_items,
                on_flush=lambda outcomes, states: _flushed(
                    scheduler, stats, metrics, outcomes, states
                ),
                on_flush_duration=metrics.flushed if metrics else None,
            )
            scheduler = Scheduler(store, worker, recorder, d)
            reader = OpsReader(store.pool)
            stats = StatsLogger(
                config.recorder.summary_interval_s,
                in_flight=lambda: scheduler.sending,
                queue=lambda: reader.queue_depth(QUEUE_COUNT_CAP),
            )
            listener = Listener(config.database.dsn, scheduler.wake)
            loops: dict[str, BackgroundLoop] = {
                "listener": listener,
                "pruner": Pruner(store, config.retention),
                "vacuum": QueueVacuum(store, config.maintenance),
                "stats": stats,
            }
            if config.api.listen:
                # Imported only when served: the API's models and routes cost start-up time and
                # memory a delivery-only daemon does not need.
                from engine.api.server import ApiServer

                loops["api"] = ApiServer(config)
            health = Health(reader, listener_connected=listener.connected.is_set)
            if metrics is not None:
                metrics.watch_in_flight(lambda: scheduler.sending)
                loops["ops"] = OpsServer(config.metrics.listen, metrics, health, reader)
            watchdog_s = watchdog_timeout_s()
            if watchdog_s is not None:
                loops["watchdog"] = Watchdog(watchdog_s, lambda: scheduler.last_pass_at)
            return await _supervise(config, stop, scheduler, recorder, loops, burst, health)
    finally:
        await store.close()
        log.info("daemon.stopped")


def _flushed(
    scheduler: Scheduler,
    stats: StatsLogger,
    metrics: Metrics | None,
    outcomes: Sequence[Outcome],
    states: Sequence[EndpointState],
) -> None:
    """Outcomes are committed: the scheduler may claim again, the summary and metrics count them."""
    scheduler.on_flush(outcomes, states)
    stats.stats.count(outcomes)
    if metrics is not None:
        metrics.count(outcomes)


async def _supervise(
    config: Config,
    stop: asyncio.Event,
    scheduler: Scheduler,
    recorder: Recorder,
    loops: dict[str, BackgroundLoop],
    burst: bool,
    health: Health,
) -> int:
    recorder_task = asyncio.create_task(recorder.run(), name="recorder")
    background = [asyncio.create_task(loop.run(stop), name=name) for name, loop in loops.items()]
    scheduler_task = asyncio.create_task(scheduler.run(stop, burst=burst), name="scheduler")
    side_tasks = (recorder_task, *background)
    health.watch([scheduler_task, *side_tasks])
    log.info("daemon.started", pid=os.getpid(), burst=burst)
    notify("READY=1")
    exit_code = 0
    await asyncio.wait({scheduler_task, *side_tasks}, return_when=asyncio.FIRST_COMPLETED)
    for task in (scheduler_task, *side_tasks):
        if task.done() and not task.cancelled() and task.exception() is not None:
            # A side loop died: stop loudly rather than limp on without it.
            log.error("daemon.task_died", task=task.get_name(), exc_info=task.exception())
            exit_code = 1
    stop.set()
    notify("STOPPING=1")
    log.info("daemon.stopping")
    if not scheduler_task.done():
        await scheduler_task
    await scheduler.drain(config.shutdown.grace_s)
    recorder.close()
    if not recorder_task.done():
        try:
            await asyncio.wait_for(recorder_task, config.shutdown.grace_s)
        except TimeoutError:
            log.error("daemon.unflushed_outcomes", pending=recorder.pending)
            exit_code = 1
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    return exit_code


async def _open_store(config: Config, stop: asyncio.Event, metrics: Metrics | None) -> Store | None:
    """Connect, retrying with backoff while Postgres is unreachable (None if stopped first)."""
    reconnect = Reconnect(initial_s=0.2, max_s=10.0)
    while not stop.is_set():
        try:
            return await Store.open(
                config.database.dsn,
                pool_size=config.database.pool_size,
                synchronous_commit=config.database.synchronous_commit,
                on_error=metrics.database_error if metrics else None,
            )
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as exc:
            delay = reconnect.next_delay_s()
            log.warning(
                "daemon.database_unreachable",
                **database_fields(config.database.dsn),
                error=str(exc),
                retry_in_s=round(delay, 3),
            )
            await wait_first(stop.wait(), within_s=delay)
    return None


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, _on_signal, stop, sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            return


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("daemon.signal", signal=sig.name)
    stop.set()
