"""What a command can be refused for; the HTTP layer answers 404, 409 and 422 for these, the
command consumer dead-letters them with the message."""

from __future__ import annotations


class NotFound(Exception):
    """The command names something that does not exist."""


class Conflict(Exception):
    """The command makes no sense in the current state (e.g. ack a resolved incident)."""


class Invalid(Exception):
    """The command is well-formed but names what the rules do not know (a severity, a role)."""
