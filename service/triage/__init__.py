"""Triage on open: read-only probes run when an incident opens, their findings posted after
the first page (``worker.py``), chosen by triage.yaml (``service/ruleset/triage.py``)."""
