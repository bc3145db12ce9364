"""Wire formats accepted on the way in: Alertmanager webhook v4 and single alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]


class AlertIn(BaseModel):
    """One alert: an element of a webhook's ``alerts`` or a record of its own."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    status: Literal["firing", "resolved"] | None = None
    labels: dict[LabelName, str]
    annotations: dict[str, str] = {}
    starts_at: datetime | None = Field(default=None, alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname"):
            raise ValueError("labels must include a non-empty 'alertname'")
        return labels

    @field_validator("labels", "annotations")
    @classmethod
    def _encodable(cls, values: dict[str, str]) -> dict[str, str]:
        # JSON allows lone surrogates (\ud800); UTF-8, fingerprints and Kafka do not.
        for key, value in values.items():
            try:
                key.encode()
                value.encode()
            except UnicodeEncodeError:
                raise ValueError(f"{key!r}: not valid Unicode (lone surrogate)") from None
        return values


class WebhookIn(BaseModel):
    """Alertmanager's webhook body (``version: "4"``)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    version: Literal["4"]
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_labels: dict[str, str] = Field(default={}, alias="groupLabels")
    common_labels: dict[str, str] = Field(default={}, alias="commonLabels")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[AlertIn]
