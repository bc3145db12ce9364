"""Runs the selected probes at once, each under its own timeout and all under one
deadline; whatever a probe does (hang, raise), the answer is a finding."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from service.triage.findings import Finding, one_line, redact
from service.triage.probes.base import Probe, ProbeFailed, Stopwatch

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0


def shown_target(target: Mapping[str, Any]) -> str:
    for key in ("url", "namespace"):
        if target.get(key):
            return redact(str(target[key]))
    if target.get("secret_env"):
        return f"${target['secret_env']}"
    return str(target.get("secret_file") or "")


async def run_one(probes: Mapping[str, Probe], target: Mapping[str, Any]) -> Finding:
    name = str(target.get("probe"))
    timeout = float(target.get("timeout") or DEFAULT_TIMEOUT)
    clock = Stopwatch()

    def failed(summary: str, **details: Any) -> Finding:
        return Finding(name, False, one_line(redact(summary)), shown_target(target), details, clock.ms)

    probe = probes.get(name)
    if probe is None:
        return failed(f"unknown probe {name!r}")
    try:
        return await asyncio.wait_for(probe.run(dict(target)), timeout)
    except TimeoutError:
        return failed(f"timed out after {timeout:g}s", error="timeout")
    except asyncio.CancelledError:
        raise
    except ProbeFailed as exc:
        return failed(str(exc), error="failed")
    except Exception as exc:
        log.info("triage probe %s failed: %s: %s", name, exc.__class__.__name__, exc)
        return failed(f"error: {exc.__class__.__name__}: {exc}", error=exc.__class__.__name__)


async def run_probes(
    probes: Mapping[str, Probe], targets: Sequence[Mapping[str, Any]], deadline: float
) -> list[Finding]:
    """One finding per target, in the targets' order, within ``deadline`` seconds."""
    tasks = [asyncio.ensure_future(run_one(probes, t)) for t in targets]
    if not tasks:
        return []
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    findings = []
    for target, task in zip(targets, tasks, strict=True):
        if task in done:
            findings.append(task.result())
        else:
            findings.append(
                Finding(
                    str(target.get("probe")),
                    False,
                    f"cut off at the triage deadline ({deadline:g}s)",
                    shown_target(target),
                    {"error": "deadline"},
                    int(deadline * 1000),
                )
            )
    return findings
