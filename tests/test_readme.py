"""The README is part of the contract: every setting and metric is documented."""

from pathlib import Path

from service.config import Settings
from service.observability.metrics import Metrics

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_opens_with_the_two_setup_commands() -> None:
    head = "\n".join(README.splitlines()[:8])
    assert "make run" in head and "make test" in head


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        f"INCIDENTD_{name.upper()}"
        for name in Settings.model_fields
        if f"`INCIDENTD_{name.upper()}`" not in README
    ]
    assert not missing, missing


def test_every_metric_is_in_the_readme() -> None:
    names = {m.name for m in Metrics().registry.collect()}
    # prometheus_client strips _total from counter family names.
    missing = [n for n in names if n not in README]
    assert names and not missing, missing
