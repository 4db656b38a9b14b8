"""The Export page through AppTest: the empty state, and an export's parity report and files."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest


def export_page() -> None:
    from pages.export import render

    render()


def test_empty_studio_shows_how_to_start(home: Path) -> None:
    at = AppTest.from_function(export_page, default_timeout=60).run()
    assert not at.exception
    assert any("No exports yet" in i.value for i in at.info)
    assert at.button[0].disabled  # nothing to export yet


@pytest.mark.slow
def test_export_report_files_and_download(exported: dict) -> None:
    at = AppTest.from_function(export_page, default_timeout=60).run()
    assert not at.exception and not at.error
    assert "tiny-trained" in at.selectbox[0].options[0]
    frames = [df.value for df in at.dataframe]
    report = frames[0]
    assert list(report["component"]) == ["text_encoder", "unet", "vae_decoder", "vae_encoder"]
    assert (report["max rel error"] < 1e-4).all()
    assert "100.0 dB" in at.metric[0].value or float(at.metric[0].value.split()[0]) >= 40
    assert "unet/model.onnx" in set(frames[1]["file"])
    assert any("within tolerance" in m.value for m in at.markdown)


@pytest.mark.slow
def test_folder_export_error_is_one_sentence(exported: dict, tmp_path: Path) -> None:
    at = AppTest.from_function(export_page, default_timeout=60).run()
    at.selectbox[0].select(at.selectbox[0].options[-1]).run()
    at.text_input[0].input(str(tmp_path / "nowhere")).run()
    at.button[0].click().run()
    assert not at.exception
    assert "does not exist" in at.error[0].value
