"""The Datasets page through AppTest: upload files, see the report, edit captions (table and bulk),
undo, save a version, find duplicates; the draft survives a new session (a page reload)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.datasets.draft import load_draft
from core.datasets.versions import list_versions, read_manifest
from tests.test_datasets import png

SCRIPT = Path(__file__).with_name("datasets_page_app.py")


def page() -> AppTest:
    at = AppTest.from_file(str(SCRIPT), default_timeout=60)
    return at.run()


def button(at: AppTest, prefix: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label.startswith(prefix))


def test_upload_edit_and_save_a_version(home: Path) -> None:
    at = page()
    assert not at.exception
    assert any("No datasets yet" in i.value for i in at.info)
    files = [(f"cat_{i}.png", png(i), "image/png") for i in range(3)] + [(f"cat_{i}.txt", f"a cat {i}".encode(), "text/plain") for i in range(3)]
    files += [("broken.png", b"not a png", "image/png"), ("cat_0 copy.png", png(0), "image/png"), ("cat_0 copy.txt", b"a cat again", "text/plain")]
    at.text_input[0].set_value("cats")
    at.file_uploader[0].set_value(files)
    at = at.run()
    button(at, "📥 Import").click()
    at = at.run()
    assert not at.exception, at.exception
    assert any("Imported 4 images" in s.value for s in at.success)
    assert at.selectbox(key="dataset_choice").value == "cats"
    first = list_versions("cats")[0].version

    # the quarantine lists the broken file
    assert any("broken.png" in str(df.value) for df in at.dataframe)

    # the Captions tab opens without an error: bulk edit's empty "find" is a hint
    assert not at.error and any("needs something to find" in c.value for c in at.caption)

    # one caption edited in the table counts at once (no second button)
    draft = load_draft("cats")
    key = f"editor-cats-0-{first}"
    row = [i.id for i in draft.items].index("cat_1.png")
    at.session_state[key] = {"edited_rows": {row: {"caption": "a sleepy cat"}}, "added_rows": [], "deleted_rows": []}
    at = at.run()
    assert load_draft("cats").by_id()["cat_1.png"].caption == "a sleepy cat"
    assert at.metric[3].value == "1"  # one unsaved edit, undoable

    # bulk edit: preview count, apply, undo, apply again
    at.selectbox(key="bulk-op-cats").set_value("prepend")
    at.text_input(key="bulk-text-cats").set_value("sks")
    at = at.run()
    assert any("This changes 4 of 4 captions" in c.value for c in at.caption)
    button(at, "Apply to 4 captions").click()
    at = at.run()
    button(at, "↩️ Undo").click()
    at = at.run()
    assert load_draft("cats").by_id()["cat_2.png"].caption == "a cat 2"
    button(at, "Apply to 4 captions").click()
    at = at.run()

    # duplicates: the copy clusters with its original; keep one
    button(at, "🧹 Keep one per cluster").click()
    at = at.run()
    assert len(load_draft("cats").items) == 3

    # a reload (new session) finds the unsaved draft, then Save version freezes it
    at = page()
    at.selectbox(key="dataset_choice").set_value("cats")
    at = at.run()
    assert at.metric[3].value == "3"  # unsaved edits
    at.text_input(key="note-cats").set_value("trigger word")
    button(at, "💾 Save version").click()
    at = at.run()
    assert not at.exception
    versions = list_versions("cats")
    assert len(versions) == 2 and versions[0].note == "trigger word"
    # the export picker moves to the new version, and the note is cleared for the next one
    assert at.selectbox(key="exp-cats").value == versions[0].version
    assert at.text_input(key="note-cats").value == ""
    captions = sorted(m.caption for m in read_manifest("cats", versions[0].version))
    assert captions == ["sks, a cat 2", "sks, a cat again", "sks, a sleepy cat"]  # the copy sorts first, so it is kept
    assert any("caption changed" in m.value for m in at.markdown)


def test_home_link_opens_on_a_new_import(demo: str) -> None:
    """Home's "Import your own data" (`?new`) opens the import panel, not the demo digits."""
    from pages.datasets import NEW

    at = AppTest.from_file(str(SCRIPT), default_timeout=60)
    at.query_params["new"] = "1"
    at = at.run()
    assert not at.exception
    assert at.selectbox(key="dataset_choice").value == NEW
    assert "new" not in at.query_params  # a later visit opens on the datasets again


def test_the_tabs_keep_their_place_when_the_import_report_goes(home: Path) -> None:
    """The browser keeps the open tab only while the tabs stay where they were in the page: the
    report shown once after an import must not move them, or the next click jumps back to Gallery."""
    at = page()
    at.text_input[0].set_value("cats")
    at.file_uploader[0].set_value([(f"cat_{i}.png", png(i), "image/png") for i in range(3)])
    at = at.run()
    button(at, "📥 Import").click()
    at = at.run()
    assert any("Imported 3 images" in s.value for s in at.success)

    def tabs_place(at: AppTest) -> int:
        (place,) = [i for i, child in at.main.children.items() if getattr(child, "type", None) == "tab_container"]
        return place

    shown = tabs_place(at)
    at.selectbox(key="bulk-op-cats").set_value("prepend")  # any widget: a rerun without the report
    at = at.run()
    assert not any("Imported" in s.value for s in at.success) and tabs_place(at) == shown
