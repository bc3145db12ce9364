"""Kafka TLS and SASL for every client the service makes: the FastStream broker (the
consumers, the webhook's producer, the outbox relay, dead letters), the topic admin and
``incidentd tail``. One place turns ``INCIDENTD_KAFKA_*`` into a TLS context and SASL
settings, so no client connects differently from another; and one place turns a refused
connection into a line that says why (aiokafka only says "Unable to bootstrap")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypedDict

from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from service.config import ConfigError, Settings

# How long the explaining probe waits for the broker before saying it did not answer.
PROBE_TIMEOUT_SECONDS = 10.0


class ClientSecurity(TypedDict):
    """The keyword arguments aiokafka's producer, consumer and admin client take."""

    security_protocol: str
    ssl_context: ssl.SSLContext | None
    sasl_mechanism: str
    sasl_plain_username: str | None
    sasl_plain_password: str | None


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str
    mechanism: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    client_certificate: bool = False

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def client(self) -> ClientSecurity:
        return ClientSecurity(
            security_protocol=self.protocol,
            ssl_context=self.ssl_context,
            sasl_mechanism=self.mechanism,
            sasl_plain_username=self.username,
            sasl_plain_password=self.password,
        )

    def faststream(self) -> BaseSecurity | None:
        """The same settings as FastStream's security object (it builds aiokafka's arguments
        from it, and names the server's security in its AsyncAPI document)."""
        if not self.sasl:
            return BaseSecurity(self.ssl_context) if self.ssl_context is not None else None
        assert self.username is not None and self.password is not None  # Settings checked it
        kinds: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
            "PLAIN": SASLPlaintext,
            "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512,
        }
        return kinds[self.mechanism](
            self.username, self.password, ssl_context=self.ssl_context, use_ssl=self.ssl_context is not None
        )

    def describe(self) -> str:
        if not self.sasl:
            return self.protocol
        return f"{self.protocol}, {self.mechanism} as {self.username!r}"


def kafka_security(settings: Settings) -> KafkaSecurity:
    """The security settings, with the TLS context built; a CA, certificate or key that
    cannot be loaded is a :class:`ConfigError` naming the setting."""
    password = settings.kafka_sasl_password
    return KafkaSecurity(
        protocol=settings.kafka_security_protocol,
        mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password is not None else None,
        ssl_context=_ssl_context(settings) if settings.kafka_security_protocol.endswith("SSL") else None,
        client_certificate=settings.kafka_ssl_cert_file is not None,
    )


def client_security(settings: Settings) -> ClientSecurity:
    return kafka_security(settings).client()


def _ssl_context(s: Settings) -> ssl.SSLContext:
    try:
        # Unset: the system's trust store, which already trusts MSK's and Confluent Cloud's CAs.
        context = ssl.create_default_context(cafile=s.kafka_ssl_ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"INCIDENTD_KAFKA_SSL_CA_FILE={s.kafka_ssl_ca_file}: not a PEM CA bundle: {_reason(exc)}"
        ) from None
    context.check_hostname = s.kafka_ssl_check_hostname
    if s.kafka_ssl_cert_file is not None and s.kafka_ssl_key_file is not None:
        key_password = s.kafka_ssl_key_password
        try:
            context.load_cert_chain(
                s.kafka_ssl_cert_file,
                s.kafka_ssl_key_file,
                key_password.get_secret_value() if key_password is not None else None,
            )
        except (ssl.SSLError, OSError) as exc:
            # OpenSSL says only "PEM lib" for a wrong password, a non-PEM file or a mismatched pair.
            why = (
                "not a PEM certificate and its key, or the key's password "
                "(INCIDENTD_KAFKA_SSL_KEY_PASSWORD) is wrong or missing"
                if isinstance(exc, ssl.SSLError)
                else _reason(exc)
            )
            raise ConfigError(
                f"INCIDENTD_KAFKA_SSL_CERT_FILE={s.kafka_ssl_cert_file}, INCIDENTD_KAFKA_SSL_KEY_FILE="
                f"{s.kafka_ssl_key_file}: cannot load the client certificate and key: {why}"
            ) from None
    return context


class KafkaRefused(Exception):
    """Kafka refuses the service what it needs to start (a connection, its topics); the
    message is one line saying why."""


@contextlib.asynccontextmanager
async def explained(settings: Settings, security: KafkaSecurity) -> AsyncIterator[None]:
    """Turns aiokafka's "Unable to bootstrap" into :class:`KafkaRefused` with the reason."""
    try:
        yield
    except KafkaConnectionError:
        raise KafkaRefused(await refused(settings.kafka_bootstrap_servers, security)) from None


async def refused(bootstrap: str, security: KafkaSecurity) -> str:
    """Why no client gets through to ``bootstrap``, in one line, from :func:`probe`."""
    return (
        f"cannot connect to Kafka at {bootstrap} ({security.describe()}): {await probe(bootstrap, security)}"
    )


async def probe(bootstrap: str, security: KafkaSecurity, timeout: float = PROBE_TIMEOUT_SECONDS) -> str:
    """Opens one connection to the first bootstrap server the way the clients do and says
    what stopped it: aiokafka logs each server's error and raises without it."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        connecting = create_conn(host, int(port), request_timeout_ms=int(timeout * 1000), **security.client())
        conn = await asyncio.wait_for(connecting, timeout)
    except ssl.SSLCertVerificationError as exc:
        return (
            f"TLS: the broker's certificate is not trusted ({exc.verify_message}); "
            "INCIDENTD_KAFKA_SSL_CA_FILE names the CA that signed it"
        )
    except ssl.SSLError as exc:
        return _tls_failure(exc)
    except SaslAuthenticationFailed as exc:
        return f"SASL authentication failed: {_reason(exc)}"
    except UnsupportedSaslMechanismError as exc:
        return _reason(exc)
    except KafkaConnectionError:
        return _closed(security)
    except TimeoutError:
        return f"no answer within {timeout:g}s (does the broker expect TLS, or not?)"
    except OSError as exc:
        # asyncio's strerror repeats the address: "Connect call failed ('127.0.0.1', 9092)".
        return f"nothing answers at {host}:{port} ({os.strerror(exc.errno) if exc.errno else _reason(exc)})"
    conn.close()
    return f"{host}:{port} answers, but the brokers it advertises do not (check its advertised listeners)"


def _closed(security: KafkaSecurity) -> str:
    # TLS 1.3 refuses a missing client certificate after the handshake: only a closed connection.
    certificate = security.ssl_context is not None and not security.client_certificate
    return "the broker closed the connection: does it expect another security protocol" + (
        ", or a client certificate (INCIDENTD_KAFKA_SSL_CERT_FILE and INCIDENTD_KAFKA_SSL_KEY_FILE)?"
        if certificate
        else "?"
    )


def _tls_failure(exc: ssl.SSLError) -> str:
    hints = {
        "WRONG_VERSION_NUMBER": "the broker does not speak TLS on this port "
        "(INCIDENTD_KAFKA_SECURITY_PROTOCOL)",
        "CERTIFICATE_REQUIRED": "the broker wants a client certificate "
        "(INCIDENTD_KAFKA_SSL_CERT_FILE and INCIDENTD_KAFKA_SSL_KEY_FILE)",
        "UNKNOWN_CA": "the broker does not trust the client certificate's CA",
    }
    for marker, hint in hints.items():
        if marker in str(exc):
            return f"TLS handshake failed: {hint}"
    return f"TLS handshake failed: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, KafkaError) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]  # the broker's own message, without aiokafka's "[Error 58] ..." prefix
    text = str(exc).strip()
    return " ".join(text.split()) if text else exc.__class__.__name__
