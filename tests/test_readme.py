"""The README stays true: every setting documented, every screenshot it shows present."""

from __future__ import annotations

import re

from core.settings import Settings
from tests.browser import REPO


def test_every_setting_is_documented() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [f"STUDIO_{name.upper()}" for name in Settings.model_fields if f"`STUDIO_{name.upper()}`" not in readme]
    assert not missing


def test_every_screenshot_exists() -> None:
    readme = (REPO / "README.md").read_text()
    for path in re.findall(r"\]\((docs/screenshots/[^)]+)\)", readme):
        assert (REPO / path).is_file(), path
