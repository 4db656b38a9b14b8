"""Datasets: import, validate, curate, deduplicate, version, export and push image–caption data."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from app.widgets import file_download, user_errors
from core.datasets import curate, dedupe, staging, stats
from core.datasets.buckets import DEFAULT_MAX_ASPECT
from core.datasets.builtin import DESCRIPTIONS, import_builtin
from core.datasets.delete import delete_dataset, plan_deletion
from core.datasets.draft import (
    Draft,
    caption_problems,
    caption_tokens,
    delete_quarantined,
    draft_dir,
    has_unsaved_changes,
    load_draft,
    save_version,
    set_captions,
    thumbnail,
    undo,
)
from core.datasets.export import export_folder, export_zip
from core.datasets.ingest import ImportReport, import_dataset
from core.datasets.push import push_version
from core.datasets.splits import DEFAULT_SEED, DEFAULT_VAL_FRACTION
from core.datasets.versions import diff_versions, list_datasets, list_versions
from core.settings import get_settings
from core.training.buckets import PRESET_GRIDS

NEW = "➕ Import a new dataset"
PAGE_SIZE = 24
COLUMNS = 6
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=\"'])")


def literal(text: str) -> str:
    """User text (a caption, a file name, a run name) for an element that draws Markdown, shown as
    typed: every Markdown character is escaped, so nothing in it becomes a link, an image (which
    the viewer's browser would load), emphasis, math, a colour directive or HTML."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def progress_bar(text: str):  # type: ignore[no-untyped-def]
    bar = st.progress(0.0, text=text)
    return lambda fraction, message: bar.progress(min(fraction, 1.0), text=message)


def run_import(name: str, uploads: list) -> ImportReport:  # type: ignore[type-arg]
    report_progress = progress_bar("Uploading…")
    if len(uploads) == 1 and uploads[0].name.lower().endswith(".zip"):
        get_settings().cache_dir.mkdir(parents=True, exist_ok=True)  # under STUDIO_HOME: team mode reads nothing else
        with tempfile.TemporaryDirectory(dir=get_settings().cache_dir) as tmp:
            archive = Path(tmp) / "upload.zip"
            archive.write_bytes(uploads[0].getvalue())
            return import_dataset(name, zip_path=archive, progress=report_progress)
    return import_dataset(name, uploads=[(f.name, f.getvalue()) for f in uploads], progress=report_progress)


def import_panel() -> None:
    st.subheader("Import images and captions")
    st.write(
        "Upload a zip, many files or a whole folder. Captions are found automatically: a Hugging Face "
        "`metadata.jsonl`, `.txt` files next to the images, a CSV or Parquet table, or else the file names."
    )
    name = st.text_input("Dataset name", placeholder="my-cats", help="lowercase letters, digits, '.', '_' or '-'")
    files = st.file_uploader("A zip or image and caption files", accept_multiple_files=True, key="upload_files")
    folder = st.file_uploader("…or a whole folder", accept_multiple_files="directory", key="upload_folder")
    uploads = list(files or []) + list(folder or [])
    if st.button("📥 Import", type="primary", disabled=not (name and uploads)):
        with user_errors():
            imported(name, run_import(name, uploads))
    # Streamlit's uploader keeps a file in the server's memory (hence its 200 MB limit); this one
    # streams to disk, for uploads of any size up to the import limits.
    if st.toggle("📤 Larger than 200 MB? Upload straight to disk", key="streamed_upload"):
        with user_errors():
            from app.embedded import api_base_url, iframe_url
            from app.uploads import UPLOADS_PATH

            st.iframe(iframe_url(api_base_url(), UPLOADS_PATH), height=130)
        finished_uploads(name)
    builtin_panel()


def imported(name: str, report: ImportReport) -> None:
    st.session_state["import_report"] = report.model_dump()
    st.session_state["next_dataset"] = name
    st.rerun(scope="app")


@st.fragment(run_every=3)
def finished_uploads(name: str) -> None:
    """Uploads the upload box finished, for this user, each ready to import under the name above."""
    batches = staging.ready_batches()
    if not batches:
        st.caption("Finished uploads appear here, ready to import under the name above.")
    for batch in batches:
        text, import_button, discard_button = st.columns([4, 1, 1])
        more = f" and {batch.files - len(batch.names)} more" if batch.files > len(batch.names) else ""
        text.write(f"{literal(', '.join(batch.names))}{more}: {batch.files} file(s), {batch.bytes / 1e6:.1f} MB")
        if import_button.button("📥 Import", key=f"import-{batch.id}", disabled=not name, help="Name the dataset above first."):
            with user_errors():
                imported(name, staging.import_batch(name, batch.id, progress=progress_bar("Importing…")))
        if discard_button.button("🗑️ Discard", key=f"discard-{batch.id}"):
            with user_errors():
                staging.discard(batch.id)
                st.rerun(scope="fragment")


def builtin_panel() -> None:
    st.subheader("…or a built-in real dataset")
    st.write("Read offline from Debian packages and checked against their checksums; good for a first real training run and for evaluation.")
    for which, description in DESCRIPTIONS.items():
        text, button = st.columns([4, 1])
        text.markdown(f"**{which}**: {description}")
        if button.button("📦 Import", key=f"builtin-{which}", width="stretch"):
            with user_errors():
                ref = import_builtin(which, progress=progress_bar(f"Importing {which}…"))
                st.session_state["next_dataset"] = ref.partition("@")[0]
                st.session_state["builtin_imported"] = ref
                st.rerun()


def show_report(report: dict) -> None:  # type: ignore[type-arg]
    where = f"`{report['name']}@{report['version']}`" if report["version"] else f"a draft of `{report['name']}`"
    sources = ", ".join(f"{k} ({v})" for k, v in report["caption_sources"].items()) or "none"
    st.success(
        f"Imported {report['imported']} images into {where}. Captions from: {sources}. "
        f"{report['needs_caption_fix']} need a caption fix, {report['quarantined']} quarantined.",
        icon="✅",
    )
    if report.get("val_seeded") and report.get("val_images"):
        st.info(
            f"The upload named no validation split, so {report['val_images']} images ({DEFAULT_VAL_FRACTION:.0%}, "
            f"seed {DEFAULT_SEED}, balanced across classes) are held out for validation; change it on the Statistics tab.",
            icon="✂️",
        )


def header(draft: Draft) -> None:
    usable = sum(not caption_problems(i) for i in draft.items)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Images", len(draft.items))
    c2.metric("Ready for a version", usable)
    c3.metric("Quarantined", len(draft.quarantine) + len(draft.items) - usable)
    c4.metric("Unsaved edits", len(draft.history))
    note_col, save_col, undo_col = st.columns([4, 1, 1], vertical_alignment="bottom")
    if st.session_state.pop("saved_version_of", None) == draft.name:
        st.session_state[f"note-{draft.name}"] = ""  # the note belonged to the version just saved
    note = note_col.text_input("Version note", placeholder="what changed", key=f"note-{draft.name}")
    if save_col.button("💾 Save version", type="primary", disabled=not has_unsaved_changes(draft), width="stretch"):
        with user_errors():
            version = save_version(draft, note=note, progress=progress_bar("Saving the version…"))
            st.toast(f"Saved {draft.name}@{version}", icon="💾")
            st.session_state[f"exp-{draft.name}"] = version  # export, push and "train on it" move to it
            st.session_state["saved_version_of"] = draft.name
            st.rerun()
    last = draft.history[-1].label if draft.history else ""
    if undo_col.button("↩️ Undo", disabled=not draft.history, help=f"Undo: {last}" if last else "Nothing to undo", width="stretch"):
        st.toast(f"Undid: {undo(draft)}", icon="↩️")
        st.rerun()


def filter_controls(name: str) -> curate.Filter:
    c1, c2, c3, c4 = st.columns([3, 2, 1, 2])
    return curate.Filter(
        text=c1.text_input("Search captions and file names", key=f"flt-text-{name}"),
        tag=c2.text_input("Tag or class", key=f"flt-tag-{name}"),
        min_side=c3.number_input("Min side", min_value=0, value=0, step=16, key=f"flt-min-{name}"),
        validity=c4.radio("Show", ["all", "valid", "needs fix"], horizontal=True, key=f"flt-valid-{name}"),
    )


@st.dialog("Image", width="large")
def image_details(draft: Draft, item_id: str) -> None:
    item = draft.by_id()[item_id]
    st.image(str(draft_dir(draft.name) / item.file), width="stretch")
    st.markdown(f"**{literal(item.id)}** · {item.width}×{item.height} · {item.split} · {caption_tokens(item.caption)} tokens")
    st.markdown(literal(item.caption) if item.caption else "*(no caption)*")
    for problem in caption_problems(item):
        st.warning(problem)
    if item.original:
        st.caption(f"Converted to RGB on import; the original is kept as {literal(item.original)}.")


def gallery(draft: Draft, items: list) -> None:  # type: ignore[type-arg]
    if not items:
        st.info("No image matches the filter.")
        return
    pages = (len(items) - 1) // PAGE_SIZE + 1
    page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key=f"page-{draft.name}")
    shown = items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    for row in range(0, len(shown), COLUMNS):
        for col, item in zip(st.columns(COLUMNS), shown[row : row + COLUMNS], strict=False):
            col.image(str(thumbnail(draft, item)), width="stretch")
            flag = "⚠️ " if caption_problems(item) else ""
            col.caption(f"{flag}{literal(item.caption[:80]) or '(no caption)'}")
            if col.button("Details", key=f"zoom-{item.id}", help=literal(item.id)):
                image_details(draft, item.id)


def caption_table(draft: Draft, items: list) -> None:  # type: ignore[type-arg]
    frame = pd.DataFrame(
        {
            "file": [i.id for i in items],
            "caption": [i.caption for i in items],
            "tokens": [caption_tokens(i.caption) for i in items],
            "split": [i.split for i in items],
            "problems": ["; ".join(caption_problems(i)) for i in items],
        }
    )
    # The key changes with every recorded edit, so the editor starts from the saved captions again.
    edited = st.data_editor(frame, disabled=["file", "tokens", "split", "problems"], hide_index=True, width="stretch", key=f"editor-{draft.name}-{len(draft.history)}-{draft.base_version}")
    changes = {f: c for f, c, old in zip(edited["file"], edited["caption"], frame["caption"], strict=True) if c != old}
    if changes:  # an edit counts as it is made (one undo step each), like the gallery's
        set_captions(draft, {k: str(v or "") for k, v in changes.items()})
        st.rerun()

    st.markdown("**Bulk edit** (applies to the images the filter shows)")
    c1, c2, c3 = st.columns([2, 2, 2])
    operation = c1.selectbox("Operation", list(curate.OPERATIONS), format_func=curate.OPERATIONS.get, key=f"bulk-op-{draft.name}")
    find = c2.text_input("Find (regex)", key=f"bulk-find-{draft.name}") if operation == "replace" else ""
    text = c3.text_input("Text", key=f"bulk-text-{draft.name}") if operation in ("replace", "prepend", "append") else ""
    edit = curate.BulkEdit(operation=operation, find=find, text=text)
    if missing := curate.missing_input(edit):  # a hint, not an error: the user has not done anything yet
        st.caption(missing)
        return
    with user_errors():
        changes = curate.preview(items, edit)
        st.caption(f"This changes {len(changes)} of {len(items)} captions.")
        if changes:
            before = {i.id: i.caption for i in items}
            st.dataframe(pd.DataFrame([{"file": k, "before": before[k], "after": v} for k, v in list(changes.items())[:5]]), hide_index=True, width="stretch")
        if st.button(f"Apply to {len(changes)} captions", disabled=not changes, key=f"bulk-apply-{draft.name}"):
            curate.apply_bulk(draft, edit, ids={item.id for item in items})
            st.rerun()


def duplicates(draft: Draft) -> None:
    threshold = st.slider("Hamming distance (0 = identical perceptual hash)", 0, 20, 4, key=f"ham-{draft.name}")
    exact = dedupe.exact_clusters(draft.items)
    near = dedupe.near_clusters(draft.items, threshold)
    st.write(f"{len(exact)} clusters of exact copies (same sha256); {len(near)} clusters of near-duplicates, {sum(len(c) for c in near)} images.")
    if not near:
        st.info("No near-duplicates at this distance.")
        return
    if st.button(f"🧹 Keep one per cluster (removes {sum(len(c) - 1 for c in near)} images)", type="primary"):
        removed = dedupe.keep_one_per_cluster(draft, near)
        st.toast(f"Removed {removed} duplicates; Undo brings them back.", icon="🧹")
        st.rerun()
    for cluster in near[:10]:
        cols = st.columns(min(len(cluster), COLUMNS))
        for col, item in zip(cols, cluster, strict=False):
            col.image(str(thumbnail(draft, item)), caption=f"{literal(item.id)} · {item.width}×{item.height}", width="stretch")


def statistics(draft: Draft) -> None:
    if not draft.items:
        st.info("No images yet.")
        return
    frame = stats.item_frame(draft.items)
    c1, c2 = st.columns(2)
    c1.altair_chart(alt.Chart(frame).mark_circle(opacity=0.5).encode(x="width", y="height", tooltip=["file", "width", "height"]).properties(title="Resolution"), width="stretch")
    c2.altair_chart(alt.Chart(frame).mark_bar().encode(alt.X("aspect", bin=alt.Bin(maxbins=30)), y="count()").properties(title="Aspect ratio"), width="stretch")
    c1.altair_chart(alt.Chart(frame).mark_bar().encode(alt.X("caption_chars", bin=alt.Bin(maxbins=30)), y="count()").properties(title="Caption length (characters)"), width="stretch")
    c2.altair_chart(alt.Chart(frame).mark_bar().encode(alt.X("tokens", bin=alt.Bin(maxbins=30)), y="count()").properties(title="Caption tokens (limit 77)"), width="stretch")
    c1.altair_chart(alt.Chart(stats.top_words(draft.items)).mark_bar().encode(x="count", y=alt.Y("word", sort="-x")).properties(title="Most frequent words"), width="stretch")
    c2.altair_chart(alt.Chart(stats.class_balance(draft.items)).mark_bar().encode(x="count", y=alt.Y("class", sort="-x")).properties(title="Class / tag balance"), width="stretch")
    buckets(draft)

    st.markdown("**Train / validation split** (seeded; stratified by class or first tag)")
    s1, s2, s3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    fraction = s1.slider("Validation fraction", 0.0, 0.5, DEFAULT_VAL_FRACTION, 0.05, key=f"val-{draft.name}")
    seed = s2.number_input("Seed", value=0, step=1, key=f"seed-{draft.name}")
    st.caption(f"Now: {(frame['split'] == 'train').sum()} train, {(frame['split'] == 'val').sum()} val.")
    if s3.button("Split", width="stretch"):
        with user_errors():
            curate.resplit(draft, fraction, int(seed))
            st.rerun()


def buckets(draft: Draft) -> None:
    """Where a training with aspect-ratio buckets (`buckets.enabled`) would put these images."""
    st.markdown("**Aspect-ratio buckets** (a training with `buckets.enabled` trains each image at the size nearest its shape)")
    b1, b2, b3 = st.columns(3)
    preset = b1.selectbox("Model", list(PRESET_GRIDS), key=f"bk-preset-{draft.name}", help="Sets the resolution and the step bucket sides are multiples of; 'finetune' assumes a Stable Diffusion 1.x base.")
    default, step = PRESET_GRIDS[preset]
    resolution = b2.number_input("Resolution", min_value=step, max_value=4096, value=default, step=step, key=f"bk-res-{draft.name}-{preset}")
    max_aspect = b3.number_input("Max aspect", min_value=1.0, max_value=8.0, value=DEFAULT_MAX_ASPECT, step=0.5, key=f"bk-aspect-{draft.name}", help="Images more elongated than this are left out.")
    with user_errors():
        frame, summary = stats.bucket_histogram(draft.items, int(resolution), step, float(max_aspect))
        m1, m2, m3 = st.columns(3)
        m1.metric("Buckets used", len(frame))
        m2.metric("Upscaled", sum(summary.upscaled.values()), help="Smaller than their bucket: enlarged, so blurrier.")
        m3.metric("Left out", summary.dropped, help="More elongated than the max aspect.")
        if len(frame):
            chart = alt.Chart(frame).mark_bar().encode(x=alt.X("bucket", sort=None, title="bucket (width×height)"), y="images", tooltip=["bucket", "images", "upscaled"])
            st.altair_chart(chart.properties(title=f"Images per bucket at {int(resolution)} px"), width="stretch")


def quarantine(draft: Draft) -> None:
    fix = [(i.id, p) for i in draft.items for p in caption_problems(i)]
    if not draft.quarantine and not fix:
        st.success("Every image passed validation.", icon="✅")
        return
    if fix:
        st.markdown(f"**{len(fix)} caption problems** — fix them in the Captions tab (filter: needs fix); fixed images join the next version.")
        st.dataframe(pd.DataFrame(fix, columns=["file", "reason"]), hide_index=True, width="stretch")
    if draft.quarantine:
        st.markdown(f"**{len(draft.quarantine)} files could not be used** — kept in `{draft_dir(draft.name) / 'quarantine'}` to inspect.")
        st.dataframe(pd.DataFrame([p.model_dump() for p in draft.quarantine]), hide_index=True, width="stretch")
        chosen = st.multiselect("Delete from the quarantine", [p.file for p in draft.quarantine], key=f"q-{draft.name}")
        if st.button("🗑️ Delete", disabled=not chosen):
            delete_quarantined(draft, set(chosen))
            st.rerun()


def versions(draft: Draft) -> None:
    rows = list_versions(draft.name)
    if not rows:
        st.info("No version yet: fix the captions, then Save version.")
        return
    st.dataframe(
        pd.DataFrame([{"version": v.version, "items": v.n_items, "train": v.stats.get("train"), "val": v.stats.get("val"), "parent": v.parent, "note": v.note, "created": v.created_at, "s3": v.s3_uri} for v in rows]),
        hide_index=True,
        width="stretch",
    )
    ids = [v.version for v in rows]
    if len(ids) > 1:
        c1, c2 = st.columns(2)
        old = c1.selectbox("Compare", ids, index=1, key=f"old-{draft.name}")
        new = c2.selectbox("with", ids, index=0, key=f"new-{draft.name}")
        diff = diff_versions(draft.name, old, new)
        st.write(f"**+{len(diff.added)}** added · **−{len(diff.removed)}** removed · **~{len(diff.caption_changed)}** caption changed")
        if diff.caption_changed:
            st.dataframe(pd.DataFrame([{"file": a.source, "before": a.caption, "after": b.caption} for a, b in diff.caption_changed]), hide_index=True, width="stretch")

    ref = f"{draft.name}@{st.selectbox('Version to export or push', ids, key=f'exp-{draft.name}')}"
    st.caption(f"Train on it with `{ref}`.")
    e1, e2, e3 = st.columns(3)
    with e1, user_errors():
        if st.button("📦 Prepare imagefolder zip", width="stretch"):
            path = export_zip(ref, get_settings().cache_dir / "exports" / f"{ref.replace('@', '-')}.zip", progress=progress_bar("Zipping…"))
            st.session_state["export_zip"] = str(path)
        if (path := st.session_state.get("export_zip")) and Path(path).is_file() and Path(path).stem == ref.replace("@", "-"):
            file_download("⬇️ Download zip", Path(path), Path(path).name, "application/zip", width="stretch")
    with e2, user_errors():
        folder = st.text_input("Export to a new folder", placeholder="/path/to/new/folder", key=f"folder-{draft.name}")
        if st.button("📁 Export to folder", disabled=not folder, width="stretch"):
            st.success(f"Exported to {export_folder(ref, Path(folder))}")
    with e3, user_errors():
        bucket = st.text_input("S3 bucket", value=get_settings().s3_bucket or "", key=f"bucket-{draft.name}")
        if st.button("☁️ Push to S3", disabled=not bucket, width="stretch"):
            result = push_version(ref, bucket=bucket, progress=progress_bar("Pushing…"))
            st.success(f"Pushed to {result.uri}: {result.uploaded} uploaded, {result.skipped} already there.")


def delete_panel(draft: Draft) -> None:
    """Delete the dataset or one version, after a confirmation that says what runs keep."""
    st.markdown("**Delete**")
    ids = [v.version for v in list_versions(draft.name)]
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    target = c1.selectbox("What to delete", [draft.name, *(f"{draft.name}@{v}" for v in ids)], key=f"del-target-{draft.name}",
                          format_func=lambda ref: f"the whole dataset {ref}" if "@" not in ref else f"version {ref}")
    if c2.button("🗑️ Delete…", width="stretch", key=f"del-ask-{draft.name}"):
        st.session_state["delete_ref"] = target
    ref = st.session_state.get("delete_ref")
    if not ref or ref.partition("@")[0] != draft.name:
        return
    with user_errors():
        plan = plan_deletion(ref)  # searches MLflow: only once the user asked
        st.warning(plan.summary(), icon="⚠️")
        for version, users in plan.keep.items():
            st.caption(f"{draft.name}@{version} stays so these stay reproducible: " + ", ".join(f"{u.kind} {literal(u.name)}" for u in users))
        y, n = st.columns(2)
        if y.button("Yes, delete", type="primary", width="stretch", key=f"del-yes-{draft.name}", disabled=not (plan.remove or plan.whole)):
            done = delete_dataset(ref)
            st.session_state.pop("delete_ref", None)
            st.session_state["deleted"] = done.summary().replace("Deleting", "Deleted", 1)
            if done.whole and not done.remaining:
                st.session_state.pop("dataset_choice", None)
            st.rerun()
        if n.button("Cancel", width="stretch", key=f"del-no-{draft.name}"):
            st.session_state.pop("delete_ref", None)
            st.rerun()


def render() -> None:
    st.title("🗂️ Datasets")
    st.caption("Import image–caption data, fix what validation finds, remove duplicates and save immutable versions to train on.")
    with user_errors():
        names = [d.name for d in list_datasets()]
    if pending := st.session_state.pop("next_dataset", None):
        st.session_state["dataset_choice"] = pending
    elif st.query_params.get("new") is not None:  # Home's "Import your own data"
        st.session_state["dataset_choice"] = NEW
        del st.query_params["new"]
    choice = st.selectbox("Dataset", [*names, NEW], key="dataset_choice")
    # One-off notices share one container, there on every run: when they go, the tabs below keep
    # their place in the page, so the browser keeps the open tab instead of going back to the first.
    with st.container():
        if report := st.session_state.pop("import_report", None):
            show_report(report)
        if imported := st.session_state.pop("builtin_imported", None):
            st.success(f"Imported `{imported}`: train on it from the Train page.", icon="📦")
        if deleted := st.session_state.pop("deleted", None):
            st.success(deleted, icon="🗑️")
    if choice == NEW:
        if not names:
            st.info("No datasets yet. Import your own below, or create the demo digits from the Home page.", icon="👋")
        import_panel()
        return
    with user_errors():
        draft = load_draft(choice)
        header(draft)
        flt = filter_controls(draft.name)
        items = curate.filter_items(draft.items, flt)
        tabs = st.tabs(["🖼️ Gallery", "✏️ Captions", "🧹 Duplicates", "📊 Statistics", f"⚠️ Validation ({len(draft.quarantine)})", "🕒 Versions"])
        with tabs[0]:
            gallery(draft, items)
        with tabs[1]:
            caption_table(draft, items)
        with tabs[2]:
            duplicates(draft)
        with tabs[3]:
            statistics(draft)
        with tabs[4]:
            quarantine(draft)
        with tabs[5]:
            versions(draft)
            delete_panel(draft)
