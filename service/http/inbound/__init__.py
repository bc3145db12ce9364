"""Acknowledgements coming back from where people press them: Slack's buttons, PagerDuty
and Opsgenie. Each endpoint is authenticated by its sender's own signature or secret, not
by the bearer token, and applies the same ack/resolve commands as the incident API."""

from __future__ import annotations

from starlette.routing import Route

from service.http.inbound import opsgenie, pagerduty, slack
from service.http.inbound.common import Inbound, InboundSecrets

# Exempt from the bearer check: each checks its own signature.
PATHS = frozenset({slack.PATH, pagerduty.PATH, opsgenie.PATH})


def inbound_routes(inbound: Inbound) -> list[Route]:
    return [slack.route(inbound), pagerduty.route(inbound), opsgenie.route(inbound)]


__all__ = ["PATHS", "Inbound", "InboundSecrets", "inbound_routes"]
