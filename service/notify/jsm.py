"""Jira Service Management Ops (Opsgenie's successor: Opsgenie stops on 2027-04-05).

JSM serves Opsgenie's Alert API unchanged, paths, payloads, ``GenieKey`` auth and
``identifierType=alias`` included, as its integration events API under
``https://api.atlassian.com/jsm/ops/integration`` (``/v2/alerts``, ``/v2/alerts/{alias}/close``),
with the key of an API integration made in JSM (Operations > Integrations > API). So this
pager is :class:`OpsgenieNotifier` under that base URL, with settings of its own.

Not JSM's REST API (``/jsm/ops/api/{cloudId}/v1/alerts``, Basic auth of email and API
token): it acknowledges and closes an alert by its JSM id only, not by alias
(JSDCLOUD-14179), so a close would first have to look the alert up; the integration
API takes the alias incidentd pages with, as Opsgenie does.
"""

from __future__ import annotations

from service.config import Settings
from service.notify.opsgenie import OpsgenieNotifier


class JsmNotifier(OpsgenieNotifier):
    name = "jsm"
    label = "JSM"

    @classmethod
    def from_settings(cls, settings: Settings) -> JsmNotifier:
        if settings.jsm_api_key is None:
            raise ValueError("pager 'jsm' needs INCIDENTD_JSM_API_KEY or INCIDENTD_JSM_API_KEY_FILE")
        return cls(
            settings.jsm_api_key.get_secret_value(), settings.jsm_api_url, settings.jsm_timeout_seconds
        )
