"""Which alerts take the urgent lane: those whose severity says ``urgent`` (severities.yaml).

The webhook asks this of every alert before it goes to Kafka, so it is the classifier's
cheap half only (matchers on labels, no templates). An alert's labels decide its lane, so
its firing and its resolve travel the same lane, in order.
"""

from __future__ import annotations

from collections.abc import Callable

from service.classify.classifier import Classifier
from service.models import Alert
from service.ruleset.models import RuleSet


def urgent_lane(rules: RuleSet) -> Callable[[Alert], bool]:
    urgent = frozenset(name for name, s in rules.severities.items() if s.urgent)
    classifier = Classifier(rules)

    def is_urgent(alert: Alert) -> bool:
        return bool(urgent) and classifier.classify(alert).severity in urgent

    return is_urgent
