"""`studio runs list|show|compare` over the real two-run MLflow store."""

from __future__ import annotations

import json

import pytest

from app.cli import main

pytestmark = pytest.mark.slow


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_show_compare(runs_store: dict, capsys: pytest.CaptureFixture) -> None:
    a, b = runs_store["runs"]["tiny-a"], runs_store["runs"]["tiny-b"]
    code, out, _ = run_cli(capsys, "runs", "list", "--status", "finished", "--sort", "val_loss", "--ascending", "--json")
    rows = json.loads(out)
    assert code == 0 and {r["name"] for r in rows} == {"tiny-a", "tiny-b"}
    assert rows[0]["val_loss"] <= rows[1]["val_loss"]

    code, out, _ = run_cli(capsys, "runs", "show", "tiny-b", "--json")
    shown = json.loads(out)
    assert shown["run_id"] == b and shown["params"]["unet.lr"] == "0.003"
    assert shown["sample_steps"]["prompt_00"] == [2, 4, 6]

    code, out, _ = run_cli(capsys, "runs", "compare", "tiny-a", b[:8], "--json")
    compared = json.loads(out)
    assert compared["runs"] == [a, b]
    assert compared["param_diff"]["unet.lr"] == ["0.001", "0.003"]
    assert set(compared["final_metrics"]["val_loss"]) == {a, b}

    code, out, _ = run_cli(capsys, "runs", "compare", "tiny-a", "tiny-b")
    assert code == 0 and "Parameters that differ" in out and "unet.lr" in out and "val_loss" in out


def test_errors_are_one_sentence(runs_store: dict, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, "runs", "show", "no-such-run")
    assert code == 2 and err.strip() == "error: No run is called 'no-such-run' and no run id starts with it."
    code, _, err = run_cli(capsys, "runs", "compare", "tiny-a")
    assert code == 2 and "Compare 2 to 4 runs" in err
