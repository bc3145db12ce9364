"""Every pager integration, by the name used in ``INCIDENTD_PAGERS``."""

from __future__ import annotations

from collections.abc import Callable

from service.config import Settings
from service.notify.base import Notifier
from service.notify.console import ConsoleNotifier
from service.notify.opsgenie import OpsgenieNotifier
from service.notify.pagerduty import PagerDutyNotifier
from service.notify.slack import SlackNotifier

NOTIFIERS: dict[str, Callable[[Settings], Notifier]] = {
    "console": ConsoleNotifier.from_settings,
    "opsgenie": OpsgenieNotifier.from_settings,
    "pagerduty": PagerDutyNotifier.from_settings,
    "slack": SlackNotifier.from_settings,
}


def build_notifiers(settings: Settings) -> dict[str, Notifier]:
    unknown = [name for name in settings.pagers if name not in NOTIFIERS]
    if unknown:
        raise ValueError(
            f"unknown pager(s) {', '.join(unknown)} in INCIDENTD_PAGERS; known: {', '.join(NOTIFIERS)}"
        )
    return {name: NOTIFIERS[name](settings) for name in settings.pagers}
