"""triage.yaml: which read-only probes run when an incident opens, and on what.

Each rule's matchers select alerts (classify.yaml's syntax); its probes' targets are Jinja
templates over the alert's ``labels`` and ``annotations``. Secrets (a PostgreSQL DSN, a
Redis URL) are never written here: a probe names the environment variable or file that
holds them, read when the probe runs and never copied into a finding.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from service.ruleset.base import MatcherField, Strict, reject_duplicates
from service.ruleset.durations import Duration
from service.ruleset.templating import TemplateField

ProbeName = Literal["health", "pods", "rollouts", "prometheus", "postgres", "redis"]

# The runbook's "Check error rate" query: 5xx responses per second over five minutes.
RUNBOOK_ERROR_RATE = 'sum(rate(http_requests_total{status=~"5.."}[5m]))'

# What each probe needs (templates) and may take.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "health": ("url",),
    "pods": ("namespace",),
    "rollouts": ("namespace",),
    "prometheus": ("url",),
    "postgres": (),
    "redis": (),
}
_TEMPLATES = ("url", "query", "namespace", "selector", "deployment")


class ProbeSpec(Strict):
    probe: ProbeName
    # Templates over the alert's labels and annotations.
    url: TemplateField | None = None
    query: TemplateField | None = None
    namespace: TemplateField | None = None
    selector: TemplateField | None = None  # a label selector (pods), e.g. app={{ labels.service }}
    deployment: TemplateField | None = None  # rollouts of this deployment only (default: all)
    # Secrets by reference: an environment variable or a file holding the DSN / URL.
    secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_file: str | None = None
    tail_lines: int = Field(default=20, ge=1, le=200)
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _needs(self) -> ProbeSpec:
        missing = [f for f in _REQUIRED[self.probe] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"probe {self.probe} needs {', '.join(missing)}")
        if self.probe in ("postgres", "redis"):
            if (self.secret_env is None) == (self.secret_file is None):
                raise ValueError(f"probe {self.probe} needs one of secret_env or secret_file")
        elif self.secret_env is not None or self.secret_file is not None:
            raise ValueError(f"probe {self.probe} takes no secret")
        return self

    def render(self, context: dict[str, Any], default_timeout: timedelta) -> dict[str, Any]:
        """The probe's target for one alert: plain values (no secret, only where it is)."""
        target: dict[str, Any] = {"probe": self.probe}
        for name in _TEMPLATES:
            template = getattr(self, name)
            if template is not None:
                target[name] = template.render(**context).strip()
        if self.probe == "prometheus" and "query" not in target:
            target["query"] = RUNBOOK_ERROR_RATE
        if self.secret_env is not None:
            target["secret_env"] = self.secret_env
        if self.secret_file is not None:
            target["secret_file"] = self.secret_file
        if self.probe == "pods":
            target["tail_lines"] = self.tail_lines
        target["timeout"] = (self.timeout or default_timeout).total_seconds()
        return target


class TriageRule(Strict):
    name: str = Field(min_length=1)
    matchers: list[MatcherField] = Field(min_length=1)
    probes: list[ProbeSpec] = Field(min_length=1)


class TriageFile(Strict):
    # Each probe's own bound unless it sets ``timeout``.
    timeout: Duration = timedelta(seconds=5)
    rules: list[TriageRule] = []

    @model_validator(mode="after")
    def _unique(self) -> TriageFile:
        reject_duplicates([r.name for r in self.rules], "triage rule defined twice")
        return self

    def targets(self, labels: dict[str, str], annotations: dict[str, str]) -> list[dict[str, Any]]:
        """Every probe of every rule that matches, rendered, without duplicates."""
        context = {"labels": labels, "annotations": annotations}
        out: list[dict[str, Any]] = []
        for rule in self.rules:
            if all(m.matches(labels) for m in rule.matchers):
                for spec in rule.probes:
                    target = spec.render(context, self.timeout)
                    if target not in out:
                        out.append(target)
        return out
