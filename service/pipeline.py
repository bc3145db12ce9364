"""The pipeline, assembled in one place (Alertmanager's notify pipeline is the model).

    parse -> classify -> heartbeats -> correlate -> quiet -> escalate -> triage -> remediate -> persist

Each stage takes the batch and returns it (``service/batch.py``); a batch is one
Kafka poll, one store transaction and one offset commit. Only the runtime and the
bench import this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.batch import DeadLetter, Pipeline, Stage
from service.classify.classifier import Classifier
from service.classify.stage import ClassifyStage
from service.context import Context
from service.correlate.correlator import Correlator
from service.correlate.stage import CorrelateStage
from service.escalate.policy import EscalationPolicy
from service.escalate.stage import EscalateStage
from service.ingest.seal import Seal
from service.ingest.stage import ParseStage
from service.persist.stage import DeadLetterSink, PageHandoff, PersistStage
from service.quiet.heartbeats import HeartbeatStage
from service.quiet.stage import QuietStage
from service.remediate.stage import RemediateStage
from service.ruleset.remediation import Mode
from service.triage.stage import TriageStage


@dataclass(frozen=True, slots=True)
class Paging:
    """``pagers``: the page jobs each page intent becomes; ``fallbacks``: who else gets each
    close (in case a page went out through them); ``handoff``: the page worker that takes
    the jobs as they are stored."""

    pagers: Sequence[str]
    fallbacks: Sequence[str] = ()
    handoff: PageHandoff | None = None


def build_pipeline(
    ctx: Context,
    paging: Paging,
    dead_letters: DeadLetterSink,
    remediation_mode: Mode = "dry-run",
    seal: Seal | None = None,
) -> Pipeline:
    """``remediation_mode``: the ceiling over remediation.yaml's modes ("off" without a
    Kubernetes API). ``seal``: the intake's, whose records are read without a second
    validation."""
    rules, store, classifier = ctx.rules, ctx.store, Classifier(ctx.rules)
    return Pipeline(
        [
            ParseStage(seal),
            ClassifyStage(classifier),
            HeartbeatStage(rules.noise, store.heartbeats),
            CorrelateStage(store.incidents, Correlator(rules, describe=classifier.describe), rules),
            QuietStage(rules, store),
            EscalateStage(EscalationPolicy(rules), rules),
            *_tail(ctx, paging, dead_letters, remediation_mode),
        ]
    )


def build_lift_pipeline(ctx: Context, paging: Paging, remediation_mode: Mode = "dry-run") -> Pipeline:
    """What the noise worker runs on an incident whose hold began or lifted without an alert:
    the lift's triage and remediation are planned as on opening, then everything is stored."""
    return Pipeline(_tail(ctx, paging, _no_dead_letters, remediation_mode))


def _tail(ctx: Context, paging: Paging, dead_letters: DeadLetterSink, remediation_mode: Mode) -> list[Stage]:
    return [
        # Only plans the probes and their timer: nothing here waits on a probe.
        TriageStage(ctx.rules.triage, ctx.settings.triage_enabled),
        RemediateStage(ctx.rules, ctx.store.remediations, remediation_mode),
        PersistStage(ctx, paging.pagers, paging.fallbacks, dead_letters, paging.handoff),
    ]


async def _no_dead_letters(dead: list[DeadLetter]) -> None:
    assert not dead, "a batch without records has nothing to dead-letter"
