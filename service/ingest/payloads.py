"""Wire formats accepted on the way in: Alertmanager webhook v4, single alerts and
Alertmanager API v2's postable alerts (what Prometheus pushes)."""

from __future__ import annotations

from datetime import datetime
from itertools import chain
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

# Limits on what one alert may carry. Each is far beyond what Prometheus and Alertmanager
# produce (a rule's alert has a dozen or two labels of short identifiers and a few
# annotations of prose), so a body over one is a bug or an attack, not an alert; every
# label and annotation is copied into the incident, its events and the pages, so the
# limits keep one alert from costing the store, Kafka and the pagers much more than its
# byte size suggests. A body over one is a 422 naming it.
#
# JSON nesting: a webhook is 4 levels deep (body, alerts, alert, labels). 64 leaves room
# for any sender's extra fields and stays far below the depth at which decoding recurses
# out of stack (Python's json raises RecursionError near 1,000).
MAX_JSON_DEPTH = 64
# Labels and annotations per alert: Prometheus sets no limit of its own, but a rule with
# more than a few dozen is a mistake (a label per pod, say).
MAX_LABELS = 100
MAX_ANNOTATIONS = 100
# A label name is an identifier, a few dozen characters at most in practice. The same
# bound holds for annotation names, which Prometheus validates as label names.
MAX_NAME_CHARS = 256
# Label values identify things (pods, namespaces, instance URLs); annotation values are
# text for people (descriptions, runbook links, sometimes a log excerpt).
MAX_LABEL_VALUE_CHARS = 4096
MAX_ANNOTATION_VALUE_CHARS = 65536

LabelName = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE_CHARS)]
AnnotationName = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]
AnnotationValue = Annotated[str, StringConstraints(max_length=MAX_ANNOTATION_VALUE_CHARS)]


def encodes(text: str) -> bool:
    """Can ``text`` be written as UTF-8 (no lone surrogates)?"""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _storable(where: str, text: str) -> None:
    """Text the store, Kafka and the pagers can all carry, or ValueError naming ``where``."""
    # JSON allows lone surrogates (\ud800); UTF-8, fingerprints and Kafka do not.
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{where}: not valid Unicode (lone surrogate)") from None
    # PostgreSQL text and jsonb cannot hold NUL, and no pager shows it.
    if "\x00" in text:
        raise ValueError(f"{where}: contains a NUL character (\\u0000)")


class _AlertTimes(BaseModel):
    """What every alert carries besides its labels and annotations."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    starts_at: datetime | None = Field(default=None, alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")


class _AlertFields(_AlertTimes):
    """What every alert carries, whoever sent it, with the limits above."""

    labels: dict[LabelName, LabelValue]
    annotations: dict[AnnotationName, AnnotationValue] = {}

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname"):
            raise ValueError("labels must include a non-empty 'alertname'")
        return labels

    @field_validator("labels", "annotations")
    @classmethod
    def _bounded_and_storable(cls, values: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        limit = MAX_LABELS if info.field_name == "labels" else MAX_ANNOTATIONS
        if len(values) > limit:
            raise ValueError(f"at most {limit} {info.field_name} per alert, not {len(values)}")
        # Every alert comes through here: one check over all the text at C speed, and only
        # when it fails the search for the culprit (measured: 7 us an alert otherwise).
        whole = "".join(chain.from_iterable(values.items()))
        if "\x00" in whole or not encodes(whole):
            for key, value in values.items():
                # repr: the message must itself be valid Unicode without NULs.
                _storable(f"name {key!r}", key)
                _storable(f"{key!r}", value)
        return values

    @field_validator("generator_url")
    @classmethod
    def _storable_url(cls, url: str) -> str:
        _storable("generatorURL", url)
        return url


# Fields beyond a model's own are kept (``extra="allow"``), not skipped: a body that
# validates nests no deeper than its labels except in them, so only a body that has some
# needs the webhook's nesting check (``WebhookIn.may_nest``).
_KEEPS_EXTRAS = ConfigDict(populate_by_name=True, extra="allow")


class AlertIn(_AlertFields):
    """One alert: an element of a webhook's ``alerts`` or a record of its own."""

    model_config = _KEEPS_EXTRAS

    status: Literal["firing", "resolved"] | None = None
    fingerprint: str = ""


class LeanAlertIn(_AlertTimes):
    """:class:`AlertIn` with every limit checked by pydantic's own code, none by a Python
    validator (four calls an alert, 30% of the webhook's validation): the hot path's
    (``parse.validated_webhook``). It does not check that the text is storable or that
    labels name an alertname; the caller does, and takes what fails through
    :class:`WebhookIn`, whose messages say why."""

    model_config = _KEEPS_EXTRAS

    labels: Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)]
    annotations: Annotated[dict[AnnotationName, AnnotationValue], Field(max_length=MAX_ANNOTATIONS)] = {}
    status: Literal["firing", "resolved"] | None = None
    fingerprint: str = ""


class PostableAlertIn(_AlertFields):
    """One element of ``POST /api/v2/alerts``: Alertmanager API v2's ``postableAlert``.

    It has no status and no fingerprint: both are decided on receipt, from ``endsAt`` and
    the labels, as Alertmanager does.
    """

    @field_validator("labels", mode="before")
    @classmethod
    def _without_empty(cls, labels: object) -> object:
        # Alertmanager drops empty-valued labels before validating and fingerprinting
        # (an empty label is an absent label), so the fingerprints agree.
        if isinstance(labels, dict):
            return {name: value for name, value in labels.items() if value != ""}
        return labels

    @field_validator("starts_at", "ends_at", mode="before")
    @classmethod
    def _date_time_text(cls, value: object) -> object:
        # The schema says `type: string, format: date-time`; a number would otherwise be
        # read as epoch seconds, a guess Alertmanager does not make.
        if value is None or isinstance(value, str):
            return value
        raise ValueError("must be an RFC 3339 date-time string")


class _WebhookFields(BaseModel):
    """Alertmanager's webhook body (``version: "4"``) but its alerts."""

    model_config = _KEEPS_EXTRAS

    version: Literal["4"]
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_labels: dict[str, str] = Field(default={}, alias="groupLabels")
    common_labels: dict[str, str] = Field(default={}, alias="commonLabels")
    # Unused, taken as it comes (Alertmanager sends text).
    common_annotations: dict[str, Any] = Field(default={}, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")


class WebhookIn(_WebhookFields):
    """Alertmanager's webhook body (``version: "4"``)."""

    alerts: list[AlertIn]


class LeanWebhookIn(_WebhookFields):
    """:class:`WebhookIn` of :class:`LeanAlertIn`: the hot path's."""

    alerts: list[LeanAlertIn]

    def may_nest(self) -> bool:
        """Could the body nest deeper than its alerts' labels: has it, or one of its alerts,
        fields beyond the webhook's own, or common annotations that are not text?"""
        return (
            bool(self.__pydantic_extra__)
            or any(not isinstance(v, str) for v in self.common_annotations.values())
            or any(a.__pydantic_extra__ for a in self.alerts)
        )
