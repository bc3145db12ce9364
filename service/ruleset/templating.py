"""Jinja2 in a sandbox: rules are edited by many people, templates must not reach Python."""

from __future__ import annotations

from typing import Annotated

from jinja2 import Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BeforeValidator

ENV = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


class TemplateError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"template line {line}: {message}")
        self.line = line
        self.message = message


def compile_template(source: str) -> Template:
    try:
        return ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(exc.lineno, exc.message or "syntax error") from None


def _compile(value: object) -> object:
    return compile_template(value) if isinstance(value, str) else value


TemplateField = Annotated[Template, BeforeValidator(_compile)]
