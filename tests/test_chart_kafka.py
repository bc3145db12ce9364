"""The chart's Kafka TLS and SASL values: secrets mounted as files the service reads through
INCIDENTD_KAFKA_*_FILE, and values that cannot work refused at render time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.ingest.kafka_security import kafka_security
from tests.support.tls_certs import KEY_PASSWORD, make_certs
from tests.test_deploy import _container, _helm, _mount_of, _one, helm_timeout, helm_venv

__all__ = ["helm_venv"]  # the fixture, imported for this module's tests

STRIMZI = {
    "kafka": {
        "bootstrapServers": "my-cluster-kafka-bootstrap:9093",
        "securityProtocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": "incidentd", "existingSecret": "incidentd-kafka"},
        "tls": {
            "ca": {"existingSecret": "my-cluster-cluster-ca-cert", "key": "ca.crt"},
            "clientCertificate": {"existingSecret": "incidentd-user", "passwordKey": "user.password"},
        },
    }
}


def _env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(docs)["env"]}


@helm_timeout
def test_sasl_ssl_with_a_ca_and_a_client_certificate(helm_venv: Path, tmp_path: Path) -> None:
    result, docs, _ = _helm(tmp_path, values=STRIMZI)
    assert result.returncode == 0, result.stderr
    env = _env(docs)
    assert env["INCIDENTD_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["INCIDENTD_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["INCIDENTD_KAFKA_SASL_USERNAME"] == "incidentd"
    assert "INCIDENTD_KAFKA_SASL_PASSWORD" not in env, "a secret is a file, never an environment variable"
    files = {
        "INCIDENTD_KAFKA_SASL_PASSWORD_FILE": ("incidentd-kafka", "password"),
        "INCIDENTD_KAFKA_SSL_CA_FILE": ("my-cluster-cluster-ca-cert", "ca.crt"),
        "INCIDENTD_KAFKA_SSL_CERT_FILE": ("incidentd-user", "user.crt"),
        "INCIDENTD_KAFKA_SSL_KEY_FILE": ("incidentd-user", "user.key"),
        "INCIDENTD_KAFKA_SSL_KEY_PASSWORD_FILE": ("incidentd-user", "user.password"),
    }
    for name, (secret, key) in files.items():
        path = env[name]
        assert path.endswith("/" + key), name
        volume = _mount_of(docs, path)
        sources = volume["projected"]["sources"] if "projected" in volume else [{"secret": volume["secret"]}]
        names = {s["secret"].get("name", s["secret"].get("secretName")) for s in sources if key in _keys(s)}
        assert names == {secret}, name


def _keys(source: dict[str, Any]) -> set[str]:
    return {item["key"] for item in source["secret"]["items"]}


@helm_timeout
def test_the_rendered_settings_load_and_build_the_tls_context(
    helm_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment the chart renders, with each mounted file stood in by a real one,
    is settings the service accepts and a TLS context that loads the encrypted client key."""
    result, docs, _ = _helm(tmp_path, values=STRIMZI)
    assert result.returncode == 0, result.stderr
    certs = make_certs(tmp_path)
    (tmp_path / "password").write_text("sasl-pw\n")
    (tmp_path / "user.password").write_text(KEY_PASSWORD + "\n")
    stand_ins = {
        "password": tmp_path / "password",
        "ca.crt": certs.ca,
        "user.crt": certs.client_cert,
        "user.key": certs.client_key,
        "user.password": tmp_path / "user.password",
    }
    for name in [n for n in _env(docs) if n.startswith("INCIDENTD_")]:
        monkeypatch.delenv(name, raising=False)
    for name, value in _env(docs).items():
        if not isinstance(value, str) or (name.endswith("_FILE") and not name.startswith("INCIDENTD_KAFKA")):
            continue  # from a Secret (the database URL), or another secret's mount
        if name.endswith("_FILE"):
            value = str(stand_ins[Path(value).name])
        monkeypatch.setenv(name, value)
    settings = Settings()
    security = kafka_security(settings)
    assert security.describe() == "SASL_SSL, SCRAM-SHA-512 as 'incidentd'"
    assert security.password == "sasl-pw"
    assert security.ssl_context is not None and security.client_certificate


@helm_timeout
def test_the_username_may_come_from_the_secret(helm_venv: Path, tmp_path: Path) -> None:
    values = {
        "kafka": {**STRIMZI["kafka"], "sasl": {"existingSecret": "confluent", "usernameKey": "api-key"}}
    }
    result, docs, _ = _helm(tmp_path, values=values)
    assert result.returncode == 0, result.stderr
    assert _env(docs)["INCIDENTD_KAFKA_SASL_USERNAME"] == {
        "secretKeyRef": {"name": "confluent", "key": "api-key"}
    }


@helm_timeout
def test_plaintext_by_default_mounts_nothing_for_kafka(helm_venv: Path, tmp_path: Path) -> None:
    result, docs, _ = _helm(tmp_path)
    assert result.returncode == 0, result.stderr
    kafka_env = {k: v for k, v in _env(docs).items() if "_SASL_" in k or "_SSL_" in k or "SECURITY" in k}
    assert kafka_env == {"INCIDENTD_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if v["name"].startswith("kafka")]


@helm_timeout
@pytest.mark.parametrize(
    ("kafka", "expected"),
    [
        (
            {"securityProtocol": "SASL_SSL", "sasl": {"username": "u"}},
            "at '/kafka/sasl/existingSecret': minLength",
        ),
        ({"securityProtocol": "SASL_PLAINTEXT", "sasl": {"existingSecret": "s"}}, "set kafka.sasl.username"),
        (
            {"tls": {"ca": {"existingSecret": "ca", "key": "ca.crt"}}},
            "kafka.securityProtocol is PLAINTEXT: use SSL or SASL_SSL",
        ),
        ({"securityProtocol": "TLS"}, "at '/kafka/securityProtocol': value must be one of"),
        (
            {
                "securityProtocol": "SASL_SSL",
                "sasl": {"existingSecret": "s", "username": "u", "mechanism": "GSSAPI"},
            },
            "/kafka/sasl/mechanism",
        ),
    ],
    ids=[
        "sasl-without-password-secret",
        "sasl-without-username",
        "tls-files-without-tls",
        "unknown-protocol",
        "unsupported-mechanism",
    ],
)
def test_kafka_values_that_cannot_work_are_refused(
    helm_venv: Path, tmp_path: Path, kafka: dict[str, Any], expected: str
) -> None:
    result, _, _ = _helm(tmp_path, values={"kafka": {"bootstrapServers": "k:9093", **kafka}})
    assert result.returncode == 1, f"passed:\n{result.stderr}"
    assert expected in result.stderr
