"""The state store's schema. Times that are queried are epoch seconds (portable ordering)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

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

# Transactional outbox: events are stored with the state change that caused them
# and published afterwards, so a crash between the two loses nothing.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
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
    # A page is sent once per (incident opening, integration, action, target), however
    # often the alert that caused it is delivered.
    UniqueConstraint("incident_id", "integration", "action", "opening", "target", name="uq_page_jobs_once"),
    Index("ix_page_jobs_due", "status", "next_attempt_at"),
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
    Index("ix_timers_due", "status", "due_at"),
)
