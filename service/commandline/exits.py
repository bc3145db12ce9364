"""The exit codes of every ``incidentd`` command, as the README documents them; scripts
and CI branch on them, so each keeps its meaning."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    # rules check found problems; the service refused a request (404, 409, 422, 5xx); a
    # configuration or database error.
    PROBLEMS = 1
    # click's own code for a wrong flag, argument or command.
    USAGE = 2
    # nothing answered: the HTTP API (connection refused, timeout) or, for tail, a Kafka broker.
    UNREACHABLE = 3
    # the service answered 401: a missing or wrong token.
    UNAUTHORIZED = 4
