"""The report: the header, one section per phase, the checks and the one-line JSON summary."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from urllib.parse import urlsplit

import orjson

from bench.database import EngineRecords, server_settings
from bench.phases import LatencyResult, RawResult, ThroughputResult
from bench.procfs import CpuUse, cpu_model
from bench.tally import Tally, percentile


async def machine_facts(dsn: str) -> dict[str, str]:
    pg = await server_settings(dsn)
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "postgres": f"{pg.version} (server fsync={pg.fsync}, "
        f"synchronous_commit={pg.synchronous_commit})",
    }


def print_run(title: str, facts: dict[str, str], args: argparse.Namespace) -> None:
    """The lines every bench starts with: what ran, with which settings, on what machine."""
    print(title)
    print(f"command            {shlex.join([sys.executable, *sys.argv])}")
    settings = {k: v for k, v in vars(args).items() if k != "dsn"}
    print(f"settings           {' '.join(f'{k}={v}' for k, v in settings.items())}")
    for name, value in facts.items():
        print(f"{name:<18} {value}")


def print_header(
    facts: dict[str, str], args: argparse.Namespace, dsn: str, receiver_url: str
) -> None:
    where = urlsplit(dsn)
    print_run("webhook-engine delivery bench", facts, args)
    print(f"database           {where.path.lstrip('/')} on {where.hostname or 'local socket'}")
    print(f"receiver           {receiver_url}/hook (separate process)", flush=True)


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def print_raw(r: RawResult) -> None:
    print(f"requests           {r.requests} at concurrency {r.concurrency}, non-200: {r.failures}")
    print(f"wall time          {r.seconds:.2f} s")
    print(f"requests/s         {r.rps:,.0f}")
    print(f"cpu                client {r.client_cpu_s:.2f} s, receiver {r.cpu.receiver_s:.2f} s")
    print_machine_busy(r.cpu)
    print(
        f"other processes    {max(r.other_cpus, 0):.2f} CPUs busy meanwhile (noise if well above 0)"
    )
    print(f"receiver saw       {r.seen.distinct} distinct ids, {r.seen.duplicates} duplicates")


def print_throughput(r: ThroughputResult, events: int) -> None:
    s = r.seen
    print(f"bulk insert        {events} events in {r.insert_s:.2f} s")
    print(f"first received     {s.first_at - r.started_at:.2f} s after daemon start")
    print(f"last received      {r.seconds:.2f} s after daemon start")
    print(f"daemon exited      {r.exited_at - r.started_at:.2f} s after start, code {r.exit_code}")
    print(f"events/s           {r.eps:,.0f} (start to last), {r.steady_eps:,.0f} (first to last)")
    print(
        f"requests           {r.posts} (events per request {r.seen.distinct / max(r.posts, 1):.1f})"
    )
    print(f"received           {s.distinct}/{s.expected} distinct, {s.duplicates} duplicates,")
    print(f"                   {s.missing} missing, {s.unexpected} unexpected")
    print(f"peak RSS           {r.peak_rss_kib / 1024:.1f} MiB")
    print(f"cpu                daemon(s) {r.daemon_cpu_s:.2f} s, receiver {r.cpu.receiver_s:.2f} s")
    print_machine_busy(r.cpu)
    print(f"pg transactions    {r.xact_commits} committed in the bench database during the phase")
    print_engine_records(r.engine, expected_logs=r.posts)
    print("\n".join(r.log), flush=True)


def print_machine_busy(cpu: CpuUse) -> None:
    n = len(os.sched_getaffinity(0))
    busy = cpu.machine_busy
    print(
        f"machine            {busy:.0%} busy over all CPUs (= {busy * n:.2f} of {n} CPUs), "
        f"{cpu.machine_steal:.0%} stolen"
    )


def print_engine_records(e: EngineRecords, expected_logs: int) -> None:
    print(f"webhook_queue      {e.queue_rows} rows (expected 0)")
    print(f"webhook_logs       {e.log_rows} rows (expected {expected_logs})")
    print(f"  of which failed  {e.failed_log_rows}")


def print_latency(r: LatencyResult, expected_logs: int) -> None:
    s = r.seen
    print(f"daemon ready       {r.ready_s:.2f} s after start (warm-up event received)")
    print(
        f"inserted           {r.events} at {r.rate:g}/s target, {r.events / r.insert_s:,.0f}/s done"
    )
    print(f"received           {s.distinct}/{s.expected} distinct, {s.duplicates} duplicates,")
    print(f"                   {s.missing} missing, {s.unexpected} unexpected")
    print(
        f"commit->receive    p50 {r.ms(50):.1f} ms, p90 {r.ms(90):.1f} ms, "
        f"p99 {r.ms(99):.1f} ms, max {r.ms(100):.1f} ms (min {r.ms(0):.1f} ms)"
    )
    rtt = r.insert_rtts_ms
    print(
        f"insert round trip  p50 {percentile(rtt, 50):.1f} ms, p99 {percentile(rtt, 99):.1f} ms, "
        f"max {percentile(rtt, 100):.1f} ms (the commit happens inside it)"
    )
    if early := sum(ms < 0 for ms in r.latencies_ms):
        # The receiver's clock read came before the driver's after-commit read: the driver
        # was not scheduled between the commit and its time.time(); a loaded machine.
        print(f"note               {early} event(s) received before the driver noted the commit")
    print(f"SIGTERM            exit code {r.exit_code} after {r.stop_s:.2f} s")
    print(f"peak RSS           {r.peak_rss_kib / 1024:.1f} MiB")
    print_engine_records(r.engine, expected_logs)
    print("\n".join(r.log), flush=True)


def summary(
    facts: dict[str, str],
    args: argparse.Namespace,
    raw: RawResult,
    thr: ThroughputResult,
    lat: LatencyResult,
) -> dict[str, object]:
    return {
        "nproc": int(facts["nproc"]),
        "events": args.events,
        "concurrency": args.concurrency,
        "per_endpoint": args.per_endpoint,
        "endpoints": args.endpoints,
        "daemons": args.daemons,
        "maximum_events": args.maximum_events,
        "synchronous_commit": args.synchronous_commit,
        "raw_rps": round(raw.rps, 1),
        "raw_other_cpus": round(max(raw.other_cpus, 0), 2),
        "engine_eps": round(thr.eps, 1),
        "engine_steady_eps": round(thr.steady_eps, 1),
        "ratio": round(thr.eps / raw.rps, 3),
        "duplicates": thr.seen.duplicates + lat.seen.duplicates,
        "missing": thr.seen.missing + lat.seen.missing,
        "peak_rss_mib": round(thr.peak_rss_kib / 1024, 1),
        "burst_exit_code": thr.exit_code,
        "queue_rows": thr.engine.queue_rows,
        "log_rows": thr.engine.log_rows,
        "latency_events": lat.events,
        "rate": args.rate,
        "latency_ms": {f"p{p}": round(lat.ms(p), 1) for p in (50, 90, 99)}
        | {"max": round(lat.ms(100), 1)},
        "sigterm_exit_code": lat.exit_code,
    }


def print_closing(
    facts: dict[str, str],
    args: argparse.Namespace,
    raw: RawResult,
    thr: ThroughputResult,
    lat: LatencyResult,
) -> list[str]:
    """The ratio, the checks and the one-line JSON summary; returns the failed checks."""
    ratio = thr.eps / raw.rps
    print(f"\n== engine events/s / raw requests/s = {thr.eps:,.0f} / {raw.rps:,.0f} = {ratio:.2f}")
    failed = failed_checks(args, raw, thr, lat)
    print(f"checks             {'FAILED: ' + '; '.join(failed) if failed else 'all passed'}")
    line = orjson.dumps(summary(facts, args, raw, thr, lat) | {"failed_checks": failed})
    print(line.decode(), flush=True)
    return failed


def failed_checks(
    args: argparse.Namespace, raw: RawResult, thr: ThroughputResult, lat: LatencyResult
) -> list[str]:
    """Nothing fails in this setup, so every event must arrive exactly once."""
    checks = {
        "raw: every request answered 200": raw.failures == 0,
        "throughput: every event received once": _exactly_once(thr.seen),
        "throughput: burst daemon exited 0": thr.exit_code == 0,
        "throughput: webhook_queue empty": thr.engine.queue_rows == 0,
        "throughput: one webhook_logs row per request": thr.engine.log_rows == thr.posts,
        "latency: every event received once": _exactly_once(lat.seen),
        "latency: daemon exited 0 on SIGTERM": lat.exit_code == 0,
        "latency: webhook_queue empty": lat.engine.queue_rows == 0,
    }
    return [name for name, ok in checks.items() if not ok]


def _exactly_once(seen: Tally) -> bool:
    return seen.distinct == seen.expected and seen.duplicates == 0 and seen.unexpected == 0
