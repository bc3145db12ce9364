"""A secret that is configured but empty or unreadable stops the service at start with one
line saying which; it never runs open (a failed secret mount must not disable auth)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.config import ConfigError, Settings
from tests.support.service import RULES, free_port

FILE_SETTINGS = [name for name in Settings.model_fields if name.endswith("_file")]


def test_every_file_setting_is_covered() -> None:
    # A new *_FILE setting gets the same treatment without a change here.
    assert {"webhook_token_file", "opsgenie_api_key_file", "kube_token_file"} <= set(FILE_SETTINGS)


@pytest.mark.parametrize("name", FILE_SETTINGS)
def test_an_empty_file_is_refused(name: str, tmp_path: Path) -> None:
    empty = tmp_path / "secret"
    empty.write_text("  \n")
    with pytest.raises(ConfigError) as refused:
        Settings(**{name: empty})  # type: ignore[arg-type]
    assert str(refused.value) == f"INCIDENTD_{name.upper()}={empty}: the file is empty"


@pytest.mark.parametrize("name", FILE_SETTINGS)
def test_a_missing_file_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"INCIDENTD_{name.upper()}=.*: cannot read it: No such file"):
        Settings(**{name: tmp_path / "absent"})  # type: ignore[arg-type]


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "a-directory"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"INCIDENTD_WEBHOOK_TOKEN_FILE=.*: cannot read it"):
        Settings(webhook_token_file=folder)


def test_a_secret_set_but_empty_is_refused() -> None:
    with pytest.raises(ConfigError, match="INCIDENTD_WEBHOOK_TOKEN is set but empty"):
        Settings(webhook_token=SecretStr(""))


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file")
    with pytest.raises(ConfigError, match="INCIDENTD_WEBHOOK_TOKEN and INCIDENTD_WEBHOOK_TOKEN_FILE"):
        Settings(webhook_token=SecretStr("from-env"), webhook_token_file=tmp_path / "token")


def test_a_file_with_a_secret_is_read_and_trimmed(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    assert Settings(webhook_token_file=tmp_path / "token").webhook_token == SecretStr("s3cret")


async def test_the_service_stops_at_start_with_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("")
    env = {
        **os.environ,
        "INCIDENTD_WEBHOOK_TOKEN_FILE": str(empty),
        "INCIDENTD_RULES_DIR": str(RULES),
        "INCIDENTD_HTTP_PORT": str(free_port()),
        "INCIDENTD_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        # What a person at a terminal reads (off a terminal it is one JSON record: test_logs.py).
        "INCIDENTD_LOG_FORMAT": "text",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "run", "--embedded", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert err.decode().splitlines() == [
        f"incidentd: invalid configuration: INCIDENTD_WEBHOOK_TOKEN_FILE={empty}: the file is empty"
    ]
    assert b"is running" not in out


def test_the_database_url_is_read_from_its_file(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://incidentd:pa%24%24@db:5432/incidentd"
    (tmp_path / "url").write_text(url + "\n")
    settings = Settings(database_url_file=tmp_path / "url")
    # A plain string, as the store expects it, not a SecretStr.
    assert settings.database_url == url


def test_the_database_url_and_its_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "url").write_text("sqlite+aiosqlite:///a.db")
    with pytest.raises(ConfigError, match="INCIDENTD_DATABASE_URL and INCIDENTD_DATABASE_URL_FILE"):
        Settings(database_url="sqlite+aiosqlite:///b.db", database_url_file=tmp_path / "url")


def test_the_migration_command_uses_the_database_url_file(tmp_path: Path) -> None:
    # The chart's migration Job and pods pass only INCIDENTD_DATABASE_URL_FILE: a real
    # `incidentd db upgrade` must create the schema in the database that file names.
    database = tmp_path / "from-file.db"
    (tmp_path / "url").write_text(f"sqlite+aiosqlite:///{database}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENTD_")}
    env["INCIDENTD_DATABASE_URL_FILE"] = str(tmp_path / "url")
    result = subprocess.run(
        [sys.executable, "-m", "service", "db", "upgrade"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "database schema at" in result.stdout
    assert database.is_file() and database.stat().st_size > 0
    assert not (tmp_path / "var").exists(), "the default database was used, not the file's"


def test_the_kafka_user_and_password_come_from_their_files(tmp_path: Path) -> None:
    (tmp_path / "user").write_text("ABCDKEY\n")
    (tmp_path / "password").write_text("s3cret\n")
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username_file=tmp_path / "user",
        kafka_sasl_password_file=tmp_path / "password",
    )
    # The user is a plain string (it shows in errors and logs), the password stays a secret.
    assert settings.kafka_sasl_username == "ABCDKEY"
    assert settings.kafka_sasl_password == SecretStr("s3cret")
