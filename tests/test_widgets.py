"""Shared widgets: the training chart draws each stage on its own step axis; downloads start no rerun."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from core.training.logline import stage_of


def test_stage_of_names_the_stage_that_logs_a_key() -> None:
    assert stage_of("vae_loss") == "vae" and stage_of("vae_val_mse") == "vae"
    assert stage_of("loss") == "unet" and stage_of("val_loss") == "unet"
    assert stage_of("eval.fid") is None


def chart_app() -> None:
    from app.widgets import loss_chart

    rows = [{"step": s, "vae_loss": 1.0 / s} for s in range(1, 6)] + [{"step": s, "loss": 0.5 / s} for s in range(1, 4)]
    loss_chart(rows, ("loss", "val_loss", "vae_loss", "vae_val_mse"))


def test_each_stage_gets_its_own_labelled_step_axis() -> None:
    at = AppTest.from_function(chart_app).run()
    assert not at.exception
    specs = [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")]
    titles = sorted(spec["encoding"]["x"]["title"] for spec in specs)
    assert titles == ["UNet step", "VAE step"]


def download_app() -> None:
    from pathlib import Path

    from app.widgets import file_download

    file_download("⬇️ Get it", Path("never-read-at-render.bin"), "it.bin", "application/octet-stream")


def test_a_download_reads_its_file_on_click_and_starts_no_rerun() -> None:
    """A rerun started by the click replaced the button's deferred file while the browser asked for it:
    the download was lost (the subject journey's kohya LoRA, once in CI)."""
    at = AppTest.from_function(download_app).run()
    assert not at.exception
    (button,) = at.get("download_button")
    assert button.proto.ignore_rerun
    assert button.proto.deferred_file_id and not button.proto.url  # a missing file is not read at render


def test_every_highlight_names_its_text_colour() -> None:
    """A background without a text colour is unreadable in one of the two themes."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    for path in [*repo.glob("pages/*.py"), *repo.glob("app/*.py")]:
        text = path.read_text()
        for literal in re.findall(r'"[^"\n]*background(?:-color)?:[^"\n]*"', text):
            assert re.search(r"(?<!background-)color:", literal), f"{path.name}: {literal} sets no text colour"
        assert "highlight_max(subset" not in text or "props=" in text, f"{path.name}: highlight_max with a bare background"


def test_job_log_leaves_library_chatter_to_the_file() -> None:
    from app.widgets import user_log

    text = "\n".join([
        "--- attempt 1 ---",
        "2026-12-01 22:40:52,461 INFO [vae] step 2/6 loss=0.79665",
        "[transformers] `CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`.",
        "[2026-12-01 22:40:54,800] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.",
        "/x/.venv/lib/python3.11/site-packages/foo/bar.py:12: FutureWarning: `x` is deprecated",
        "2026-12-01 22:40:55,612 INFO Checkpoint saved: /tmp/c",
        "error: The data folder /nope does not exist.",
    ])
    assert user_log(text, 30).splitlines() == [
        "--- attempt 1 ---",
        "2026-12-01 22:40:52,461 INFO [vae] step 2/6 loss=0.79665",
        "2026-12-01 22:40:55,612 INFO Checkpoint saved: /tmp/c",
        "error: The data folder /nope does not exist.",
    ]
    assert user_log(text, 2).splitlines() == ["2026-12-01 22:40:55,612 INFO Checkpoint saved: /tmp/c", "error: The data folder /nope does not exist."]
