"""Benchmark: raw aiokafka floor, the service pipeline on an alert storm, webhook->page latency.

    .venv/bin/python -m bench.run [--alerts 20000] [--webhooks 200] ...

Everything runs in this process tree: the bundled broker (Tansu) on a free loopback
port, a real ``service.runtime.Runtime`` with SQLite state in a temporary directory,
and a recording pager. Every flag has a ``BENCH_*`` environment variable.
Results are printed as a table and written as JSON (default ``var/bench.json``).

Parts (``--only``, default ``abcde``): (a) the raw aiokafka floor, (b) the service's consumer
on a storm, (c) webhook -> page latency, (d) 1 vs 2 replicas and a kill -9 (PostgreSQL),
(e) issue #13's figures over HTTP, each against an anchor measured in the same run
(``bench/storm_http.py``: a webhook storm vs the raw loop, its 202 rate vs the real
Alertmanager's ingest, SEV-1 pages during the storm, page latency under repeats, RSS growth,
``incidentd run`` start-up). (e) takes a few minutes with the defaults (the storm is waited
for up to ``--storm-timeout``, then listed as a PROBLEM); a quick look at it alone:

    .venv/bin/python -m bench.run --only e --storm-alerts 5000 --storm-groups 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.common import ROOT, RULES, Setup, alert_storm, free_port, quiet_logging
from bench.latency import LatencyResult, run_latency
from bench.raw import RawResult, run_raw
from bench.replicas import ReplicaResult, run_replicas
from bench.storm import StormResult, run_storm
from bench.storm_http import STARTUPS, StormHttpParams, StormHttpResult, run_storm_http
from service import allocator
from service.embedded.broker import embedded_broker
from service.ruleset import load_rules

PROFILE = ROOT / "var" / "bench-storm.prof"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=(__doc__ or "").split("\n\n")[0])

    def opt(flag: str, kind: type, default: str, text: str) -> None:
        env = "BENCH_" + flag.lstrip("-").replace("-", "_").upper()
        p.add_argument(flag, type=kind, default=kind(_env(env, default)), help=f"{text} [{env}, {default}]")

    opt("--alerts", int, "20000", "alert records in the storm (b)")
    opt("--raw-messages", int, "0", "records for the raw baseline (a); 0 = as many as --alerts")
    opt("--distinct", int, "200", "distinct alerts in the storm")
    opt("--groups", int, "50", "incident groups in the storm")
    opt("--webhooks", int, "200", "webhooks in the latency run (c), each opening an incident")
    opt("--rate", float, "20", "webhooks/s offered in (c), below saturation; 0 = one after the other")
    opt("--partitions", int, "3", "partitions of every topic")
    opt("--max-batch", int, "1000", "records per poll, raw loop and service")
    opt("--repeat", int, "3", "runs of (a) and (b), alternating; the median is reported")
    opt("--storm-alerts", int, "100000", "alerts posted to the webhook in (e)")
    opt("--storm-groups", int, "1000", "incident groups of the (e) storm")
    opt("--storm-batch", int, "100", "alerts per webhook body in (e), as Alertmanager batches them")
    opt("--storm-inflight", int, "8", "webhook requests in flight in (e), to incidentd and Alertmanager")
    opt("--storm-timeout", float, "180", "seconds (e) waits for its storm to be paged and stored")
    opt("--sev1-interval", float, "0.25", "seconds between the new SEV-1s posted during the (e) storm")
    opt("--repeats-seconds", float, "10", "how long (e4) runs")
    opt("--repeats-rate", float, "1000", "repeated alerts/s in (e4)")
    opt("--repeats-open", int, "50", "open incidents whose alerts repeat in (e4)")
    opt("--repeats-new-rate", float, "10", "new incidents/s in (e4)")
    opt(
        "--only",
        str,
        "abcde",
        "which parts to run: any of a, b, c, d (1 vs 2 replicas, kill -9), e (issue #13 over HTTP)",
    )
    opt("--json", Path, str(ROOT / "var" / "bench.json"), "where to write the results")
    p.add_argument(
        "--profile",
        action="store_true",
        default=bool(os.environ.get("BENCH_PROFILE")),
        help="cProfile the first (b) into var/bench-storm.prof, print the top functions [BENCH_PROFILE]",
    )
    args = p.parse_args(argv)
    if not args.only or not set(args.only) <= set("abcde"):
        p.error("--only takes letters among a, b, c, d, e")
    if args.repeat < 1 or args.alerts < 1 or args.webhooks < 1:
        p.error("--repeat, --alerts and --webhooks must be at least 1")
    if (
        min(args.storm_alerts, args.storm_groups, args.storm_batch, args.storm_inflight, args.repeats_open)
        < 1
    ):
        p.error(
            "--storm-alerts, --storm-groups, --storm-batch, --storm-inflight and --repeats-open "
            "must be at least 1"
        )
    if min(args.sev1_interval, args.repeats_seconds, args.repeats_rate, args.repeats_new_rate) <= 0:
        p.error("--sev1-interval, --repeats-seconds, --repeats-rate and --repeats-new-rate must be positive")
    return args


async def bench(args: argparse.Namespace) -> Results:
    rules = load_rules(RULES)
    storm = alert_storm(args.alerts, args.distinct, args.groups, rules.grouping.group_by)
    raw_storm = storm
    if args.raw_messages and args.raw_messages != args.alerts:
        raw_storm = alert_storm(args.raw_messages, args.distinct, args.groups, rules.grouping.group_by)
    results = Results()
    bootstrap = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="incidentd-bench-") as tmpdir:
        tmp = Path(tmpdir)
        setup = Setup(bootstrap, tmp, rules, args.partitions, args.max_batch)
        async with embedded_broker(bootstrap, tmp / "broker.log"):
            # (a) and (b) alternate, so that whatever else the machine does hits both alike.
            for i in range(args.repeat):
                if "a" in args.only:
                    results.raw.append(await run_raw(bootstrap, raw_storm, args.partitions, args.max_batch))
                if "b" in args.only:
                    profile_to = PROFILE if args.profile and i == 0 else None
                    result = await run_storm(setup, storm, profile_to=profile_to)
                    results.storm.append(result)
            if "c" in args.only:
                results.latency = await run_latency(setup, args.webhooks, args.rate)
            if "d" in args.only:
                results.replicas = await run_replicas(setup, storm)
            if "e" in args.only:
                results.storm_http = await run_storm_http(setup, storm_http_params(args))
    return results


def storm_http_params(args: argparse.Namespace) -> StormHttpParams:
    return StormHttpParams(
        alerts=args.storm_alerts,
        groups=args.storm_groups,
        batch=args.storm_batch,
        inflight=args.storm_inflight,
        sev1_interval=args.sev1_interval,
        repeats_seconds=args.repeats_seconds,
        repeats_rate=args.repeats_rate,
        repeats_open=args.repeats_open,
        repeats_new_rate=args.repeats_new_rate,
        timeout=args.storm_timeout,
    )


@dataclass
class Results:
    raw: list[RawResult] = field(default_factory=list)
    storm: list[StormResult] = field(default_factory=list)
    latency: LatencyResult | None = None
    replicas: ReplicaResult | None = None
    storm_http: StormHttpResult | None = None


def _num(value: float) -> str:
    return f"{value:,.0f}"


T = TypeVar("T", RawResult, StormResult)


def _median_run(runs: list[T]) -> T:
    """The run whose rate is the median (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r.rate)[(len(runs) - 1) // 2]


def _spread(runs: list[T]) -> str:
    if len(runs) < 2:
        return ""
    rates = [r.rate for r in runs]
    return f" (median of {len(runs)}: {_num(min(rates))}-{_num(max(rates))})"


def report(args: argparse.Namespace, results: Results, wall: float) -> dict[str, Any]:
    rows: list[tuple[str, str, str]] = []
    out: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    raw = _median_run(results.raw) if results.raw else None
    storm = _median_run(results.storm) if results.storm else None
    if raw:
        out["raw"] = {"messages_per_s": round(raw.rate, 1), "runs": [r.as_json() for r in results.raw]}
        rows.append(
            (
                "(a) raw aiokafka: consume, parse, produce, commit/batch",
                f"{_num(raw.rate)} msg/s",
                f"{raw.messages} msgs, {raw.batches} batches, {raw.seconds:.2f} s{_spread(results.raw)}",
            )
        )
    if storm:
        out["storm"] = {"alerts_per_s": round(storm.rate, 1), "runs": [r.as_json() for r in results.storm]}
        c = storm.counters
        rows.append(
            (
                "(b) service pipeline, alert storm",
                f"{_num(storm.rate)} alerts/s",
                f"{storm.alerts} alerts ({storm.distinct} distinct, {storm.groups} groups), "
                f"{storm.batches} batches, {storm.seconds:.2f} s to commit{_spread(results.storm)}",
            )
        )
        rows.append(
            (
                "    checks",
                "FAILED" if any(r.problems for r in results.storm) else "ok",
                f"dedup {c['alerts_deduplicated']:.0f}, opened {c['incidents_opened']:.0f}, "
                f"pages {c['pages_sent']:.0f}, events {c['events_published']:.0f}, "
                f"last page {storm.first_to_last_page_seconds:.2f} s after first record",
            )
        )
        stored = sorted(r.alerts / r.stored_seconds for r in results.storm if r.stored_seconds > 0)
        lags = [r.seconds - r.stored_seconds for r in results.storm]
        if stored:
            rows.append(
                (
                    "    first record -> last batch stored",
                    f"{_num(stored[len(stored) // 2])} alerts/s",
                    # On Tansu a consumer group still joining (incidents.commands, at start-up)
                    # holds back the other group's offset commits for seconds.
                    f"then the offset commit: {', '.join(f'{x:.2f}' for x in lags)} s per run",
                )
            )
        us = {k.removesuffix("Stage"): v / storm.alerts * 1e6 for k, v in storm.stage_seconds.items()}
        outside = storm.seconds - sum(storm.stage_seconds.values())
        rows.append(
            (
                "    time per alert in each stage",
                f"{sum(us.values()):.0f} us",
                ", ".join(f"{k} {v:.0f}" for k, v in us.items())
                + f" us; outside the stages {outside / storm.alerts * 1e6:.0f} us",
            )
        )
    if raw and storm and raw.rate > 0:
        ratio = storm.rate / raw.rate
        out["ratio_b_over_a"] = round(ratio, 3)
        pairs = [b.rate / a.rate for a, b in zip(results.raw, results.storm, strict=False) if a.rate > 0]
        out["ratio_b_over_a_per_run"] = [round(x, 3) for x in pairs]
        rows.append(("(b)/(a)", f"{ratio:.2f}", "median over median"))
    lat = results.latency
    if lat:
        out["latency"] = lat.as_json()
        offered = f"{lat.rate:g}/s" if lat.rate > 0 else "serial"
        pm, am = lat.page_ms, lat.accept_ms
        tp, ts, tg = lat.to_poll_ms, lat.to_store_ms, lat.to_page_ms
        rows += [
            (
                f"(c) webhook 202 -> page sent ({lat.webhooks} @ {offered})",
                f"p50 {pm.get('p50', 0):.1f} ms",
                f"p99 {pm.get('p99', 0):.1f} ms, max {pm.get('max', 0):.1f} ms",
            ),
            (
                "    202 -> polled | -> stored | -> paged",
                f"p50 {tp.get('p50', 0):.0f}|{ts.get('p50', 0):.0f}|{tg.get('p50', 0):.0f} ms",
                f"p99 {tp.get('p99', 0):.0f}|{ts.get('p99', 0):.0f}|{tg.get('p99', 0):.0f} ms",
            ),
            (
                "    POST -> 202 (Kafka-acknowledged)",
                f"p50 {am.get('p50', 0):.1f} ms",
                f"p99 {am.get('p99', 0):.1f} ms, max {am.get('max', 0):.1f} ms",
            ),
        ]
    rep = results.replicas
    if rep:
        out["replicas"] = rep.as_json()
        fo = rep.failover_page_ms
        rows += [
            (
                "(d) 1 vs 2 replicas on PostgreSQL, same storm",
                f"{rep.ratio:.2f}x",
                f"{_num(rep.one_replica_alerts_per_s)} vs {_num(rep.two_replicas_alerts_per_s)} alerts/s "
                "(groups joined; first record -> all committed)",
            ),
            (
                "(d) kill -9 of a replica -> new incidents paged",
                f"p50 {fo.get('p50', 0):.0f} ms",
                f"p99 {fo.get('p99', 0):.0f} ms, max {fo.get('max', 0):.0f} ms (webhook 202 -> page.sent)",
            ),
        ]
    sh = results.storm_http
    if sh:
        out["storm_http"] = sh.as_json()
        rows += storm_http_rows(sh)
    problems = [p for r in results.storm for p in r.problems] + (lat.problems if lat else [])
    problems += rep.problems if rep else []
    problems += sh.problems if sh else []
    out["problems"] = problems
    out["wall_seconds"] = round(wall, 1)

    w0 = max((len(r[0]) for r in rows), default=0)
    w1 = max((len(r[1]) for r in rows), default=0)
    print(f"\nincidentd bench — {os.cpu_count()} CPUs, Python {platform.python_version()}, embedded Tansu")
    print("-" * (w0 + w1 + 60))
    for name, value, detail in rows:
        print(f"{name:<{w0}}  {value:>{w1}}  {detail}")
    print("-" * (w0 + w1 + 60))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"total {wall:.1f} s; results in {args.json}")
    return out


def _lat(s: dict[str, float]) -> tuple[str, str]:
    if not s.get("count"):
        return "-", "none measured"
    return (
        f"p50 {s['p50']:.0f} ms",
        f"p99 {s['p99']:.0f} ms, max {s['max']:.0f} ms, {s['count']:.0f} measured",
    )


def _ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}x" if y > 0 else "-"


def _raw_runs(sh: StormHttpResult) -> str:
    """Each run of (e1)'s anchor: the two show how far the machine's speed moved meanwhile."""
    runs = [(when, r) for when, r in (("before", sh.raw_before), ("after", sh.raw_after)) if r is not None]
    return ", ".join(f"{when} {_num(r.rate)} msg/s in {r.seconds:.2f} s" for when, r in runs) or "no run"


def storm_http_rows(sh: StormHttpResult) -> list[tuple[str, str, str]]:
    rows = [
        (
            f"(e1) webhook storm: {sh.alerts} alerts, {sh.groups} groups, {sh.bodies} bodies",
            f"{sh.paged_seconds:.2f} s",
            "first POST -> last group's first page",
        ),
        (
            "    answered 202",
            f"{_num(sh.accept_rate)} alerts/s",
            f"{sh.accepted_alerts} in {sh.accept_seconds:.2f} s; "
            f"POST -> 202 p50 {sh.accept_ms.get('p50', 0):.0f} ms, p99 {sh.accept_ms.get('p99', 0):.0f} ms",
        ),
        (
            "    end to end (first POST -> last first page)",
            f"{_num(sh.e2e_rate)} alerts/s",
            f"every storm record stored {sh.stored_seconds:.2f} s after the first POST",
        ),
        (
            "    every event stored by then, published",
            f"{sh.events_seconds:.2f} s",
            "first POST -> the outbox holds none of them; events wait while a backlog is paged "
            "(INCIDENTD_EVENTS_MAX_DELAY_SECONDS)",
        ),
        (
            "    anchor: raw aiokafka loop, same record count",
            f"{_num(sh.raw_msgs_per_s)} msg/s",
            f"{_raw_runs(sh)}; end to end / raw = {_ratio(sh.e2e_rate, sh.raw_msgs_per_s)}",
        ),
        (
            "    consumer's wall time per stage during (e1)",
            f"{sum(sh.stage_seconds.values()):.1f} s",
            f"{sh.batches} batches; " + ", ".join(f"{k} {v:.1f}" for k, v in sh.stage_seconds.items()) + " s",
        ),
        (
            "    service's event-loop thread: CPU during (e1)",
            f"{sh.loop_cpu_seconds:.1f} s",
            "from the load's start to its last SEV-1 paged; against (e1)'s wall time: how busy the loop was",
        ),
        (
            "    Python's cyclic collector during (e1)",
            f"{sum(sh.collector_seconds):.2f} s",
            ", ".join(
                f"gen{g} {runs}x {seconds:.2f} s"
                for g, (runs, seconds) in enumerate(zip(sh.collector_runs, sh.collector_seconds, strict=True))
            ),
        ),
        (
            "(e2) 202 rate / Alertmanager's POST /api/v2/alerts",
            _ratio(sh.accept_rate, sh.alertmanager_rate),
            f"{_num(sh.accept_rate)} vs {_num(sh.alertmanager_rate)} alerts/s "
            f"(Alertmanager: {sh.alertmanager_alerts} in {sh.alertmanager_seconds:.2f} s; target >= 0.6x)",
        ),
        ("(e3) SEV-1 during the storm: 202 -> first page", *_lat(sh.sev1_ms)),
        ("    of which 202 -> stored", *_lat(sh.sev1_stored_ms)),
        ("    of which 202 -> polled (its batch enters the pipeline)", *_lat(sh.sev1_polled_ms)),
        (
            f"(e4) new incidents under {_num(sh.repeats_alerts_per_s)} repeated alerts/s",
            *_lat(sh.repeats_new_ms),
        ),
        ("    of which 202 -> stored", *_lat(sh.repeats_new_stored_ms)),
        ("    of which 202 -> polled (its batch enters the pipeline)", *_lat(sh.repeats_new_polled_ms)),
        (
            "(e5) RSS during the storm: peak - idle",
            f"{sh.rss_peak_mib - sh.rss_idle_mib:+.0f} MiB",
            f"idle {sh.rss_idle_mib:.0f} MiB, peak {sh.rss_peak_mib:.0f} MiB (VmHWM {sh.hwm_mib:.0f}); "
            "target <= +64 MiB",
        ),
    ]
    for label, s in zip(STARTUPS, sh.startup, strict=False):
        rows.append(
            (
                f"(e6) incidentd run -> consuming ({label})",
                f"{s['consuming_s']:.2f} s",
                f"/readyz {s['readyz_s']:.2f} s, alerts partitions assigned {s['assigned_s']:.2f} s, "
                f"first webhook's incident.opened {s['first_incident_opened_s']:.2f} s (target < 2 s); "
                f"first log line {s.get('first_log_line_s', 0):.2f} s, Kafka client started "
                f"{s.get('kafka_started_s', 0):.2f} s, commands partitions assigned "
                f"{s.get('commands_assigned_s', 0):.2f} s",
            )
        )
    return rows


def print_profile(path: Path, top: int = 30) -> None:
    print(f"\ncProfile of (b), event-loop thread only ({path}); by own time:")
    pstats.Stats(str(path)).strip_dirs().sort_stats("tottime").print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    # The service runs in this process: its allocator and collector as `incidentd run` sets them.
    allocator.at_start()
    start = time.perf_counter()
    results = asyncio.run(bench(args))
    out = report(args, results, time.perf_counter() - start)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    if args.profile and results.storm:
        print_profile(PROFILE)
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
