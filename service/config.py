"""Service configuration: every knob is an ``INCIDENTD_*`` environment variable.

Secrets (webhook token, pager keys, the database URL) may also come from files through the
``*_FILE`` variables, the convention Kubernetes and Docker secrets mounts use.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INCIDENTD_", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_alerts_topic: str = "alerts"
    # The urgent lane (severities.yaml `urgent`): its own topic and consumer group, so an urgent
    # alert never waits behind a backlog of others. Unset: the alerts topic's name + ".urgent";
    # empty: one lane for all.
    kafka_urgent_topic: str | None = None
    kafka_events_topic: str = "incidents.events"
    # Pages before events: while the alert consumers work through a backlog, incident events
    # wait at most this long before they are published (service/backlog.py); 0: never wait.
    events_max_delay_seconds: float = Field(default=5.0, ge=0)
    kafka_dlq_topic: str = "alerts.dlq"
    kafka_commands_topic: str = "incidents.commands"
    kafka_group_id: str = "incidentd"
    kafka_topic_partitions: int = Field(default=3, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_create_topics: bool = True
    # group: the consumers join consumer groups, which share the partitions among replicas.
    # manual: this process reads every partition itself, with no group join (a broker may hold
    # a new group's first join for seconds); offsets are still committed under the group ids.
    # For one replica only: `run --embedded` uses it.
    kafka_assignment: Literal["group", "manual"] = "group"
    kafka_max_batch: int = Field(default=1000, ge=1)
    # A poll is stored in slices of at most this many bytes of records (each slice one store
    # transaction, its pages sent as soon as it is stored): bounds how long the urgent lane
    # waits for the other's slice in hand, and the memory a storm's batch takes.
    kafka_slice_bytes: int = Field(default=256 * 1024, ge=1)
    kafka_publish_timeout_seconds: float = Field(default=5.0, gt=0)
    # Idle-poll latency: how long the broker may hold an empty fetch, and how long the
    # batch subscriber waits after one. Lower is faster to react, costlier when idle.
    # 20 ms: the embedded broker answers a held fetch only when it times out, so a new
    # incident waited out the rest of it (e4's 202 -> polled p99 was 43 ms at 50 ms); idle, it
    # costs 3% of a core more than 50 ms, service and broker together. Kafka answers a held
    # fetch as soon as a record arrives: there it only paces idle fetches.
    kafka_fetch_max_wait_ms: int = Field(default=20, ge=0)
    kafka_batch_timeout_ms: int = Field(default=20, ge=0)
    # How soon the group hands a dead replica's partitions to the others (Kafka's smallest
    # allowed session by default is 6 s); heartbeats a third of it.
    kafka_session_timeout_ms: int = Field(default=6000, ge=1000)
    # How long the group waits for its members to join again in a rebalance. Short, so a start
    # or a restart (a departed member's slot) is not held for long: some brokers (Tansu) hold a
    # group's first join for half of it. Members rejoin from aiokafka's own task, not between
    # batches, so a slow batch does not make them miss it.
    kafka_rebalance_timeout_ms: int = Field(default=3000, ge=500)
    # Kafka security, for every client the service makes (service/ingest/kafka_security.py).
    # CA unset: the system's trust store (MSK, Confluent Cloud); cert + key: mutual TLS.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    # Not a secret, but managed Kafka hands it out with the password (a Confluent API key).
    kafka_sasl_username_file: Path | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_key_password_file: Path | None = None
    kafka_ssl_check_hostname: bool = True

    database_url: str = "sqlite+aiosqlite:///./var/incidentd.db"
    # The URL holds the password: read from a Secret's file (the chart mounts one) rather than
    # an environment variable, which `kubectl describe` and crash dumps show.
    database_url_file: Path | None = None
    # Upgrade the schema at start; false: only check it (migrations run as `incidentd db upgrade`).
    database_migrate: bool = True
    rules_dir: Path = Path("rules")

    http_host: str = "0.0.0.0"
    http_port: int = 8080
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Paths served without the bearer token (probes and scraping); empty: none.
    http_public_paths: Annotated[list[str], NoDecode] = ["/healthz", "/readyz", "/metrics"]
    webhook_token: SecretStr | None = None
    webhook_token_file: Path | None = None

    pagers: Annotated[list[str], NoDecode] = ["console"]
    page_max_attempts: int = Field(default=8, ge=1)
    page_backoff_initial_seconds: float = Field(default=2.0, gt=0)
    page_backoff_max_seconds: float = Field(default=300.0, gt=0)
    page_concurrency: int = Field(default=8, ge=1)

    opsgenie_api_key: SecretStr | None = None
    opsgenie_api_key_file: Path | None = None
    opsgenie_api_url: str = "https://api.opsgenie.com"
    opsgenie_timeout_seconds: float = Field(default=10.0, gt=0)

    # Jira Service Management Ops: Opsgenie's Alert API under JSM's base URL (notify/jsm.py).
    jsm_api_key: SecretStr | None = None
    jsm_api_key_file: Path | None = None
    jsm_api_url: str = "https://api.atlassian.com/jsm/ops/integration"
    jsm_timeout_seconds: float = Field(default=10.0, gt=0)

    pagerduty_routing_key: SecretStr | None = None
    pagerduty_routing_key_file: Path | None = None
    pagerduty_api_url: str = "https://events.pagerduty.com"
    pagerduty_timeout_seconds: float = Field(default=10.0, gt=0)

    # Follow-ups (service/notify/jira.py, statuspage.py): a Jira ticket when an incident is
    # resolved, a Statuspage incident for the severities that say so.
    jira_url: str | None = None
    jira_email: str | None = None
    jira_api_token: SecretStr | None = None
    jira_api_token_file: Path | None = None
    jira_project: str | None = None
    jira_issue_type: str = "Task"
    jira_timeout_seconds: float = Field(default=10.0, gt=0)
    statuspage_url: str = "https://api.statuspage.io"
    statuspage_page_id: str | None = None
    statuspage_api_key: SecretStr | None = None
    statuspage_api_key_file: Path | None = None
    statuspage_timeout_seconds: float = Field(default=10.0, gt=0)

    # The URL of a Slack incoming webhook is its credential.
    slack_webhook_url: SecretStr | None = None
    slack_webhook_url_file: Path | None = None
    slack_timeout_seconds: float = Field(default=10.0, gt=0)

    # Acknowledgements coming back (service/http/inbound/): each endpoint checks its
    # sender with its own secret, and answers 404 while that secret is not set.
    slack_signing_secret: SecretStr | None = None  # the Slack app's Signing Secret
    slack_signing_secret_file: Path | None = None
    pagerduty_webhook_secret: SecretStr | None = None  # the V3 webhook subscription's secret
    pagerduty_webhook_secret_file: Path | None = None
    opsgenie_webhook_secret: SecretStr | None = None  # sent by the webhook integration as a header
    opsgenie_webhook_secret_file: Path | None = None

    # Kubernetes remediation. The global mode is a ceiling over remediation.yaml's modes;
    # paused is the kill switch (the API can pause too, and that is stored).
    remediation_mode: Literal["off", "dry-run", "enforce"] = "dry-run"
    remediation_paused: bool = False
    remediation_verify_interval_seconds: float = Field(default=5.0, gt=0)
    # Which API server: an explicit URL, else in-cluster, else a kubeconfig file.
    kube_api_url: str | None = None
    kube_token: SecretStr | None = None
    kube_token_file: Path | None = None
    kube_ca_file: Path | None = None
    kube_config: Path | None = None
    kube_timeout_seconds: float = Field(default=10.0, gt=0)
    # Triage on open (triage.yaml): the probes' overall deadline per incident.
    triage_enabled: bool = True
    triage_deadline_seconds: float = Field(default=30.0, gt=0)

    event_type_prefix: str = "io.incidentd"
    event_source: str = "/incidentd"

    log_level: str = "INFO"
    # json or text (service/observability/logs.py); unset: text on a terminal, else json.
    log_format: Literal["json", "text"] | None = None
    # SIGTERM/SIGINT: how long the service may take to finish what it has in hand.
    shutdown_timeout_seconds: float = Field(default=20.0, gt=0)

    @property
    def urgent_topic(self) -> str:
        """The urgent lane's topic; empty: no urgent lane."""
        if self.kafka_urgent_topic is None:
            return f"{self.kafka_alerts_topic}.urgent"
        return self.kafka_urgent_topic

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: dict[str, object]) -> dict[str, object]:
        for name in ("pagers", "http_public_paths"):
            raw = data.get(name) if isinstance(data, dict) else None
            if isinstance(raw, str):
                data[name] = [p.strip() for p in raw.split(",") if p.strip()]
        return data

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        """Every ``*_FILE`` must name a readable file with something in it, and every
        secret that is set must not be empty: a secret mount that failed must stop the
        service, never leave it running open."""
        for name in type(self).model_fields:
            if not name.endswith("_file") or getattr(self, name) is None:
                continue
            content = _read_file(name, getattr(self, name))
            secret = name.removesuffix("_file")
            if secret not in type(self).model_fields:
                continue  # a file that is not a secret (a CA bundle): it only has to be there
            current = getattr(self, secret)
            # Set explicitly, not a default (the database URL has one): the two would disagree.
            if current is not None and secret in self.model_fields_set:
                raise ConfigError(f"{_env(secret)} and {_env(name)} are both set; set one of them")
            plain = SecretStr not in typing.get_args(type(self).model_fields[secret].annotation)
            setattr(self, secret, content if plain else SecretStr(content))
        for name, value in self:
            if isinstance(value, SecretStr) and not value.get_secret_value():
                raise ConfigError(f"{_env(name)} is set but empty")
        _check_kafka_security(self)
        return self


def _check_kafka_security(s: Settings) -> None:
    """Settings that cannot work together stop the start, rather than a refused connection."""
    protocol = s.kafka_security_protocol
    if protocol.startswith("SASL_") and (s.kafka_sasl_username is None or s.kafka_sasl_password is None):
        raise ConfigError(
            f"INCIDENTD_KAFKA_SECURITY_PROTOCOL={protocol} needs INCIDENTD_KAFKA_SASL_USERNAME "
            "and INCIDENTD_KAFKA_SASL_PASSWORD (or INCIDENTD_KAFKA_SASL_PASSWORD_FILE)"
        )
    if not protocol.startswith("SASL_") and (s.kafka_sasl_username or s.kafka_sasl_password):
        raise ConfigError(
            "INCIDENTD_KAFKA_SASL_USERNAME/PASSWORD are set but "
            f"INCIDENTD_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL (SASL_PLAINTEXT or SASL_SSL)"
        )
    tls = [n for n in ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file") if getattr(s, n)]
    if tls and not protocol.endswith("SSL"):
        raise ConfigError(
            f"{_env(tls[0])} is set but INCIDENTD_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
            "(SSL or SASL_SSL)"
        )
    if (s.kafka_ssl_cert_file is None) != (s.kafka_ssl_key_file is None):
        raise ConfigError("INCIDENTD_KAFKA_SSL_CERT_FILE and INCIDENTD_KAFKA_SSL_KEY_FILE go together")


class ConfigError(Exception):
    """A setting that must stop the service at start; the message is one line."""


def _env(field: str) -> str:
    return f"INCIDENTD_{field.upper()}"


def _read_file(field: str, path: Path) -> str:
    try:
        content = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{_env(field)}={path}: cannot read it: {reason}") from None
    if not content:
        raise ConfigError(f"{_env(field)}={path}: the file is empty")
    return content
