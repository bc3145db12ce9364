"""What an action acts on, taken from an alert's labels and nothing else.

A target is refused (never widened) when a label is missing, is not a valid
Kubernetes name, or falls outside the allowlist: the lesson of Google's Diskerase
outage, where an empty target set meant "everything".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from service.models import Target, TargetKind
from service.ruleset.remediation import Allowlist, Policy, TargetField

# DNS-1123 subdomain, the rule for deployment, pod and node names; namespaces are
# DNS-1123 labels. Checked before any value reaches a URL.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Refused(Exception):
    """The action must not run; ``guardrail`` names the check that stopped it. The one
    refusal type: target resolution, actions and every guardrail raise it."""

    def __init__(self, guardrail: str, reason: str) -> None:
        super().__init__(reason)
        self.guardrail = guardrail
        self.reason = reason


def resolve_target(
    kind: TargetKind,
    policy: Policy,
    labels: Mapping[str, str],
    allowlist: Allowlist,
    *,
    with_pod: bool = False,
) -> Target:
    """The target named by ``labels`` under ``policy``'s label mapping, or Refused."""

    def label(field: TargetField, pattern: re.Pattern[str], *, required: bool = True) -> str | None:
        name = policy.label_for(field)
        value = labels.get(name, "")
        if not value:
            if required:
                raise Refused("target", f"alert has no {name!r} label to name the {field}")
            return None
        if len(value) > 253 or not pattern.match(value):
            raise Refused("target", f"label {name}={value!r} is not a valid Kubernetes {field} name")
        return value

    if kind == "node":
        node = label("node", _SUBDOMAIN)
        assert node is not None
        target = Target("node", node)
        if not target.allowed_by(allowlist):
            raise Refused("allowlist", f"node {node!r} is not in the allowlist")
        return target
    namespace = label("namespace", _LABEL)
    deployment = label("deployment", _SUBDOMAIN)
    assert namespace is not None and deployment is not None
    pod = label("pod", _SUBDOMAIN, required=False) if with_pod else None
    target = Target("deployment", deployment, namespace, pod)
    if not target.allowed_by(allowlist):
        raise Refused("allowlist", f"deployment {namespace}/{deployment} is not in the allowlist")
    return target


__all__ = ["Refused", "Target", "TargetKind", "resolve_target"]
