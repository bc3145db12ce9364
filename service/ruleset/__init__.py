"""The rules language: YAML files in ``rules/`` validated into pydantic models."""

from service.ruleset.errors import RuleProblem, RulesError
from service.ruleset.loader import load_rules
from service.ruleset.models import RuleSet

__all__ = ["RuleProblem", "RuleSet", "RulesError", "load_rules"]
