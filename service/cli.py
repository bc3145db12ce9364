"""``incidentd``: run the service, check rules, print the event schema or a postmortem draft."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from service import allocator
from service.commandline import incidents
from service.commandline import tail as tail_command
from service.commandline.exits import Exit, fail, load_settings
from service.config import ConfigError, Settings
from service.observability import logs
from service.ruleset import RulesError, RuleSet, load_rules

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(incidents.app, name="incidents")
app.command("tail")(tail_command.tail)
rules_app = typer.Typer(no_args_is_help=True, help="Validate the rules in rules/.")
app.add_typer(rules_app, name="rules")
db_app = typer.Typer(no_args_is_help=True, help="The database schema (INCIDENTD_DATABASE_URL).")
app.add_typer(db_app, name="db")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"incidentd {version('incidentd')}")
        raise typer.Exit()


@app.callback()
def _root(
    _version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    pass


def embedded_defaults(settings: Settings) -> dict[str, object]:
    # One database per HTTP port: two embedded copies side by side must not share
    # state (each would publish and page the other's incidents).
    return {
        "database_url": f"sqlite+aiosqlite:///./var/incidentd-{settings.http_port}.db",
        "pagers": ["console"],
        # One process on its own broker: no consumer group to join (Tansu holds a new group's
        # first join for 3 s, and a restart's for up to 11 s).
        "kafka_assignment": "manual",
    }


@rules_app.command("check")
def rules_check(path: Path = typer.Argument(Path("rules"), help="rules directory")) -> None:
    """Validate every rules file; print `file: location: problem` per error."""
    try:
        rules = load_rules(path)
    except RulesError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        typer.echo(f"{len(exc.problems)} problem(s) in {path}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"{path}: ok ({len(rules.severities)} severities, {len(rules.classify.rules)} classify rules, "
        f"group_by {rules.grouping.group_by}, {len(rules.escalation.rules)} escalation rules, "
        f"{len(rules.contacts.roles)} roles, {len(rules.remediation.policies)} remediation policies "
        f"in mode {rules.remediation.mode}, {len(rules.triage.rules)} triage rules)"
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the schema up to this version (safe with replicas running or starting)."""
    from service.store import schema
    from service.store.database import Database

    async def _upgrade() -> tuple[str | None, str]:
        db = Database(load_settings().database_url)
        try:
            return await schema.upgrade(db)
        finally:
            await db.close()

    try:
        before, now = asyncio.run(_upgrade())
    except Exception as exc:
        raise fail(f"cannot upgrade the database: {exc.__class__.__name__}: {exc}") from None
    typer.echo(f"database schema at {now}" + ("" if before == now else f" (was {before or 'empty'})"))


@db_app.command("current")
def db_current() -> None:
    """Print the schema's version and this version's; exit 1 if they differ."""
    from service.store import schema
    from service.store.database import Database

    async def _current() -> str | None:
        db = Database(load_settings().database_url)
        try:
            return await schema.current(db)
        finally:
            await db.close()

    try:
        revision = asyncio.run(_current())
    except Exception as exc:
        raise fail(f"cannot read the database: {exc.__class__.__name__}: {exc}") from None
    typer.echo(f"database schema {revision or '(none)'}; this version needs {schema.head()}")
    if revision != schema.head():
        raise typer.Exit(code=1)


@app.command()
def postmortem(incident_id: str = typer.Argument(..., help="the incident's id")) -> None:
    """Print an incident's postmortem draft (markdown, the runbook's template); read-only."""
    from service.postmortem.draft import render
    from service.store import schema as db_schema
    from service.store.store import Store
    from service.store.views import IncidentViews

    settings = load_settings()
    try:
        rules: RuleSet | None = load_rules(settings.rules_dir)
    except RulesError:
        rules = None  # the draft leaves out what only the rules say (response time, due date)

    async def _draft() -> str | None:
        store = Store(settings.database_url)
        try:
            await db_schema.check(store.db)
            d = await IncidentViews(store).detail(incident_id)
            return None if d is None else render(d.incident, d.timeline, d.pages, d.remediations, rules)
        finally:
            await store.close()

    try:
        text = asyncio.run(_draft())
    except Exception as exc:
        raise fail(f"cannot read the database: {exc.__class__.__name__}: {exc}") from None
    if text is None:
        raise fail(f"no incident {incident_id}")
    typer.echo(text, nl=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of incident events' `data`."""
    from service.emit.schema import json_schema

    typer.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


@app.command()
def run(
    embedded: bool = typer.Option(
        False,
        "--embedded",
        help="start the bundled broker on loopback, SQLite state, console pager",
    ),
) -> None:
    """Run the service: HTTP ingest, the alerts consumer, paging and event publishing."""
    # Until the settings are read, the format comes from the environment as it stands: a
    # JSON stream stays all JSON even when the settings are wrong.
    early = logs.resolve_format(os.environ.get("INCIDENTD_LOG_FORMAT") or None, sys.stderr)
    overrides: dict[str, object] = {}
    if embedded:
        env = load_settings(functools.partial(_fail_run, early))
        overrides = {k: v for k, v in embedded_defaults(env).items() if k not in env.model_fields_set}
        if env.remediation_mode == "enforce":
            # The embedded mode is a demo: it never changes a cluster.
            _say(early, "--embedded caps remediation at dry-run")
            overrides["remediation_mode"] = "dry-run"
    settings = load_settings(functools.partial(_fail_run, early), **overrides)
    try:
        fmt = logs.configure(settings.log_level, settings.log_format)
    except ValueError as exc:
        raise _fail_run(early, f"invalid configuration: {exc}") from None
    try:
        rules = load_rules(settings.rules_dir)
    except RulesError as exc:
        raise _fail_run(fmt, "rules are invalid, not starting:\n" + str(exc)) from None
    # Before any thread starts (the store's driver threads each took an arena of their own).
    allocator.at_start()
    try:
        asyncio.run(_serve(settings, rules, embedded))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    except _StartupError as exc:
        raise _fail_run(fmt, str(exc)) from None


def _say(fmt: logs.LogFormat, message: str, level: str = "WARNING") -> None:
    """A line from ``run`` before logging is set up, in the log format."""
    line = f"incidentd: {message}"
    typer.echo(line if fmt == "text" else logs.json_line("service.cli", line, level=level), err=True)


def _fail_run(fmt: logs.LogFormat, message: str) -> typer.Exit:
    """Why ``run`` stops at start, in the log format: a JSON stream stays all JSON."""
    _say(fmt, message, level="CRITICAL")
    return typer.Exit(code=int(Exit.PROBLEMS))


class _StartupError(Exception):
    pass


class _Signals:
    """SIGTERM and SIGINT stop the service the same way: the HTTP server stops taking
    requests, then the runtime drains and everything this process started stops, and
    the process exits 0. Before the server runs, a signal abandons the start; a second
    signal while draining makes the HTTP server stop at once."""

    def __init__(self) -> None:
        self.server: Any = None
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._received, sig)

    def _received(self, sig: signal.Signals) -> None:
        log = logging.getLogger("service.cli")
        if self.server is None:
            log.warning("%s while starting: stopping", sig.name)
            if self._task is not None:
                self._task.cancel()
        elif self.server.should_exit:
            self.server.force_exit = True
        else:
            log.info("%s: shutting down", sig.name)
            self.server.should_exit = True


async def _serve(settings: Settings, rules: RuleSet, embedded: bool) -> None:
    import uvicorn

    from service.embedded.broker import EmbeddedBrokerError, embedded_broker
    from service.http.app import create_app
    from service.ingest.kafka_security import KafkaRefused
    from service.runtime import Runtime
    from service.store.schema import SchemaError

    signals = _Signals()
    async with contextlib.AsyncExitStack() as stack:
        if embedded:
            Path("var").mkdir(exist_ok=True)
            try:
                await stack.enter_async_context(
                    embedded_broker(settings.kafka_bootstrap_servers, Path("var/broker.log"))
                )
            except EmbeddedBrokerError as exc:
                raise _StartupError(str(exc)) from None
        try:
            runtime = await Runtime.create(settings, rules)
        except (ValueError, ConfigError) as exc:
            raise _StartupError(str(exc)) from None
        try:
            await stack.enter_async_context(runtime.running())
        except (SchemaError, KafkaRefused) as exc:
            raise _StartupError(str(exc)) from None
        except Exception as exc:
            raise _StartupError(
                f"cannot start: {exc.__class__.__name__}: {exc} "
                f"(Kafka at {settings.kafka_bootstrap_servers}, store {settings.database_url})"
            ) from None
        config = uvicorn.Config(
            create_app(runtime.http_services(), runtime.http_settings()),
            host=settings.http_host,
            port=settings.http_port,
            # No log_config: uvicorn's loggers propagate to ours (observability/logs.py),
            # its access lines included, in the one format.
            log_config=None,
            log_level=settings.log_level.lower(),
            lifespan="on",
        )
        server = uvicorn.Server(config)
        # Ours, not uvicorn's: uvicorn re-raises the signal once it stops serving, which
        # would kill the process before the runtime drains.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        signals.server = server
        startup = server.startup

        async def startup_then_banner(sockets: Any = None) -> None:
            await startup(sockets)
            # Only once the port is bound: the banner tells people (and scripts) to post now.
            if server.started:
                allocator.freeze_started()
                _banner(settings, embedded)

        server.startup = startup_then_banner  # type: ignore[method-assign]
        try:
            await server.serve()
        except SystemExit:
            server.started = False
        if not server.started:
            raise _StartupError(f"cannot serve HTTP on {settings.http_host}:{settings.http_port}")


def _banner(settings: Settings, embedded: bool) -> None:
    base = f"http://127.0.0.1:{settings.http_port}"
    mode = "embedded broker, SQLite, console pager" if embedded else "production"
    text = f"""
incidentd is running ({mode}).
  Alertmanager webhook:  POST {base}/api/v1/alerts/alertmanager
  Health / metrics:      {base}/healthz  {base}/readyz  {base}/metrics
  Remediation:           {base}/api/v1/remediation  (mode {settings.remediation_mode}, Kubernetes API: {settings.kube_api_url or "in-cluster/kubeconfig if present"})
  Kafka:                 {settings.kafka_bootstrap_servers}  (in: {settings.kafka_alerts_topic}, out: {settings.kafka_events_topic}, dead letters: {settings.kafka_dlq_topic})
  Try:   curl -XPOST {base}/api/v1/alerts/alertmanager -H 'content-type: application/json' \\
           -d '{{"version":"4","status":"firing","alerts":[{{"status":"firing","labels":{{"alertname":"ApiDown","namespace":"aragora"}}}}]}}'
  Watch: .venv/bin/incidentd tail {settings.kafka_events_topic}
  Act:   .venv/bin/incidentd incidents list   (then: incidents show|ack|resolve|assign ID)
Ctrl-C stops everything this started.
"""
    if logs.resolve_format(settings.log_format, sys.stdout) == "json":
        # A JSON stream stays all JSON: the banner is one record, its lines in the message.
        line = logs.json_line(
            "service.cli", text.strip(), mode=mode, http=base, kafka=settings.kafka_bootstrap_servers
        )
        typer.echo(line)
    else:
        typer.echo(text)


def main() -> None:
    app()
