"""A gate in front of the test broker that does what a secured Kafka listener does.

The bundled broker (Tansu 0.6.0) cannot be used for this: its TLS options refuse to be given
together (`--cert` "cannot be used with" `--key`), and its SCRAM users live in its storage,
which for the in-memory storage cannot be created once `--authentication` is on (creating one
is itself refused as unauthenticated). So the gate terminates TLS (mutual TLS if asked) and
performs Kafka's SASL exchange itself (SaslHandshake v1 + SaslAuthenticate, PLAIN and
SCRAM-SHA-256/512 checked against its own users, RFC 5802), then passes the bytes through to
the broker, which advertises the gate's address so that every connection comes through it.
Before authentication only ApiVersions is passed on, as a real broker allows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import ssl
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from service.embedded.broker import embedded_broker
from tests.support.service import free_port

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, CREATE_TOPICS = 18, 17, 36, 19
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED, TOPIC_AUTHORIZATION_FAILED = 33, 58, 29
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Kafka's own words for a refused login.
REFUSED = "Authentication failed during authentication due to invalid credentials with SASL mechanism {}"


class Refused(Exception):
    pass


class Plain:
    """RFC 4616: one message, ``authzid NUL user NUL password``."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.done = False

    def step(self, data: bytes) -> bytes:
        parts = data.split(b"\0")
        if len(parts) != 3 or self.users.get(parts[1].decode()) != parts[2].decode():
            raise Refused
        self.done = True
        return b""


class Scram:
    """RFC 5802, the server's side: client-first -> server-first, client-final -> server-final."""

    ITERATIONS = 4096

    def __init__(self, users: dict[str, str], hash_name: str) -> None:
        self.users = users
        self.hash_name = hash_name
        self.done = False
        self._first: tuple[str, str, bytes, str] | None = None  # bare, server-first, salt, user

    def step(self, data: bytes) -> bytes:
        text = data.decode()
        return self._server_first(text) if self._first is None else self._server_final(text)

    def _server_first(self, text: str) -> bytes:
        bare = text.split(",", 2)[2]  # after the GS2 header "n,,"
        fields = dict(p.split("=", 1) for p in bare.split(","))
        user = fields["n"].replace("=2C", ",").replace("=3D", "=")
        if user not in self.users:
            raise Refused
        salt = os.urandom(16)
        nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
        server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={self.ITERATIONS}"
        self._first = (bare, server_first, salt, user)
        return server_first.encode()

    def _server_final(self, text: str) -> bytes:
        assert self._first is not None
        bare, server_first, salt, user = self._first
        without_proof, _, proof = text.rpartition(",p=")
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        salted = hashlib.pbkdf2_hmac(self.hash_name, self.users[user].encode(), salt, self.ITERATIONS)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        signature = self._hmac(stored_key, auth_message)
        expected = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        if not hmac.compare_digest(expected, base64.b64decode(proof)):
            raise Refused
        self.done = True
        server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return b"v=" + base64.b64encode(server_signature)

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash_name).digest()


def _authenticator(mechanism: str, users: dict[str, str]) -> Plain | Scram:
    if mechanism == "PLAIN":
        return Plain(users)
    return Scram(users, "sha256" if mechanism == "SCRAM-SHA-256" else "sha512")


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _write_frame(writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(struct.pack(">i", len(body)) + body)


def _string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


@dataclass
class Request:
    api_key: int
    version: int
    correlation_id: int
    body: bytes  # after the (non-flexible) request header

    @classmethod
    def parse(cls, frame: bytes) -> Request:
        api_key, version, correlation_id, client_id_len = struct.unpack(">hhih", frame[:10])
        return cls(api_key, version, correlation_id, frame[10 + max(client_id_len, 0) :])

    def answer(self, body: bytes) -> bytes:
        return struct.pack(">i", self.correlation_id) + body


@dataclass
class Gate:
    """Accepts on ``port``; each connection is checked, then piped to ``upstream``."""

    upstream: tuple[str, int]
    port: int
    tls: ssl.SSLContext | None = None
    users: dict[str, str] | None = None
    refused: list[str] = field(default_factory=list)  # the mechanisms of refused logins
    # Answer CreateTopics with TOPIC_AUTHORIZATION_FAILED, as a cluster whose ACLs deny CREATE.
    deny_create_topics: bool = False
    _server: asyncio.Server | None = None
    _connections: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            if self.users is not None and not await self._authenticate(reader, writer, up_reader, up_writer):
                return
            if self.deny_create_topics:
                lock = asyncio.Lock()  # whole frames to the client, from either side
                await asyncio.gather(
                    _requests_but_create_topics(reader, up_writer, writer, lock),
                    _frames(up_reader, writer, lock),
                )
            else:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client or the broker went away: so does the other side
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await w.wait_closed()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        assert self.users is not None
        login: Plain | Scram | None = None
        mechanism = ""
        while login is None or not login.done:
            frame = await _read_frame(reader)
            request = Request.parse(frame)
            if request.api_key == API_VERSIONS:  # the broker's own answer
                _write_frame(up_writer, frame)
                _write_frame(writer, await _read_frame(up_reader))
            elif request.api_key == SASL_HANDSHAKE and request.version >= 1:
                mechanism = request.body[2 : 2 + struct.unpack(">h", request.body[:2])[0]].decode()
                error = 0 if mechanism in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
                enabled = struct.pack(">i", len(MECHANISMS)) + b"".join(_string(m) for m in MECHANISMS)
                _write_frame(writer, request.answer(struct.pack(">h", error) + enabled))
                if error:
                    return False
                login = _authenticator(mechanism, self.users)
            elif request.api_key == SASL_AUTHENTICATE and login is not None:
                if not await self._step(request, login, mechanism, writer):
                    return False
            else:
                return False  # anything else before authentication: a real broker hangs up too
            await writer.drain()
        return True

    async def _step(
        self, request: Request, login: Plain | Scram, mechanism: str, writer: asyncio.StreamWriter
    ) -> bool:
        (size,) = struct.unpack(">i", request.body[:4])
        lifetime = struct.pack(">q", 0) if request.version >= 1 else b""
        try:
            reply = login.step(request.body[4 : 4 + size])
        except Refused:
            self.refused.append(mechanism)
            body = struct.pack(">h", SASL_AUTHENTICATION_FAILED) + _string(REFUSED.format(mechanism))
            _write_frame(writer, request.answer(body + struct.pack(">i", 0) + lifetime))
            await writer.drain()
            return False
        body = struct.pack(">h", 0) + _string(None) + struct.pack(">i", len(reply)) + reply
        _write_frame(writer, request.answer(body + lifetime))
        return True


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _frames(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lock: asyncio.Lock) -> None:
    with _closes(writer):
        while True:
            frame = await _read_frame(reader)
            async with lock:
                _write_frame(writer, frame)
                await writer.drain()


@contextlib.contextmanager
def _closes(writer: asyncio.StreamWriter) -> Iterator[None]:
    """One side ended: the other is closed too (as :func:`_pipe` does at the end of its data)."""
    try:
        yield
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _requests_but_create_topics(
    reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    writer: asyncio.StreamWriter,
    lock: asyncio.Lock,
) -> None:
    with _closes(up_writer):
        while True:
            await _pass_or_deny(await _read_frame(reader), up_writer, writer, lock)


async def _pass_or_deny(
    frame: bytes, up_writer: asyncio.StreamWriter, writer: asyncio.StreamWriter, lock: asyncio.Lock
) -> None:
    request = Request.parse(frame)
    if request.api_key != CREATE_TOPICS:
        _write_frame(up_writer, frame)
        await up_writer.drain()
        return
    # CreateTopics v0-v4 answer: [throttle_time_ms (v2+)] [name, error_code, error_message (v1+)]
    names = _topic_names(request.body)
    answer = struct.pack(">i", 0) if request.version >= 2 else b""
    answer += struct.pack(">i", len(names))
    for name in names:
        answer += _string(name) + struct.pack(">h", TOPIC_AUTHORIZATION_FAILED)
        answer += _string("Authorization failed.") if request.version >= 1 else b""
    async with lock:
        _write_frame(writer, request.answer(answer))
        await writer.drain()


def _topic_names(body: bytes) -> list[str]:
    """The topic names of a CreateTopics v0-v4 request."""
    names, at = [], 4
    for _ in range(struct.unpack_from(">i", body)[0]):
        (size,) = struct.unpack_from(">h", body, at)
        names.append(body[at + 2 : at + 2 + size].decode())
        at += 2 + size + 4 + 2  # name, num_partitions, replication_factor
        (assignments,) = struct.unpack_from(">i", body, at)
        at += 4
        for _ in range(max(assignments, 0)):
            (brokers,) = struct.unpack_from(">i", body, at + 4)
            at += 8 + 4 * max(brokers, 0)
        (configs,) = struct.unpack_from(">i", body, at)
        at += 4
        for _ in range(max(configs, 0)):
            for _ in range(2):  # name, value (nullable)
                (size,) = struct.unpack_from(">h", body, at)
                at += 2 + max(size, 0)
    return names


@contextlib.asynccontextmanager
async def gated_broker(
    log_dir: Path,
    tls: ssl.SSLContext | None = None,
    users: dict[str, str] | None = None,
    deny_create_topics: bool = False,
) -> AsyncIterator[Gate]:
    """A broker of its own behind a gate; clients bootstrap from ``127.0.0.1:<gate.port>``."""
    gate = Gate(("127.0.0.1", free_port()), free_port(), tls, users, deny_create_topics=deny_create_topics)
    bootstrap = f"127.0.0.1:{gate.upstream[1]}"
    async with embedded_broker(bootstrap, log_dir / "broker.log", advertised=f"127.0.0.1:{gate.port}"):
        await gate.start()
        try:
            yield gate
        finally:
            await gate.stop()
