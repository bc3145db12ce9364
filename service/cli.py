"""``incidentd``: run the service, check rules, print the event schema."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from service.config import Settings
from service.ruleset import RulesError, RuleSet, load_rules

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
rules_app = typer.Typer(no_args_is_help=True, help="Validate the rules in rules/.")
app.add_typer(rules_app, name="rules")


def embedded_defaults(settings: Settings) -> dict[str, object]:
    # One database per HTTP port: two embedded copies side by side must not share
    # state (each would publish and page the other's incidents).
    return {
        "database_url": f"sqlite+aiosqlite:///./var/incidentd-{settings.http_port}.db",
        "pagers": ["console"],
    }


def _fail(message: str) -> typer.Exit:
    typer.echo(f"incidentd: {message}", err=True)
    return typer.Exit(code=1)


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"INCIDENTD_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        raise _fail("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except OSError as exc:
        raise _fail(f"cannot read a secret file: {exc}") from None


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
        f"in mode {rules.remediation.mode})"
    )


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
    overrides: dict[str, object] = {}
    if embedded:
        env = _settings()
        overrides = {k: v for k, v in embedded_defaults(env).items() if k not in env.model_fields_set}
        if env.remediation_mode == "enforce":
            # The embedded mode is a demo: it never changes a cluster.
            typer.echo("incidentd: --embedded caps remediation at dry-run", err=True)
            overrides["remediation_mode"] = "dry-run"
    settings = _settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        rules = load_rules(settings.rules_dir)
    except RulesError as exc:
        raise _fail("rules are invalid, not starting:\n" + str(exc)) from None
    try:
        asyncio.run(_serve(settings, rules, embedded))
    except KeyboardInterrupt:
        pass
    except _StartupError as exc:
        raise _fail(str(exc)) from None


class _StartupError(Exception):
    pass


async def _serve(settings: Settings, rules: RuleSet, embedded: bool) -> None:
    import uvicorn

    from service.embedded.broker import EmbeddedBrokerError, embedded_broker
    from service.http.app import create_app
    from service.runtime import Runtime

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
        except ValueError as exc:
            raise _StartupError(str(exc)) from None
        try:
            await stack.enter_async_context(runtime.running())
        except Exception as exc:
            raise _StartupError(
                f"cannot start: {exc.__class__.__name__}: {exc} "
                f"(Kafka at {settings.kafka_bootstrap_servers}, store {settings.database_url})"
            ) from None
        config = uvicorn.Config(
            create_app(runtime.http_services(), runtime.http_settings()),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            lifespan="on",
        )
        server = uvicorn.Server(config)
        startup = server.startup

        async def startup_then_banner(sockets: Any = None) -> None:
            await startup(sockets)
            # Only once the port is bound: the banner tells people (and scripts) to post now.
            if server.started:
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
    typer.echo(
        f"""
incidentd is running ({mode}).
  Alertmanager webhook:  POST {base}/api/v1/alerts/alertmanager
  Health / metrics:      {base}/healthz  {base}/readyz  {base}/metrics
  Remediation:           {base}/api/v1/remediation  (mode {settings.remediation_mode}, Kubernetes API: {settings.kube_api_url or "in-cluster/kubeconfig if present"})
  Kafka:                 {settings.kafka_bootstrap_servers}  (in: {settings.kafka_alerts_topic}, out: {settings.kafka_events_topic}, dead letters: {settings.kafka_dlq_topic})
  Try:   curl -XPOST {base}/api/v1/alerts/alertmanager -H 'content-type: application/json' \\
           -d '{{"version":"4","status":"firing","alerts":[{{"status":"firing","labels":{{"alertname":"ApiDown","namespace":"aragora"}}}}]}}'
  Watch: .venv/bin/incidentd tail {settings.kafka_events_topic}
Ctrl-C stops everything this started.
""",
        err=False,
    )


@app.command()
def tail(
    topic: str = typer.Argument("incidents.events"),
    from_beginning: bool = typer.Option(True, help="start at the oldest record"),
) -> None:
    """Print a topic's records as they arrive (Ctrl-C to stop)."""
    settings = _settings()

    async def _tail() -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            auto_offset_reset="earliest" if from_beginning else "latest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async for rec in consumer:
                value = (rec.value or b"").decode(errors="replace")
                headers = {k: v.decode(errors="replace") for k, v in rec.headers}
                reason = headers.get("incidentd-dlq-reason")
                prefix = f"[{rec.partition}@{rec.offset}] " + (f"(dead letter: {reason}) " if reason else "")
                typer.echo(prefix + value)
        finally:
            await consumer.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail())


def main() -> None:
    app()
