"""The Runs page in AppTest, over the real two-run MLflow store of `runs_home`."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.slow


def page() -> None:
    from pages.runs import render

    render()


def open_page(**query: str) -> AppTest:
    at = AppTest.from_function(page, default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def listed(at: AppTest) -> list[str]:
    """The run names in the Runs table (plain HTML in a markdown element, each a link to its detail)."""
    table = next(m.value for m in at.markdown if "runs-table" in m.value)
    return re.findall(r'target="_self">([^<]*)</a>', table)


def test_run_table_escapes_names_and_links_to_detail() -> None:
    from core.tracking.runs import RunRow
    from pages.runs import run_table

    row = RunRow("ab" * 16, "<b>x</b> & y", "FINISHED", "digits@1", "tiny", "all", "local", 10, 0.5, None,
                 datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc), 90.0)
    html = run_table([row])
    assert '<a href="?run=' + "ab" * 16 + '" title="run ' + "ab" * 16 + '" target="_self">&lt;b&gt;x&lt;/b&gt; &amp; y</a>' in html
    assert '<span title="2026-01-02 03:04:00">Jan 02 03:04</span>' in html and "<td>1.5</td>" in html and "<td>–</td>" in html


def test_empty_store_explains_what_to_do(home) -> None:
    at = open_page()
    assert not at.exception
    assert "No runs yet" in at.info[0].value


def test_list_filters_and_selection_to_compare(runs_store: dict) -> None:
    at = open_page()
    assert not at.exception and not at.error
    assert set(listed(at)) == {"tiny-a", "tiny-b", "broken-small"}

    at.multiselect(key="runs-status").set_value(["FINISHED"]).run()
    assert set(listed(at)) == {"tiny-a", "tiny-b"}
    at.text_input(key="runs-search").set_value("tiny-b").run()
    assert listed(at) == ["tiny-b"]
    at.text_input(key="runs-search").set_value("").run()
    at.text_input(key="runs-tag").set_value("job_id=nobody").run()
    assert "No runs match" in at.info[0].value
    at.text_input(key="runs-tag").set_value("").run()

    a, b = runs_store["runs"]["tiny-a"], runs_store["runs"]["tiny-b"]
    assert next(x for x in at.button if x.label == "Next ▶").disabled  # all three fit on one page
    at.multiselect(key="runs-chosen").set_value([a, b]).run()
    at.button[[x.label for x in at.button].index("⚖️ Compare")].click().run()
    assert at.query_params["compare"] == f"{a},{b}"


def test_compare_shows_param_diff_curves_and_aligned_samples(runs_store: dict) -> None:
    a, b = runs_store["runs"]["tiny-a"], runs_store["runs"]["tiny-b"]
    at = open_page(compare=f"{a},{b}")
    assert not at.exception and not at.error, [e.value for e in at.error]
    diff = at.dataframe[0].value
    assert {"unet.lr", "seed", "sample_every"} <= set(diff.index)
    assert "preset" not in diff.index
    assert list(diff.loc["unet.lr"]) == ["0.001", "0.003"]

    # Shared step slider: at step 4 tiny-a shows its nearest logged step 3, tiny-b its step 4.
    at.select_slider(key="compare-step").set_value(4).run()
    assert {"a handwritten digit one", "a handwritten digit three"} <= {m.value for m in at.markdown}
    steps = [img.proto.imgs[0].caption for img in at.get("image")]
    # Rows = 3 prompts, columns = the two runs.
    assert steps == ["step 3", "step 4"] * 3

    at.radio(key="compare-align").set_value("wall_s").run()
    at.slider(key="compare-smooth").set_value(0.9).run()
    assert not at.exception and len(at.get("vega_lite_chart")) >= 2
    assert "None of these runs trained a LoRA." in [c.value for c in at.caption]  # the strength × checkpoint sweep's empty state


def test_detail_notes_tags_promote_and_clone(runs_store: dict) -> None:
    a = runs_store["runs"]["tiny-a"]
    at = open_page(run=a)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.subheader[0].value.startswith("tiny-a")
    at.select_slider(key="detail-step").set_value(3).run()
    assert not at.exception

    at.text_area(key=f"note-{a}").set_value("clean digits").run()
    at.button[[x.label for x in at.button].index("💾 Save notes")].click().run()
    from core.tracking.runs import list_runs, run_detail

    assert run_detail(a).note == "clean digits"

    at.button[[x.label for x in at.button].index("🏆 Promote")].click().run()
    assert "alias 'champion'" in at.success[0].value
    at.run()
    assert "registered versions: digits-mini-model v1" in at.caption[0].value

    # Deleting needs the confirmation, and is refused while the registry needs the run.
    delete = [x.label for x in at.button].index("🗑️ Delete run")
    assert at.button[delete].disabled
    at.checkbox(key=f"sure-{a}").check().run()
    at.button[delete].click().run()
    assert "registered as" in at.error[0].value
    assert a in {r.run_id for r in list_runs().rows}

    # Clone last: it switches to the Train page.
    at.button[[x.label for x in at.button].index("🧬 Clone into the Train form")].click().run()
    clone = at.session_state["train_clone"]
    assert clone["unet"]["lr"] == 0.001 and clone["dataset"] == runs_store["dataset"]


def test_bad_links_show_one_sentence(runs_store: dict) -> None:
    at = open_page(compare=runs_store["runs"]["tiny-a"])
    assert "Compare 2 to 4 runs" in at.error[0].value
    at = open_page(run="nonexistent")
    assert "No run is called" in at.error[0].value


def test_clone_switches_to_the_train_page_with_the_form_filled(runs_store: dict) -> None:
    from tests.conftest import RUN_PROMPTS

    a = runs_store["runs"]["tiny-a"]
    at = AppTest.from_file(str(Path(__file__).with_name("runs_train_app.py")), default_timeout=120)
    at.query_params["run"] = a
    at.run()
    at.button[[x.label for x in at.button].index("🧬 Clone into the Train form")].click().run()
    assert not at.exception and at.title[0].value == "🏋️ Train"
    assert "cloned on the Runs page" in at.info[0].value
    name, version = runs_store["dataset"].split("@")
    assert (at.selectbox(key="train.dataset").value, at.selectbox(key="train.version").value) == (name, version)
    assert next(n for n in at.number_input if n.label == "Learning rate").value == 0.001
    assert next(n for n in at.number_input if n.label == "VAE steps").value == 4
    assert at.text_area(key="train.prompts").value == "\n".join(RUN_PROMPTS)
    # Taken once: the next rerun keeps what the user edits.
    assert "train_clone" not in at.session_state
    at.run()
    assert not at.info or "cloned on the Runs page" not in at.info[0].value


def test_export_to_onnx_from_the_run(runs_store: dict) -> None:
    from core.export_records import list_exports

    a, failed = runs_store["runs"]["tiny-a"], runs_store["failed"]
    at = open_page(run=failed)
    assert next(x for x in at.button if x.label == "📦 Export to ONNX").disabled  # no model, no export

    at = open_page(run=a)
    at.button[[x.label for x in at.button].index("📦 Export to ONNX")].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (record,) = list_exports()
    assert record.mlflow_run_id == a and record.parity["passed"]
    assert f"version {record.registered_version}" in at.success[0].value
    assert at.session_state["export_selected"] == record.id
