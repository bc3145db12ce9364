"""The pipeline, assembled in one place (Alertmanager's notify pipeline is the model).

    parse -> classify -> heartbeats -> correlate -> quiet -> escalate -> triage -> remediate -> persist

Each stage takes the batch and returns it (``service/batch.py``); a batch is one
Kafka poll, one store transaction and one offset commit. Only the runtime and the
bench import this module.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.batch import DeadLetter, Pipeline, Stage
from service.classify.classifier import Classifier
from service.classify.stage import ClassifyStage
from service.context import Context
from service.correlate.correlator import Correlator
from service.correlate.stage import CorrelateStage
from service.escalate.policy import EscalationPolicy
from service.escalate.stage import EscalateStage
from service.ingest.stage import ParseStage
from service.persist.stage import DeadLetterSink, PersistStage
from service.quiet.heartbeats import HeartbeatStage
from service.quiet.stage import QuietStage
from service.remediate.stage import RemediateStage
from service.ruleset.remediation import Mode
from service.triage.stage import TriageStage


def build_pipeline(
    ctx: Context,
    pagers: Sequence[str],
    dead_letters: DeadLetterSink,
    remediation_mode: Mode = "dry-run",
    fallbacks: Sequence[str] = (),
) -> Pipeline:
    """``pagers``: the page jobs each page intent becomes (closes also go to the
    ``fallbacks``); ``remediation_mode``: the ceiling over remediation.yaml's modes ("off"
    without a Kubernetes API)."""
    rules, store, classifier = ctx.rules, ctx.store, Classifier(ctx.rules)
    return Pipeline(
        [
            ParseStage(),
            ClassifyStage(classifier),
            HeartbeatStage(rules.noise, store.heartbeats),
            CorrelateStage(store.incidents, Correlator(rules, describe=classifier.describe), rules),
            QuietStage(rules, store),
            EscalateStage(EscalationPolicy(rules), rules),
            *_tail(ctx, pagers, dead_letters, remediation_mode, fallbacks),
        ]
    )


def build_lift_pipeline(
    ctx: Context,
    pagers: Sequence[str],
    remediation_mode: Mode = "dry-run",
    fallbacks: Sequence[str] = (),
) -> Pipeline:
    """What the noise worker runs on an incident whose hold began or lifted without an alert:
    the lift's triage and remediation are planned as on opening, then everything is stored."""
    return Pipeline(_tail(ctx, pagers, _no_dead_letters, remediation_mode, fallbacks))


def _tail(
    ctx: Context,
    pagers: Sequence[str],
    dead_letters: DeadLetterSink,
    remediation_mode: Mode,
    fallbacks: Sequence[str],
) -> list[Stage]:
    return [
        # Only plans the probes and their timer: nothing here waits on a probe.
        TriageStage(ctx.rules.triage, ctx.settings.triage_enabled),
        RemediateStage(ctx.rules, ctx.store.remediations, remediation_mode),
        PersistStage(ctx, pagers, fallbacks, dead_letters),
    ]


async def _no_dead_letters(dead: list[DeadLetter]) -> None:
    assert not dead, "a batch without records has nothing to dead-letter"
