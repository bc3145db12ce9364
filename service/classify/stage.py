"""The classify stage: severity (and the rule that chose it) for every alert."""

from __future__ import annotations

from service.batch import Batch
from service.classify.classifier import Classifier


class ClassifyStage:
    def __init__(self, classifier: Classifier) -> None:
        self._classifier = classifier

    async def __call__(self, batch: Batch) -> Batch:
        self._classifier.classify_all(batch.alerts)
        return batch
