"""Every pager integration, by the name used in ``INCIDENTD_PAGERS``."""

from __future__ import annotations

from collections.abc import Callable

from service.config import Settings
from service.notify.base import Notifier
from service.notify.console import ConsoleNotifier
from service.notify.jira import JiraNotifier
from service.notify.pagerduty import PagerDutyNotifier
from service.notify.slack import SlackNotifier
from service.notify.statuspage import StatuspageNotifier
from service.ruleset.models import FOLLOW_UP_NAMES, PAGER_NAMES, ContactsFile


# Opsgenie's SDK (with urllib3) was a twentieth of every start-up's imports: the two pagers
# on it are imported only where INCIDENTD_PAGERS or a fallback names them.
def _opsgenie(settings: Settings) -> Notifier:
    from service.notify.opsgenie import OpsgenieNotifier

    return OpsgenieNotifier.from_settings(settings)


def _jsm(settings: Settings) -> Notifier:
    from service.notify.jsm import JsmNotifier

    return JsmNotifier.from_settings(settings)


NOTIFIERS: dict[str, Callable[[Settings], Notifier]] = {
    "console": ConsoleNotifier.from_settings,
    "jira": JiraNotifier.from_settings,
    "jsm": _jsm,
    "opsgenie": _opsgenie,
    "pagerduty": PagerDutyNotifier.from_settings,
    "slack": SlackNotifier.from_settings,
    "statuspage": StatuspageNotifier.from_settings,
}

# contacts.yaml's `fallback` is checked against PAGER_NAMES when the rules load, without
# importing the pagers; a pager added here but not there (or the reverse) must not pass
# unnoticed. Not an assert: those vanish under `python -O`.
if set(NOTIFIERS) != {*PAGER_NAMES, *FOLLOW_UP_NAMES}:
    known = sorted({*PAGER_NAMES, *FOLLOW_UP_NAMES})
    raise RuntimeError(f"NOTIFIERS {sorted(NOTIFIERS)} and the ruleset's pager names {known} differ")


def build_notifiers(settings: Settings) -> dict[str, Notifier]:
    unknown = [name for name in settings.pagers if name not in NOTIFIERS]
    if unknown:
        raise ValueError(
            f"unknown pager(s) {', '.join(unknown)} in INCIDENTD_PAGERS; known: {', '.join(NOTIFIERS)}"
        )
    return {name: NOTIFIERS[name](settings) for name in settings.pagers}


def build_fallbacks(
    settings: Settings, contacts: ContactsFile, notifiers: dict[str, Notifier]
) -> dict[str, Notifier]:
    """The notifiers for the fallback pagers contacts.yaml names that ``notifiers`` (the
    INCIDENTD_PAGERS ones) lack. Built at start, so a fallback without its settings (say
    INCIDENTD_PAGERDUTY_ROUTING_KEY) stops the service there, not at the moment a page
    needs it."""
    return {
        name: NOTIFIERS[name](settings)
        for name in sorted(contacts.fallback_pagers())
        if name not in notifiers and name in NOTIFIERS
    }
