"""What every durable worker and command handler works with, gathered in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.clock import Clock
from service.config import Settings
from service.emit.cloudevents import EventFactory
from service.observability.metrics import Metrics
from service.ruleset.models import RuleSet
from service.store.store import Store


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Context:
    store: Store
    rules: RuleSet
    events: EventFactory
    clock: Clock
    metrics: Metrics
    settings: Settings
    # Called after something stored new work (events, pages, timers, jobs): wakes the workers.
    on_effects: Callable[[], None] = _nothing
    # Called when a hold may have ended (a silence changed, an inhibiting incident resolved):
    # wakes the noise worker (service/quiet/worker.py).
    wake_noise: Callable[[], None] = _nothing
