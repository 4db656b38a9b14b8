"""A LoRA training swept over strength × checkpoint with one prompt and seed, on the base it was trained on.

A LoRA training's checkpoints hold the frozen base (`model/`) and the adapter's weights
(`state.pt`); each checkpoint's adapter is written once as a diffusers LoRA file under
`STUDIO_HOME/cache/lora-checkpoints/<run>/<checkpoint>/lora/` and applied like any other LoRA, so
where the adapter starts to over-fit (the class drifting, the subject burning in) shows in one grid.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from pydantic import BaseModel

from core.errors import StudioError
from core.files import staged_folder
from core.inference.models import generate
from core.inference.torch_backend import GenerateRequest
from core.modeling.io import load_components
from core.modeling.lora import add_lora, load_lora_state
from core.modeling.lora_files import FOLDER, save_lora_files
from core.settings import get_settings
from core.training.checkpoint import load_state, verify_checkpoint

FINAL = "final"


class SweepColumn(BaseModel):
    label: str  # a checkpoint's name, or "final"
    lora: str  # what `GenerateRequest.lora` takes: a folder holding lora/, or the run id


def checkpoint_column(run_id: str, checkpoint: Path) -> SweepColumn | None:
    """The adapter of one verified UNet checkpoint as a LoRA file (written once); None without LoRA weights."""
    out = get_settings().cache_dir / "lora-checkpoints" / run_id / checkpoint.name
    if not (out / FOLDER).is_dir():
        verify_checkpoint(checkpoint)
        state = load_state(checkpoint / "state.pt").get("lora")
        if not state:
            return None
        components = load_components(checkpoint / "model")
        rank = next(v for k, v in state.items() if "lora_A" in k).shape[0]
        add_lora(components.unet, rank)
        load_lora_state(components.unet, state)
        with staged_folder(out) as tmp:
            save_lora_files(components, tmp / FOLDER)
    return SweepColumn(label=checkpoint.name, lora=str(out))


def sweep_columns(run_id: str, checkpoints: Path | None, has_final: bool) -> list[SweepColumn]:
    """The run's UNet checkpoints that hold LoRA weights, oldest first, then its final LoRA."""
    columns = []
    if checkpoints is not None and checkpoints.is_dir():
        for folder in sorted(p for p in checkpoints.glob("step-*unet-*") if p.is_dir()):
            if (column := checkpoint_column(run_id, folder)) is not None:
                columns.append(column)
    if has_final:
        columns.append(SweepColumn(label=FINAL, lora=run_id))
    if not columns:
        raise StudioError("This run has no LoRA weights to sweep: neither its checkpoints nor its final model hold any.")
    return columns


def sweep(base: str, columns: list[SweepColumn], strengths: list[float], request: GenerateRequest) -> dict[float, list[Image.Image]]:
    """One image per strength (rows) and column, all with `request`'s prompt and seed."""
    if not strengths:
        raise StudioError("Pick at least one strength.")
    return {
        strength: [generate(base, request.model_copy(update={"lora": c.lora, "lora_strength": strength, "batch": 1})).images[0] for c in columns]
        for strength in strengths
    }
