"""`studio dataset ...`: import, list, show, version, diff, export, push and delete datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.commands import add_command, emit
from core.errors import StudioError


def stderr_progress(fraction: float, text: str) -> None:
    print(f"\r[{fraction:4.0%}] {text:<60}", end="", file=sys.stderr, flush=True)


def cmd_list(args: argparse.Namespace) -> int:
    from core.datasets.versions import list_datasets, list_versions

    rows = []
    for dataset in list_datasets():
        versions = list_versions(dataset.name)
        rows.append({"name": dataset.name, "versions": [v.version for v in versions], "items": versions[0].n_items if versions else 0})
    text = "\n".join(f"{r['name']}@{r['versions'][0]}  {r['items']} items  ({len(r['versions'])} versions)" for r in rows if r["versions"])
    emit(args, rows, text or "No datasets yet; `studio dataset import <zip or folder> --name <name>`.")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from core.datasets.ingest import import_dataset

    if args.builtin:
        return import_builtin(args)
    if not args.source or not args.name:
        raise StudioError("Give a zip file or folder and --name, or --builtin fashion-mnist|emoji.")
    source = Path(args.source)
    if not source.exists():
        raise StudioError(f"{source} does not exist.")
    kind = {"folder": source} if source.is_dir() else {"zip_path": source}
    report = import_dataset(args.name, note=args.note, progress=None if args.json else stderr_progress, **kind)
    if not args.json:
        print(file=sys.stderr)
    lines = [
        f"Imported {report.imported} images into {report.name}@{report.version}" if report.version else f"Imported {report.name} as a draft (no version yet)",
        f"captions from: {', '.join(f'{k} ({v})' for k, v in report.caption_sources.items()) or 'none'}",
        f"{report.needs_caption_fix} need a caption fix, {report.quarantined} quarantined",
        *(f"  {p.file}: {p.reason}" for p in report.problems),
    ]
    emit(args, report.model_dump(), "\n".join(lines))
    return 0


def import_builtin(args: argparse.Namespace) -> int:
    from core.datasets.builtin import import_builtin as run_import

    ref = run_import(args.builtin, progress=None if args.json else stderr_progress)
    if not args.json:
        print(file=sys.stderr)
    emit(args, {"builtin": args.builtin, "ref": ref}, f"Imported the built-in {args.builtin} dataset as {ref}")
    return 0


def version_row(v: Any) -> dict[str, Any]:
    return {"version": v.version, "parent": v.parent, "items": v.n_items, "stats": v.stats, "note": v.note, "s3_uri": v.s3_uri, "created_at": v.created_at}


def cmd_show(args: argparse.Namespace) -> int:
    from core.datasets.draft import caption_problems, load_draft
    from core.datasets.versions import check_name, list_versions

    name = check_name(args.name.partition("@")[0])
    versions = [version_row(v) for v in list_versions(name)]
    draft = load_draft(name)
    data = {
        "name": name,
        "versions": versions,
        "draft": {
            "items": len(draft.items),
            "needs_caption_fix": sum(bool(caption_problems(i)) for i in draft.items),
            "quarantined": len(draft.quarantine),
            "unsaved_edits": len(draft.history),
            "caption_sources": draft.caption_sources,
        },
    }
    text = "\n".join(
        [f"{name}: {len(draft.items)} images in the draft, {len(draft.history)} unsaved edits, {len(draft.quarantine)} quarantined"]
        + [f"  {v['version']}  {v['items']} items  {v['created_at']:%Y-%m-%d %H:%M}  {v['note']}" for v in versions]
    )
    emit(args, data, text)
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from core.datasets.draft import load_draft, save_version
    from core.datasets.versions import check_name

    draft = load_draft(check_name(args.name))
    version = save_version(draft, note=args.note)
    emit(args, {"name": args.name, "version": version}, f"Saved {args.name}@{version}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from core.datasets.versions import diff_versions, resolve

    name, old = resolve(args.old)
    _, new = resolve(f"{name}@{args.new}" if "@" not in args.new else args.new)
    diff = diff_versions(name, old, new)
    data = diff.model_dump()
    text = "\n".join(
        [f"{name}: {old} -> {new}: +{len(diff.added)} -{len(diff.removed)} ~{len(diff.caption_changed)}"]
        + [f"+ {i.source}: {i.caption}" for i in diff.added]
        + [f"- {i.source}: {i.caption}" for i in diff.removed]
        + [f"~ {a.source}: {a.caption!r} -> {b.caption!r}" for a, b in diff.caption_changed]
    )
    emit(args, data, text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from core.datasets.export import export_folder, export_zip

    out = Path(args.out)
    path = export_zip(args.ref, out) if out.suffix == ".zip" else export_folder(args.ref, out)
    emit(args, {"ref": args.ref, "out": str(path)}, f"Exported {args.ref} to {path}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from core.datasets.push import push_version

    result = push_version(args.ref, bucket=args.bucket, prefix=args.prefix, progress=None if args.json else stderr_progress)
    if not args.json:
        print(file=sys.stderr)
    emit(args, result.model_dump(), f"Pushed to {result.uri}: {result.uploaded} uploaded, {result.skipped} already there")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from core.datasets.delete import delete_dataset, plan_deletion

    plan = plan_deletion(args.ref)
    if not args.yes:
        if not sys.stdin.isatty():
            raise StudioError(f"{plan.summary()} Run again with --yes to confirm.")
        print(plan.summary(), file=sys.stderr)
        if input("Delete? [y/N] ").strip().lower() not in ("y", "yes"):
            print("Nothing was deleted.", file=sys.stderr)
            return 1
    done = delete_dataset(args.ref)
    emit(args, done.model_dump(), done.summary().replace("Deleting", "Deleted", 1))
    return 0


def register(sub: Any) -> None:
    dataset = sub.add_parser("dataset", help="import, list, show, version, diff, export, push and delete datasets")
    actions = dataset.add_subparsers(dest="action", required=True)
    add_command(actions, "list", "list datasets and their versions", cmd_list)
    p = add_command(actions, "import", "import a zip or a folder of images and captions as a new dataset", cmd_import)
    p.add_argument("source", nargs="?", help="a .zip file or a folder")
    p.add_argument("--name", help="the new dataset's name")
    p.add_argument("--builtin", choices=("fashion-mnist", "emoji"), help="import a built-in real dataset from its Debian package instead")
    p.add_argument("--note", default="", help="a note for the first version")
    p = add_command(actions, "show", "a dataset's versions and its draft", cmd_show)
    p.add_argument("name")
    p = add_command(actions, "version", "save the draft as a new immutable version", cmd_version)
    p.add_argument("name")
    p.add_argument("--note", default="")
    p = add_command(actions, "diff", "items added, removed and re-captioned between two versions", cmd_diff)
    p.add_argument("old", help="name@version")
    p.add_argument("new", help="version (or name@version)")
    p = add_command(actions, "export", "export a version as an imagefolder zip (out.zip) or folder", cmd_export)
    p.add_argument("ref", help="name@version (or name for the newest)")
    p.add_argument("out", help="a path ending in .zip, or a new folder")
    p = add_command(actions, "push", "push a version to S3 (resumes: objects already there are skipped)", cmd_push)
    p.add_argument("ref", help="name@version (or name for the newest)")
    p.add_argument("--bucket", help="default STUDIO_S3_BUCKET")
    p.add_argument("--prefix", help="default STUDIO_S3_PREFIX")
    p = add_command(actions, "delete", "delete a dataset or one version; versions that runs or jobs used are kept", cmd_delete)
    p.add_argument("ref", help="name (the whole dataset) or name@version")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
