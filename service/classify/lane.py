"""Which alerts take the urgent lane: those whose severity says ``urgent`` (severities.yaml).

The webhook asks this of every alert before it goes to Kafka, so it is the classifier's
cheap half only (matchers on labels, no templates). An alert's labels decide its lane, so
its firing and its resolve travel the same lane, in order.
"""

from __future__ import annotations

from collections.abc import Callable

from service.classify.classifier import Classifier
from service.ruleset.models import RuleSet


def urgent_lane(rules: RuleSet) -> Callable[[dict[str, str]], bool]:
    """Whether an alert with these labels takes the urgent lane."""
    urgent = frozenset(name for name, s in rules.severities.items() if s.urgent)
    classifier = Classifier(rules)

    def is_urgent(labels: dict[str, str]) -> bool:
        return bool(urgent) and classifier.severity_of(labels)[0] in urgent

    return is_urgent
