"""A rules directory with a noise.yaml of the test's own."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from tests.support.service import RULES


def noise_rules(tmp: Path, noise_yaml: str) -> Path:
    folder = tmp / "rules"
    if not folder.exists():
        shutil.copytree(RULES, folder)
    (folder / "noise.yaml").write_text(textwrap.dedent(noise_yaml))
    return folder
