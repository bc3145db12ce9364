"""incidentd: turns an incident runbook into an alert-driven service."""

__version__ = "0.1.0"
