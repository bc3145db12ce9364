"""The state store's schema. Times that are queried are epoch seconds (portable ordering)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnClause,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)

metadata = MetaData()


def leased_index(table: str) -> Index:
    """The rows leased now, for the lease renewals (``lease_until`` in a range): they read
    these few, not a table that keeps every job the deployment ever ran."""
    held = text("lease_until IS NOT NULL")
    return Index(f"ix_{table}_leased", "lease_until", sqlite_where=held, postgresql_where=held)


incidents = Table(
    "incidents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("group_key", Text, nullable=False),
    Column("is_current", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("version", Integer, nullable=False),
    Column("data", Text, nullable=False),
    # One owner per group: two consumers can never both open an incident for it.
    Index(
        "uq_incidents_current_group",
        "group_key",
        unique=True,
        sqlite_where=text("is_current"),
        postgresql_where=text("is_current"),
    ),
    Index("ix_incidents_status_severity", "status", "severity"),
)
# The current incidents, written as the partial index's own condition: SQLAlchemy writes
# ``incidents.c.is_current`` as "is_current = 1" on SQLite, which SQLite does not match to the
# index's "WHERE is_current", and a lookup by group key scanned every incident ever stored.
IS_CURRENT: ColumnClause[Any] = literal_column("incidents.is_current")

# Transactional outbox: events are stored with the state change that caused them
# and published afterwards, so a crash between the two loses nothing. The relay that
# publishes a row holds its lease.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("lease_until", Float, nullable=True),
    Column("lease_owner", String(32), nullable=True),
    # Per-key order: a key's earlier rows held by another relay are looked up by key.
    Index("ix_outbox_key", "key", "id"),
)

page_jobs = Table(
    "page_jobs",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("incident_id", String(64), nullable=False),
    Column("integration", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("opening", Integer, nullable=False),
    # "first" for the opening page, an escalation rule's name, or "reminder:<n>".
    Column("target", String(128), nullable=False, server_default="first"),
    # JSON list of the runbook roles this page is for.
    Column("roles", Text, nullable=False, server_default="[]"),
    # JSON: what the page says when it is not rendered from the incident (reminders).
    Column("payload", Text, nullable=False, server_default="{}"),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float, nullable=True),
    # Who holds the lease: only the holder may record the outcome.
    Column("lease_owner", String(32), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Trigger jobs: the page's idempotency key (PagerDuty dedup_key, Opsgenie alias), so an
    # acknowledgement coming back from a pager finds its incident.
    Column("dedup_key", String(64), nullable=True),
    # A page is sent once per (incident opening, integration, action, target), however
    # often the alert that caused it is delivered.
    UniqueConstraint("incident_id", "integration", "action", "opening", "target", name="uq_page_jobs_once"),
    Index("ix_page_jobs_due", "status", "next_attempt_at"),
    Index("ix_page_jobs_dedup_key", "dedup_key"),
    leased_index("page_jobs"),
)

# What happened to each incident, for the incident API; written with the events.
timeline = Table(
    "timeline",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("incident_id", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("type", String(64), nullable=False),
    Column("summary", Text, nullable=False),
    Index("ix_timeline_incident", "incident_id", "id"),
)

# Durable timers: escalations and reminders fire from here, after restarts too.
timers = Table(
    "timers",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("incident_id", String(64), nullable=False),
    Column("opening", Integer, nullable=False),
    Column("name", String(128), nullable=False),
    Column("due_at", Float, nullable=False),
    Column("status", String(16), nullable=False),  # pending | fired | skipped
    Column("lease_until", Float, nullable=True),
    Column("lease_owner", String(32), nullable=True),
    Column("fired_at", Float, nullable=True),
    UniqueConstraint("incident_id", "opening", "name", name="uq_timers_once"),
    leased_index("timers"),
    Index("ix_timers_due", "status", "due_at"),
)

# Remediation jobs: one per (incident opening, policy, target), however often the alert
# that asked for it arrives. The plan is stored before any change is made.
remediations = Table(
    "remediations",
    metadata,
    # Derived from the unique key below, so a redelivered alert names the same job.
    Column("id", String(40), primary_key=True),
    Column("incident_id", String(64), nullable=False),
    Column("opening", Integer, nullable=False),
    Column("fingerprint", String(32), nullable=False),
    Column("policy", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target_key", String(600), nullable=False),
    Column("target", Text, nullable=False),
    # JSON: the alert, the labels that named the target, the parameters.
    Column("inputs", Text, nullable=False),
    Column("mode", String(16), nullable=False),
    # pending | awaiting_approval | acting | verifying | succeeded | failed | skipped
    Column("status", String(24), nullable=False),
    Column("guardrail", String(32), nullable=True),
    Column("reason", Text, nullable=True),
    Column("plan", Text, nullable=True),
    Column("dry_run", Text, nullable=True),
    Column("result", Text, nullable=True),
    Column("approval_due_at", Float, nullable=True),
    Column("decision", String(16), nullable=True),  # approved | denied
    Column("decided_by", String(200), nullable=True),
    # Set when an enforce action reserves its slot: cooldowns and budgets count these.
    Column("started_at", Float, nullable=True),
    Column("verify_due_at", Float, nullable=True),
    Column("next_attempt_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_until", Float, nullable=True),
    Column("lease_owner", String(32), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("incident_id", "opening", "policy", "target_key", name="uq_remediations_once"),
    Index("ix_remediations_due", "status", "next_attempt_at"),
    Index("ix_remediations_target_started", "target_key", "started_at"),
    Index("ix_remediations_policy_started", "policy", "started_at"),
    leased_index("remediations"),
    Index("ix_remediations_started", "started_at"),
)

# One actor per target: the job that holds a target's row may act on it.
remediation_locks = Table(
    "remediation_locks",
    metadata,
    Column("target_key", String(600), primary_key=True),
    Column("remediation_id", String(40), nullable=False),
    Column("until", Float, nullable=False),
)

# Targets automation no longer touches (an action did not bring recovery) until a
# person resumes them.
remediation_holds = Table(
    "remediation_holds",
    metadata,
    Column("target_key", String(600), primary_key=True),
    Column("remediation_id", String(40), nullable=False),
    Column("reason", Text, nullable=False),
    Column("since", Float, nullable=False),
)

# One row: the kill switch, and the row every budget check locks so that replicas
# count and reserve one at a time.
remediation_control = Table(
    "remediation_control",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("paused_by", String(200), nullable=True),
    Column("paused_at", Float, nullable=True),
    Column("reason", Text, nullable=True),
    Column("reservations", BigInteger, nullable=False, default=0),
)

# The commands already applied, by the id their sender gave (an Idempotency-Key header, a
# command topic record's coordinates): a command delivered again changes nothing.
command_ids = Table(
    "command_ids",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("seen_at", Float, nullable=False),
    Index("ix_command_ids_seen_at", "seen_at"),
)

# Silences (Alertmanager's v2 API, amtool): shared by every replica through the store.
# ``matchers`` is the API's own list as JSON; an expired silence keeps its row (amtool
# query --expired lists it) with ``ends_at`` moved to when it was expired.
silences = Table(
    "silences",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("matchers", Text, nullable=False),
    Column("starts_at", Float, nullable=False),
    Column("ends_at", Float, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("comment", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_silences_ends_at", "ends_at"),
)

# Heartbeats (dead man's switch): when each was last seen, and since when it is missing
# (set once the missing-heartbeat alert was sent, cleared when it returns).
heartbeats = Table(
    "heartbeats",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("last_seen", Float, nullable=False),
    Column("missing_since", Float, nullable=True),
)

# Secrets every replica shares, each made by the first replica that asks for it
# (``store/keys.py``): the intake's seal key (``ingest/seal.py``). Hex text.
service_keys = Table(
    "service_keys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
)
