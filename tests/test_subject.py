"""Subject fine-tuning (DreamBooth) with prior preservation: the config's refusals, the mixed
batches, and real tiny fine-tunes of the tests' trained model with generated and catalog class images."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from core.errors import StudioError
from core.training.config import build_config
from core.training.data import prior_batch_indices
from tests.conftest import run_training

SUBJECT = ["subject.instance_prompt=a photo of sks digit", "subject.class_prompt=a handwritten digit"]
PRIOR = [*SUBJECT, "subject.prior_preservation=true"]


@pytest.mark.parametrize(
    ("overrides", "sentence"),
    [
        (["dataset=d", *SUBJECT], "subject fine-tuning starts from a base model; use preset 'finetune' with base_model"),
        (["dataset=d", "preset=finetune", "base_model=m", "stage=all", *SUBJECT], "subject fine-tuning trains the UNet only; use stage 'unet'"),
        (["dataset=d", "preset=finetune", "base_model=m", "stage=unet", "subject.instance_prompt=sks", "subject.prior_preservation=true"],
         "subject.prior_preservation needs subject.class_prompt"),
        (["dataset=d", "preset=finetune", "base_model=m", "stage=unet", "subject.instance_prompt=sks", "subject.class_prompt=sks"],
         "subject.class_prompt must differ from subject.instance_prompt"),
        (["dataset=d", "preset=finetune", "base_model=m", "stage=unet", *SUBJECT, "subject.class_dataset=dogs"],
         "subject.class_dataset is used only with subject.prior_preservation"),
        (["dataset=d", "preset=finetune", "base_model=m", "stage=unet", *PRIOR, "subject.num_class_images=0"], "'subject.num_class_images' is not valid"),
        (["dataset=d", "preset=finetune", "base_model=m", "stage=unet", "subject.class_prompt=a dog"], "'subject.instance_prompt'"),
    ],
)
def test_subject_config_refusals(overrides: list[str], sentence: str) -> None:
    with pytest.raises(StudioError, match="^[^\n]*$") as caught:
        build_config({}, overrides)
    assert sentence in str(caught.value)


def test_subject_config_defaults() -> None:
    config = build_config({}, ["dataset=d", "preset=finetune", "base_model=m", "stage=unet", *PRIOR, "buckets.enabled=true"])
    assert config.subject is not None and config.subject.prior_loss_weight == 1.0 and config.subject.num_class_images == 50


def test_prior_batches_are_deterministic_and_half_class_images() -> None:
    """Subject indices from one bucket, then as many class indices from one bucket; a pure function
    of (seed, step, rank) that visits every image of both kinds."""
    subject, prior = [3, 2], [8, 4]  # images per bucket: the subject's, then the class images'
    starts = [0, 3, 5, 13, 17]  # where each bucket begins in the joined split
    batches = [prior_batch_indices(subject, prior, 4, step, seed=3) for step in range(12)]
    assert all(torch.equal(b, prior_batch_indices(subject, prior, 4, step, seed=3)) for step, b in enumerate(batches))
    for batch in batches:
        halves = batch[:4].tolist(), batch[4:].tolist()
        assert len(batch) == 8 and max(halves[0]) < 5 <= min(halves[1]) and max(halves[1]) < 17
        assert all(len({next(b for b in range(4) if starts[b] <= i < starts[b + 1]) for i in half}) == 1 for half in halves)
    assert set(torch.cat(batches).tolist()) == set(range(17))
    other_rank = prior_batch_indices(subject, prior, 4, 0, seed=3, rank=1, world=2)
    assert not torch.equal(other_rank, prior_batch_indices(subject, prior, 4, 0, seed=3, rank=0, world=2))
    assert not torch.equal(batches[0], prior_batch_indices(subject, prior, 4, 0, seed=4))


def test_prior_loss_is_the_subject_loss_plus_the_weighted_class_loss() -> None:
    from types import SimpleNamespace

    from diffusers import DDPMScheduler
    from torch import nn

    from core.training.objectives import DenoiseObjective

    class Halve(nn.Module):  # a stand-in UNet: what it predicts only has to differ per image
        def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(sample=noisy * 0.5)

    g = torch.Generator().manual_seed(0)
    # The class images may be of another size (another bucket) than the subject's.
    subject = (torch.randn(2, 4, 2, 3, generator=g), torch.randn(2, 4, 2, 3, generator=g), torch.tensor([10, 500]), torch.zeros(2, 1, 1))
    prior = (torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g), torch.tensor([20, 900]), torch.zeros(2, 1, 1))
    objective = DenoiseObjective(Halve(), None, DDPMScheduler(), 5.0, prior_loss_weight=0.5)  # type: ignore[arg-type]
    alone = [float(objective(*inputs)["loss"]) for inputs in (subject, prior)]
    both = objective(*subject, *prior)
    assert float(both["loss"]) == pytest.approx(alone[0] + 0.5 * alone[1])
    assert float(both["prior_loss"]) == pytest.approx(alone[1])  # logged on its own, unweighted


def test_subject_splits_caption_every_image_and_put_class_images_last(tmp_path: Path) -> None:
    """The dataset's captions give way to the instance prompt; class images follow, captioned with the class prompt."""
    from PIL import Image

    from core.datasets.buckets import BucketSpec
    from core.datasets.versions import MANIFEST, ManifestItem, manifest_bytes
    from core.training.data import load_split
    from core.training.subject import ClassImages, subject_splits

    def folder(name: str, shades: list[int], caption: str) -> tuple[Path, list[ManifestItem]]:
        """A dataset-version folder of plain grey 8×8 images (named by a stand-in hash)."""
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        items = []
        for shade in shades:
            Image.new("RGB", (8, 8), (shade,) * 3).save(root / "images" / f"{shade:064x}.png")
            items.append(ManifestItem(file=f"images/{shade:064x}.png", sha256=f"{shade:064x}", caption=caption, width=8, height=8))
        (root / MANIFEST).write_bytes(manifest_bytes(items))
        return root, items

    spec = BucketSpec.square(8)
    photos, entries = folder("photos", [10, 20, 30], "a dog on grass")
    classes, _ = folder("classes", [200, 210], "ignored")
    train = load_split(photos, entries, spec)
    config = build_config({}, ["dataset=d", "preset=finetune", "base_model=m", "stage=unet", *PRIOR])
    joined, val = subject_splits(config, train, train.head(1), ClassImages(classes, "generated"), spec)
    assert joined.captions == ["a photo of sks digit"] * 3 + ["a handwritten digit"] * 2 and val.captions == ["a photo of sks digit"]
    assert torch.cat(joined.buckets)[:, 0, 0, 0].tolist() == [10, 20, 30, 200, 210] and joined.counts == [3, 2]
    alone, _ = subject_splits(build_config({}, ["dataset=d", "preset=finetune", "base_model=m", "stage=unet", *SUBJECT]), train, train, None, spec)
    assert alone.captions == ["a photo of sks digit"] * 3


# A few steps of LoRA on the tests' tiny trained model; sampling is cheap (2 steps, one image).
SHORT = [
    "preset=finetune", "stage=unet", "unet.lora_rank=4", "unet.lr=0.01", "unet.steps=3", "unet.batch_size=2",
    "unet.warmup_steps=0", "unet.caption_dropout=0", "log_every=1", "validate_every=3", "sample_every=100",
    "checkpoint_every=100", "sample_steps=2", "sample_images_per_prompt=1",
]


def subject_dataset() -> str:
    """Four digits as the subject's photos (their captions are ignored): `name@version`."""
    from core.datasets.demo import demo_items
    from core.datasets.versions import write_version

    sevens = [i for i in demo_items() if i.caption.endswith("seven")][:4]
    return "subject@" + write_version("subject", sevens, note="four sevens")


@pytest.mark.slow
def test_lora_finetune_with_generated_class_images_reuses_them_on_resume(home: Path, demo: str, trained_model: Path, tmp_path: Path) -> None:
    """The base generates the class images once, before training; the resume reads the same ones;
    the run records the subject settings, its class images and both prompts' samples."""
    from core.tracking import create_run, get_tracking
    from core.tracking.artifacts import list_artifacts
    from core.tracking.samples import image_index, sample_grid, validation_prompts
    from core.training.subject import CLASS_FOLDER

    dataset = subject_dataset()
    run_id = create_run("subject")
    out = tmp_path / "run"
    env = {"STUDIO_HOME": str(home)}
    overrides = [*SHORT, *PRIOR, f"dataset={dataset}", f"base_model={trained_model}", "subject.num_class_images=4", f"output_dir={out}"]
    first = run_training([*overrides, f"mlflow_run_id={run_id}"], env)
    assert "Generating 4 class images of 'a handwritten digit'" in output(first)
    assert "Class images: 4 of 'a handwritten digit' (generated" in output(first)
    folders = list((out / "checkpoints" / CLASS_FOLDER).iterdir())
    assert len(folders) == 1
    manifest = folders[0] / "manifest.jsonl"
    made = manifest.read_bytes()
    assert len(made.splitlines()) == 4

    resumed = run_training([*overrides, "unet.steps=5"], env, "--resume", "latest")
    assert "Generating" not in output(resumed) and "Class images: 4 of 'a handwritten digit' (reused" in output(resumed)
    assert manifest.read_bytes() == made and list((out / "checkpoints" / CLASS_FOLDER).iterdir()) == folders
    assert json.loads((out / "status.json").read_text())["status"] == "succeeded"

    data = get_tracking().client.get_run(run_id).data
    params = data.params
    assert "prior_loss" in data.metrics
    # The class loss's log lines are what SageMaker's regex reads.
    from core.training.logline import METRIC_REGEXES

    rows = [json.loads(x) for x in (out / "checkpoints" / "metrics.jsonl").read_text().splitlines()]
    logged = [row["prior_loss"] for row in rows if "prior_loss" in row]
    printed = [float(m.group(1)) for line in output(first).splitlines() if (m := re.search(METRIC_REGEXES["prior_loss"], line))]
    assert logged and printed[: len(logged)] == pytest.approx(logged[: len(printed)], rel=1e-4)
    assert params["subject.instance_prompt"] == "a photo of sks digit" and params["subject.prior_preservation"] == "True"
    assert params["subject.num_class_images"] == "4" and params["unet.lora_rank"] == "4"
    assert validation_prompts(run_id) == ["a photo of sks digit", "a handwritten digit"]
    assert {"prompt_00", "prompt_01", "samples"} <= image_index(run_id).keys()
    assert list(sample_grid([run_id], 3)) == ["a photo of sks digit", "a handwritten digit"]
    assert [a.path for a in list_artifacts(run_id, "class_images")] == ["class_images/grid.png"]


@pytest.mark.slow
def test_class_images_from_a_catalog_dataset(home: Path, demo: str, trained_model: Path, tmp_path: Path) -> None:
    dataset = subject_dataset()
    out = tmp_path / "run"
    overrides = [*SHORT, *PRIOR, f"dataset={dataset}", f"base_model={trained_model}", f"subject.class_dataset={demo}",
                 "subject.prior_loss_weight=0.5", "unet.steps=2", f"output_dir={out}"]
    proc = run_training(overrides, {"STUDIO_HOME": str(home)})
    assert f"(digits@{demo.partition('@')[2]}" in output(proc) and "Generating" not in output(proc)
    assert not (out / "checkpoints" / "class-images").exists()
    assert json.loads((out / "status.json").read_text())["status"] == "succeeded"
    assert (out / "model" / "lora").is_dir()


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_prior_preservation_with_aspect_ratio_buckets(home: Path, trained_model: Path, tmp_path: Path) -> None:
    """Landscape and portrait photos in their buckets, square class images in theirs: each half of
    a batch has one size, and only the photos' sizes are offered for inference."""
    import io

    import numpy as np
    from PIL import Image

    from core.datasets.ingest import import_dataset
    from core.training.loop import train

    def png(seed: int, size: tuple[int, int]) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "PNG")
        return buffer.getvalue()

    photos = [(f"photo {i}.png", png(i, size)) for i, size in enumerate([(48, 32)] * 3 + [(32, 48)] * 2)]
    dataset = f"photos@{import_dataset('photos', uploads=photos).version}"
    out = tmp_path / "run"
    config = build_config({}, [*SHORT, *PRIOR, f"dataset={dataset}", f"base_model={trained_model}", "subject.num_class_images=4",
                               "buckets.enabled=true", f"output_dir={out}"])
    assert train(config).status == "succeeded"
    sizes = {tuple(size) for size in json.loads((out / "model" / "buckets.json").read_text())["sizes"]}
    assert sizes == {(40, 24), (24, 40)}


@pytest.mark.slow
def test_the_estimate_counts_class_images_without_making_them_all(home: Path, demo: str, trained_model: Path, capsys: pytest.CaptureFixture) -> None:
    """A dry run of a prior-preservation run generates a couple of class images (CLASS_SAMPLE), not
    the run's hundred, and adds the time the hundred will take."""
    from app.cli import main
    from core.training.estimate import RunEstimate

    dataset = subject_dataset()
    overrides = [*SHORT, *PRIOR, f"base_model={trained_model}", "subject.num_class_images=100"]
    code = main(["train", "--dataset", dataset, *[a for o in overrides for a in ("--set", o)], "--dry-run", "--json"])
    out = json.loads(capsys.readouterr().out)
    run = RunEstimate.model_validate(out["run"])
    assert code == 0 and [s.name for s in run.stages] == ["unet"]
    assert run.allowances["class_images"] > 0
