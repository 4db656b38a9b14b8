"""The sample images a training logs: indexed by key and step, and lined up by prompt across runs."""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from core.tracking.artifacts import artifact_file, list_artifacts

# MLflow 3.17 stores `log_image(key=, step=)` as images/<key>+step+<n>+timestamp+<ms>+<uuid>.png
# (plus a `+compressed.webp` thumbnail); releases before 3.5 used `%` instead of `+`.
IMAGE_FILE = re.compile(r"^images/(?P<key>.+?)[+%]step[+%](?P<step>\d+)[+%]timestamp[+%](?P<ts>\d+)[+%][0-9a-f-]+\.png$")
PROMPTS_FILE = "validation_prompts.json"


@dataclass
class SampleCell:
    run_id: str
    step: int | None  # the run's logged step nearest the requested one
    path: Path | None


def image_index(run_id: str) -> dict[str, dict[int, str]]:
    """Stepped images of a run: key (`prompt_00`, `samples`, ...) -> step -> artifact path of the PNG."""
    index: dict[str, dict[int, str]] = {}
    for artifact in list_artifacts(run_id, "images"):
        match = IMAGE_FILE.match(artifact.path)
        if match:
            steps = index.setdefault(match["key"].replace("~", "/"), {})
            # Two images under one key and step: keep the later one.
            if int(match["step"]) not in steps or steps[int(match["step"])] < artifact.path:
                steps[int(match["step"])] = artifact.path
    return {k: dict(sorted(v.items())) for k, v in sorted(index.items())}


def image_steps(index: dict[str, dict[int, str]]) -> list[int]:
    return sorted({s for steps in index.values() for s in steps})


def nearest_step(steps: list[int], target: int) -> int | None:
    """The logged step closest to `target` (the earlier one on a tie); None if nothing was logged."""
    if not steps:
        return None
    steps = sorted(steps)
    i = bisect_left(steps, target)
    candidates = steps[max(0, i - 1) : i + 1]
    return min(candidates, key=lambda s: (abs(s - target), s))


def validation_prompts(run_id: str) -> list[str]:
    """The prompts behind `prompt_00`, `prompt_01`, ... (empty if the run logged none yet)."""
    if not any(a.path == PROMPTS_FILE for a in list_artifacts(run_id)):
        return []
    return list(json.loads(artifact_file(run_id, PROMPTS_FILE).read_text()))


def sample_grid(run_ids: list[str], step: int, indexes: dict[str, dict[str, dict[int, str]]] | None = None) -> dict[str, list[SampleCell]]:
    """Rows = validation prompts, columns = runs, each at its logged step nearest `step`.

    Prompts come from each run's `validation_prompts.json`, so runs that share a prompt share a row
    even when they logged it under different indexes.
    """
    indexes = indexes or {rid: image_index(rid) for rid in run_ids}
    by_prompt: dict[str, dict[str, str]] = {}  # prompt -> run -> image key
    for rid in run_ids:
        for i, prompt in enumerate(validation_prompts(rid)):
            if f"prompt_{i:02d}" in indexes[rid]:
                by_prompt.setdefault(prompt, {})[rid] = f"prompt_{i:02d}"
    grid: dict[str, list[SampleCell]] = {}
    for prompt, keys in by_prompt.items():
        cells = []
        for rid in run_ids:
            steps = indexes[rid].get(keys.get(rid, ""), {})
            near = nearest_step(list(steps), step)
            cells.append(SampleCell(rid, near, artifact_file(rid, steps[near]) if near is not None else None))
        grid[prompt] = cells
    return grid
