"""Kafka over TLS (mutual TLS too) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512): every client
the service makes connects with INCIDENTD_KAFKA_* alone, and a refused connection stops the
start with one line saying why. The broker is the bundled one behind a gate that does the
TLS and SASL (tests/support/kafka_gate.py says why the broker cannot do them itself)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from service.config import ConfigError, Settings
from service.ingest.kafka_security import client_security, kafka_security, probe
from service.ingest.topics import ensure_topics
from tests.support.kafka import produce
from tests.support.kafka_gate import Gate, gated_broker
from tests.support.payloads import alert, body, webhook
from tests.support.service import RULES, free_port, run_service, test_settings
from tests.support.tls_certs import KEY_PASSWORD, Certs, make_certs

USERS = {"incidentd": "s3cret-pw"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
async def sasl_gate(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gate]:
    async with gated_broker(tmp_path_factory.mktemp("sasl"), users=USERS) as gate:
        yield gate


@pytest.fixture(scope="module")
async def mtls_gate(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> AsyncIterator[Gate]:
    """TLS that also wants the client's certificate."""
    async with gated_broker(tmp_path_factory.mktemp("mtls"), tls=certs.server_context(True)) as gate:
        yield gate


@pytest.fixture(scope="module")
async def sasl_ssl_gate(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> AsyncIterator[Gate]:
    folder = tmp_path_factory.mktemp("sasl-ssl")
    async with gated_broker(folder, tls=certs.server_context(False), users=USERS) as gate:
        yield gate


def _secret_file(tmp: Path, name: str, value: str) -> Path:
    path = tmp / name
    path.write_text(value + "\n")
    return path


def sasl_env(
    gate: Gate, mechanism: str, password_file: Path, protocol: str = "SASL_PLAINTEXT"
) -> dict[str, Any]:
    return {
        "kafka_bootstrap_servers": f"127.0.0.1:{gate.port}",
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": "incidentd",
        "kafka_sasl_password_file": password_file,
    }


def mtls_env(gate: Gate, certs: Certs, key_password_file: Path) -> dict[str, Any]:
    return {
        "kafka_bootstrap_servers": f"127.0.0.1:{gate.port}",
        "kafka_security_protocol": "SSL",
        "kafka_ssl_ca_file": certs.ca,
        "kafka_ssl_cert_file": certs.client_cert,
        "kafka_ssl_key_file": certs.client_key,
        "kafka_ssl_key_password_file": key_password_file,
    }


async def _round_trip(settings: Settings) -> bytes:
    """Creates the service's topics with its admin settings, then produces a record and
    consumes it back with its client settings."""
    topic = f"alerts-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings.model_copy(update={"kafka_alerts_topic": topic}))
    security = client_security(settings)
    bootstrap = settings.kafka_bootstrap_servers
    await produce(bootstrap, topic, [b"through the gate"], security=security)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **security)
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    return bytes(record.value or b"")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_produce_and_consume(sasl_gate: Gate, mechanism: str, tmp_path: Path) -> None:
    password = _secret_file(tmp_path, "password", USERS["incidentd"])
    settings = Settings(**sasl_env(sasl_gate, mechanism, password))
    assert await _round_trip(settings) == b"through the gate"


async def test_mutual_tls_produce_and_consume_with_an_encrypted_key(
    mtls_gate: Gate, certs: Certs, tmp_path: Path
) -> None:
    settings = Settings(**mtls_env(mtls_gate, certs, _secret_file(tmp_path, "key-pass", KEY_PASSWORD)))
    assert await _round_trip(settings) == b"through the gate"


async def test_the_service_runs_over_sasl_ssl(sasl_ssl_gate: Gate, certs: Certs, tmp_path: Path) -> None:
    """The whole service (topic admin, webhook producer, alerts consumer, outbox relay) over
    SASL_SSL with SCRAM-SHA-512: an alert posted comes out as an incident event."""
    env = sasl_env(
        sasl_ssl_gate, "SCRAM-SHA-512", _secret_file(tmp_path, "pw", USERS["incidentd"]), "SASL_SSL"
    )
    settings = test_settings(env["kafka_bootstrap_servers"], tmp_path, **env, kafka_ssl_ca_file=certs.ca)
    async with run_service(settings) as svc:
        answer = await svc.post_webhook(body(webhook(alert("GateTest", namespace="gate"))))
        assert answer.status_code == 202
        await svc.events.wait_types({"incident.opened": 1})
        opened = svc.events.of_type("incident.opened")
    assert [e["data"]["group_labels"]["alertname"] for e in opened] == ["GateTest"]
    assert sasl_ssl_gate.refused == []


def _service_env(tmp: Path, settings: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENTD_")}
    env |= {f"INCIDENTD_{k.upper()}": str(v) for k, v in settings.items()}
    env |= {
        "INCIDENTD_RULES_DIR": str(RULES),
        "INCIDENTD_HTTP_PORT": str(free_port()),
        "INCIDENTD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'state.db'}",
        # What a person at a terminal reads (JSON, the default off a terminal: tests/test_logs.py).
        "INCIDENTD_LOG_FORMAT": "text",
    }
    return env


async def _incidentd(tmp: Path, env: dict[str, str], *args: str) -> tuple[int | None, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", *args, cwd=tmp, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode, err.decode().splitlines()


def _the_one_line(stderr: list[str]) -> str:
    assert not any("Traceback" in line for line in stderr), "\n".join(stderr)
    ours = [line for line in stderr if line.startswith("incidentd: ")]
    assert len(ours) == 1, "\n".join(stderr)
    return ours[0]


async def test_a_wrong_password_stops_the_start_with_one_line(sasl_gate: Gate, tmp_path: Path) -> None:
    settings = sasl_env(sasl_gate, "SCRAM-SHA-512", _secret_file(tmp_path, "pw", "not-the-password"))
    code, stderr = await _incidentd(tmp_path, _service_env(tmp_path, settings), "run")
    assert code == 1
    assert _the_one_line(stderr) == (
        f"incidentd: cannot connect to Kafka at 127.0.0.1:{sasl_gate.port} (SASL_PLAINTEXT, SCRAM-SHA-512 "
        "as 'incidentd'): SASL authentication failed: Authentication failed during authentication due to "
        "invalid credentials with SASL mechanism SCRAM-SHA-512"
    )
    assert "SCRAM-SHA-512" in sasl_gate.refused


async def test_an_untrusted_ca_stops_the_start_with_one_line(
    mtls_gate: Gate, certs: Certs, tmp_path: Path
) -> None:
    settings = mtls_env(mtls_gate, certs, _secret_file(tmp_path, "key-pass", KEY_PASSWORD))
    settings["kafka_ssl_ca_file"] = certs.other_ca
    code, stderr = await _incidentd(tmp_path, _service_env(tmp_path, settings), "run")
    assert code == 1
    line = _the_one_line(stderr)
    assert line.startswith(f"incidentd: cannot connect to Kafka at 127.0.0.1:{mtls_gate.port} (SSL): ")
    assert line.endswith("INCIDENTD_KAFKA_SSL_CA_FILE names the CA that signed it")
    assert "TLS: the broker's certificate is not trusted (" in line


async def test_topics_kafka_will_not_create_stop_the_start_with_one_line(tmp_path: Path) -> None:
    """A managed cluster whose ACLs deny the service's user CREATE: the start stops and says
    so, rather than running with no topics to consume."""
    async with gated_broker(tmp_path, users=USERS, deny_create_topics=True) as gate:
        settings = sasl_env(gate, "SCRAM-SHA-256", _secret_file(tmp_path, "pw", USERS["incidentd"]))
        code, stderr = await _incidentd(tmp_path, _service_env(tmp_path, settings), "run")
    assert code == 1
    assert _the_one_line(stderr) == (
        "incidentd: Kafka would not create the topic 'alerts' (TopicAuthorizationFailedError: Authorization "
        "failed.); grant the user CREATE, or create the topics and set INCIDENTD_KAFKA_CREATE_TOPICS=false"
    )


async def test_tail_reads_over_sasl_ssl(sasl_ssl_gate: Gate, certs: Certs, tmp_path: Path) -> None:
    settings = sasl_env(
        sasl_ssl_gate, "SCRAM-SHA-256", _secret_file(tmp_path, "pw", USERS["incidentd"]), "SASL_SSL"
    )
    settings["kafka_ssl_ca_file"] = certs.ca
    topic = f"tail-{uuid.uuid4().hex[:8]}"
    await ensure_topics(Settings(**settings, kafka_alerts_topic=topic))
    await produce(
        settings["kafka_bootstrap_servers"], topic, [json.dumps({"n": 1}).encode()],
        security=client_security(Settings(**settings)),
    )  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "tail", topic, cwd=tmp_path, env=_service_env(tmp_path, settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert re.fullmatch(r'\[\d@0\] \{"n": 1\}\n', line.decode()), line
    finally:
        proc.terminate()
        await proc.wait()


async def test_tail_with_a_wrong_password_prints_one_line(sasl_gate: Gate, tmp_path: Path) -> None:
    settings = sasl_env(sasl_gate, "PLAIN", _secret_file(tmp_path, "pw", "wrong"))
    code, stderr = await _incidentd(tmp_path, _service_env(tmp_path, settings), "tail", "alerts")
    assert code == 3  # the CLI's exit code for a broker it cannot get through to
    assert _the_one_line(stderr).endswith(
        "SASL authentication failed: Authentication failed during authentication due to invalid "
        "credentials with SASL mechanism PLAIN"
    )


async def test_tls_to_a_plain_listener_says_so(kafka: str) -> None:
    """The session's broker speaks plain Kafka: it takes the TLS hello for the start of a
    request and waits for the rest, so the client is told what to suspect."""
    security = kafka_security(Settings(kafka_bootstrap_servers=kafka, kafka_security_protocol="SSL"))
    reason = await probe(kafka, security, timeout=1.0)
    assert reason == "no answer within 1s (does the broker expect TLS, or not?)"


async def test_a_missing_client_certificate_is_named(mtls_gate: Gate, certs: Certs) -> None:
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{mtls_gate.port}",
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=certs.ca,
    )
    reason = await probe(settings.kafka_bootstrap_servers, kafka_security(settings))
    assert "client certificate (INCIDENTD_KAFKA_SSL_CERT_FILE and INCIDENTD_KAFKA_SSL_KEY_FILE)" in reason


async def test_nothing_listening_is_named() -> None:
    port = free_port()
    reason = await probe(f"127.0.0.1:{port}", kafka_security(Settings()))
    assert reason == f"nothing answers at 127.0.0.1:{port} (Connection refused)"


# Settings that cannot work together are refused before anything connects.


def test_sasl_without_a_password_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"SASL_SSL needs INCIDENTD_KAFKA_SASL_USERNAME and INCIDENTD_KAFKA_SASL_PASSWORD"
    ):
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="incidentd")


def test_a_password_without_sasl_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"PROTOCOL=PLAINTEXT does not use SASL"):
        Settings(kafka_sasl_username="incidentd", kafka_sasl_password=SecretStr("pw"))


def test_tls_files_without_tls_are_refused(certs: Certs) -> None:
    with pytest.raises(
        ConfigError, match=r"INCIDENTD_KAFKA_SSL_CA_FILE is set but .*=SASL_PLAINTEXT does not use TLS"
    ):
        Settings(
            kafka_security_protocol="SASL_PLAINTEXT", kafka_ssl_ca_file=certs.ca,
            kafka_sasl_username="u", kafka_sasl_password=SecretStr("p"),
        )  # fmt: skip


def test_a_certificate_without_its_key_is_refused(certs: Certs) -> None:
    with pytest.raises(
        ConfigError, match="INCIDENTD_KAFKA_SSL_CERT_FILE and INCIDENTD_KAFKA_SSL_KEY_FILE go together"
    ):
        Settings(kafka_security_protocol="SSL", kafka_ssl_cert_file=certs.client_cert)


def test_a_wrong_key_password_is_refused(certs: Certs) -> None:
    settings = Settings(
        kafka_security_protocol="SSL", kafka_ssl_cert_file=certs.client_cert, kafka_ssl_key_file=certs.client_key,
        kafka_ssl_key_password=SecretStr("not-it"),
    )  # fmt: skip
    with pytest.raises(
        ConfigError,
        match=r"cannot load the client certificate and key: .* the key's password \(INCIDENTD_KAFKA_SSL_KEY_PASSWORD\) is wrong",
    ):
        kafka_security(settings)


async def test_a_wrong_key_password_stops_the_start_with_one_line(certs: Certs, tmp_path: Path) -> None:
    settings = {
        "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cert_file": certs.client_cert,
        "kafka_ssl_key_file": certs.client_key,
        "kafka_ssl_key_password_file": _secret_file(tmp_path, "key-pass", "not-it"),
    }
    code, stderr = await _incidentd(tmp_path, _service_env(tmp_path, settings), "run")
    assert code == 1
    line = _the_one_line(stderr)
    assert line.startswith(f"incidentd: INCIDENTD_KAFKA_SSL_CERT_FILE={certs.client_cert}, ")
    assert line.endswith(
        "cannot load the client certificate and key: not a PEM certificate and its key, or the key's "
        "password (INCIDENTD_KAFKA_SSL_KEY_PASSWORD) is wrong or missing"
    )


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    ca = _secret_file(tmp_path, "ca.pem", "not a certificate")
    with pytest.raises(ConfigError, match=rf"INCIDENTD_KAFKA_SSL_CA_FILE={ca}: not a PEM CA bundle"):
        kafka_security(Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=ca))


def test_the_password_file_is_read(tmp_path: Path) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="incidentd",
        kafka_sasl_password_file=_secret_file(tmp_path, "pw", "from-the-file"),
    )  # fmt: skip
    security = client_security(settings)
    assert security["sasl_plain_password"] == "from-the-file"
    assert security["security_protocol"] == "SASL_SSL"
    assert security["ssl_context"] is not None
