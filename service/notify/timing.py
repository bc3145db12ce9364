"""Every pager call timed, by integration and outcome (``incidentd_pager_request_duration_seconds``)."""

from __future__ import annotations

import time

from service.notify.base import Notifier, PageRequest
from service.observability.metrics import Metrics


async def timed_send(
    metrics: Metrics, integration: str, notifier: Notifier, request: PageRequest
) -> str | None:
    """``notifier.send(request)``, timed by wall time (the pager's latency, not the scenario's
    clock). A call cut short by a shutdown (cancelled) is no answer of the pager's: not observed."""
    started = time.perf_counter()
    try:
        reference = await notifier.send(request)
    except Exception:
        metrics.pager_duration.labels(integration, "failed").observe(time.perf_counter() - started)
        raise
    metrics.pager_duration.labels(integration, "sent").observe(time.perf_counter() - started)
    return reference
