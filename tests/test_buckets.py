"""Aspect-ratio buckets: the bucket maths, the seeded one-bucket batches, a real tiny training on
photos of mixed shapes that resumes exactly, the Datasets page's histogram."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from core.datasets.buckets import BucketSpec, aspect_buckets, place, side_range, summarize
from core.datasets.draft import DraftItem
from core.datasets.pixels import load_image, load_placed
from core.errors import StudioError
from core.training.buckets import PRESET_GRIDS, bucket_spec, sample_sizes
from core.training.config import BucketsConfig, build_config
from core.training.data import Split, batch_indices

TINY = aspect_buckets(32, 8)  # the tiny preset: 32 px, sides on multiples of 8


# ---- the bucket maths ----------------------------------------------------------------------------
def test_bucket_sizes_keep_the_area_and_the_step() -> None:
    assert (32, 32) in TINY.sizes
    for w, h in TINY.sizes:
        assert w % 8 == h % 8 == 0 and w * h <= 32 * 32 and 16 <= min(w, h) and max(w, h) <= 64
        assert (h, w) in TINY.sizes and max(w, h) / min(w, h) <= 3
    assert (24, 40) in TINY.sizes and (40, 24) in TINY.sizes and (16, 48) in TINY.sizes
    sd = aspect_buckets(512, 64)  # kohya's buckets for Stable Diffusion 1.x
    assert {(512, 512), (448, 576), (384, 640), (320, 768), (768, 320)} <= set(sd.sizes)
    assert (256, 1024) not in sd.sizes  # 4:1 is more elongated than the default max aspect


@pytest.mark.parametrize(
    ("size", "bucket", "upscaled"),
    [
        ((30, 60), (24, 40), False),  # portrait
        ((600, 400), (40, 24), False),  # landscape, downscaled
        ((48, 48), (32, 32), False),  # square
        ((20, 20), (32, 32), True),  # tiny: enlarged to fill its bucket
        ((4000, 3000), (40, 24), False),  # huge 4:3
        ((20, 60), (16, 48), False),  # 1:3, the most elongated kept
    ],
)
def test_each_image_goes_to_the_nearest_aspect(size: tuple[int, int], bucket: tuple[int, int], upscaled: bool) -> None:
    placement = place(size, TINY)
    assert placement is not None and placement.target == bucket and placement.upscaled is upscaled
    left, top, right, bottom = placement.crop
    # the crop is centred, inside the image and has the bucket's aspect
    assert 0 <= left and 0 <= top and right <= size[0] and bottom <= size[1]
    assert abs(left - (size[0] - right)) <= 1 and abs(top - (size[1] - bottom)) <= 1
    assert (right - left) / (bottom - top) == pytest.approx(bucket[0] / bucket[1], rel=0.05)


def test_crop_coordinates_as_sdxl_records_them() -> None:
    placement = place((600, 400), TINY)
    assert placement is not None
    assert placement.original == (600, 400) and placement.crop == (0, 20, 600, 380) and placement.target == (40, 24)
    assert placement.crop_top_left == (1, 0)  # 20 px of 400 in an image resized to 40 wide


def test_too_elongated_images_are_left_out_but_never_when_square() -> None:
    assert place((200, 20), TINY) is None and place((20, 200), TINY) is None
    assert place((160, 20), aspect_buckets(32, 8, max_aspect=8)).target == (64, 16)  # type: ignore[union-attr]
    square = BucketSpec.square(32)
    assert place((200, 20), square).target == (32, 32)  # type: ignore[union-attr]
    summary = summarize([(30, 60), (32, 60), (600, 400), (20, 20), (200, 20)], TINY)
    assert list(summary.images.items()) == [((24, 40), 2), ((32, 32), 1), ((40, 24), 1)]  # most first, then by size
    assert summary.upscaled == {(24, 40): 0, (32, 32): 1, (40, 24): 0} and summary.dropped == 1


def test_side_range_and_refusals() -> None:
    assert side_range(32, 8) == (16, 64) and side_range(512, 64, 300, 900) == (320, 896)
    with pytest.raises(StudioError, match="leave out the square"):
        aspect_buckets(32, 8, min_side=40)
    assert bucket_spec(BucketsConfig(), 32, 8, (16, 64)) == BucketSpec.square(32)
    with pytest.raises(StudioError, match=r"'buckets.max_side' \(128\) must be between 16 and 64"):
        bucket_spec(BucketsConfig(enabled=True, max_side=128), 32, 8, (16, 64))
    with pytest.raises(StudioError, match=r"^The config value 'buckets' is not valid: buckets.min_side \(64\) must not exceed buckets.max_side \(32\)\.$"):
        build_config({"dataset": "x", "buckets": {"min_side": 64, "max_side": 32}})
    assert sample_sizes([(40, 24), (32, 32)], 32) == [(40, 24), (32, 32)] and sample_sizes([(32, 32)], 32) == [(32, 32)]


def test_preset_grids_are_the_models() -> None:
    """The Datasets page's torch-free table matches what the presets build (inference's rule)."""
    from core.inference.torch_backend import components_size_multiple, size_limits
    from core.modeling.presets import PRESETS

    def shape(vae: tuple[int, ...], unet: tuple[int, ...]) -> SimpleNamespace:
        return SimpleNamespace(vae=SimpleNamespace(config=SimpleNamespace(block_out_channels=vae)), unet=SimpleNamespace(config=SimpleNamespace(block_out_channels=unet)))

    for name, preset in PRESETS.items():
        assert PRESET_GRIDS[name] == (preset.resolution, components_size_multiple(shape(preset.vae_channels, preset.unet_channels)))  # type: ignore[arg-type]
    sd15 = shape((128, 256, 512, 512), (320, 640, 1280, 1280))
    assert PRESET_GRIDS["finetune"] == (512, components_size_multiple(sd15))  # type: ignore[arg-type]
    for resolution, step in PRESET_GRIDS.values():  # the default bucket sides are the ones inference generates
        assert side_range(resolution, step) == size_limits(resolution, step)


def test_square_loading_is_the_one_bucket_case(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(50, 31), (17, 90), (300, 200)]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        pixels, placement = load_placed(path, BucketSpec.square(32))  # type: ignore[misc]
        assert pixels.shape == (3, 32, 32) and np.array_equal(pixels, load_image(path, 32))
        bucketed, placement = load_placed(path, TINY) or (None, None)
        if placement is not None:
            assert bucketed.shape == (3, placement.target[1], placement.target[0])  # type: ignore[union-attr]


# ---- batches ------------------------------------------------------------------------------------
def test_batches_come_from_one_bucket_and_cover_every_image() -> None:
    counts, batch = [10, 5, 1], 4
    starts = np.cumsum([0, *counts])
    rounds = sum(math.ceil(n / batch) for n in counts)  # 3 + 2 + 1 batches a round
    seen: set[int] = set()
    for step in range(rounds):
        idx = batch_indices(counts, batch, step, seed=7)
        assert len(idx) == batch and torch.equal(idx, batch_indices(counts, batch, step, seed=7))  # a pure function
        bucket = int(np.searchsorted(starts, int(idx[0]), side="right")) - 1
        assert all(starts[bucket] <= i < starts[bucket + 1] for i in idx.tolist())
        seen |= set(idx.tolist())
    assert seen == set(range(sum(counts)))  # each round shows every image at least once
    # Two ranks take alternate batches of the same sequence.
    assert torch.equal(batch_indices(counts, batch, 3, 7, rank=1, world=2), batch_indices(counts, batch, 7, 7))
    assert not torch.equal(batch_indices(counts, batch, 0, 7), batch_indices(counts, batch, 0, 8))


def test_one_bucket_batches_are_a_seeded_stream_of_epochs() -> None:
    n, batch = 10, 4
    stream = torch.cat([torch.randperm(n, generator=torch.Generator().manual_seed(3 * 100_003 + epoch)) for epoch in range(4)])
    for step in range(8):
        assert torch.equal(batch_indices([n], batch, step, 3), stream[step * batch : (step + 1) * batch])


def test_split_locates_chunks_and_heads() -> None:
    placements = [place(size, TINY) for size in [(48, 24), (32, 16), (20, 10), (10, 20), (24, 48)]]
    split = Split([torch.zeros(3, 3, 8, 16, dtype=torch.uint8), torch.full((2, 3, 16, 8), 255, dtype=torch.uint8)], list("abcde"), placements)  # type: ignore[arg-type]
    assert split.sizes == [(16, 8), (8, 16)] and split.counts == [3, 2] and len(split) == 5 and split.upscaled == 3
    bucket, local = split.locate(torch.tensor([4, 3]))
    assert bucket == 1 and local.tolist() == [1, 0] and split.pixels(torch.tensor([3])).max() == 1.0
    with pytest.raises(ValueError, match="one bucket"):
        split.locate(torch.tensor([2, 3]))
    assert [c.tolist() for c in split.chunks(2)] == [[0, 1], [2], [3, 4]]
    head = split.head(4)
    assert head.counts == [3, 1] and head.captions == list("abcd") and head.placements == placements[:4]


# ---- the Datasets page's histogram ---------------------------------------------------------------
def items(sizes: list[tuple[int, int]]) -> list[DraftItem]:
    return [DraftItem(id=f"{i}.png", sha256=f"{i:064x}", ext="png", caption="x", width=w, height=h) for i, (w, h) in enumerate(sizes)]


def test_bucket_histogram_counts_upscaled_and_dropped() -> None:
    from core.datasets.stats import bucket_histogram

    frame, summary = bucket_histogram(items([(30, 60)] * 3 + [(600, 400), (20, 20), (48, 48), (300, 30)]), 32, 8, 3.0)
    assert frame.to_dict("records") == [
        {"bucket": "24×40", "images": 3, "upscaled": 0},
        {"bucket": "32×32", "images": 2, "upscaled": 1},
        {"bucket": "40×24", "images": 1, "upscaled": 0},
    ]
    assert summary.dropped == 1
    frame, summary = bucket_histogram(items([(300, 30)]), 32, 8, 3.0)
    assert frame.empty and summary.dropped == 1


# ---- a real training on photos of mixed shapes --------------------------------------------------
SHAPES = [(48, 32)] * 12 + [(30, 60)] * 9 + [(40, 40)] * 7 + [(16, 16)] * 2 + [(100, 20)] * 2 + [(200, 150)]


def png(seed: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def mixed(home: Path) -> str:
    """A dataset of photos of every shape, imported as a user's upload is; returns `name@version`."""
    from core.datasets.ingest import import_dataset

    files = [(f"shape {w}x{h} number {i}.png", png(i, (w, h))) for i, (w, h) in enumerate(SHAPES)]
    report = import_dataset("shapes", uploads=files)
    return f"shapes@{report.version}"


def metrics(path: Path) -> dict[tuple[int, str], float]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(row["step"], k): v for row in rows for k, v in row.items() if k not in ("step", "time") and not k.endswith("samples_per_s")}


@pytest.mark.slow
def test_bucketed_training_resumes_exactly(mixed: str, tmp_path: Path) -> None:
    """Buckets on: batches of one size each, latents cached per bucket, samples at the trained sizes,
    `buckets.json` beside the model; resumed from a mid-VAE checkpoint, every later loss and
    validation value is the uninterrupted run's."""
    from core.training.loop import train

    settings = {
        "dataset": mixed, "buckets": {"enabled": True}, "seed": 3,
        "vae": {"steps": 4, "batch_size": 4, "warmup_steps": 1}, "unet": {"steps": 4, "batch_size": 8, "warmup_steps": 1},
        "log_every": 1, "validate_every": 2, "sample_every": 100, "checkpoint_every": 2, "keep_checkpoints": 10,
        "sample_steps": 2, "sample_images_per_prompt": 1, "validation_prompts": ["a landscape"],
    }
    full = tmp_path / "full"
    assert train(build_config({**settings, "output_dir": str(full)})).status == "succeeded"

    trained = json.loads((full / "model" / "buckets.json").read_text())
    assert trained["resolution"] == 32
    sizes = [tuple(s) for s in trained["sizes"]]
    assert set(sizes) <= {(40, 24), (24, 40), (32, 32)} and (40, 24) in sizes and (24, 40) in sizes
    grid = Image.open(full / "samples" / "step-0000004.png")
    assert grid.height == 32 and grid.width > 40 + 32  # the most common bucket and the square, side by side

    resumed = tmp_path / "resumed"
    checkpoint = full / "checkpoints" / "step-1vae-0000002"
    assert train(build_config({**settings, "output_dir": str(resumed)}), resume=str(checkpoint)).status == "succeeded"
    a, b = metrics(full / "checkpoints" / "metrics.jsonl"), metrics(resumed / "checkpoints" / "metrics.jsonl")
    later = {key: value for key, value in a.items() if not (key[0] <= 2 and key[1].startswith("vae_"))}
    assert b.keys() == later.keys() and any(k[1] == "loss" for k in b)
    for key, value in later.items():
        assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert (resumed / "model" / "buckets.json").read_text() == (full / "model" / "buckets.json").read_text()


def test_datasets_page_shows_the_bucket_histogram(mixed: str) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).with_name("datasets_page_app.py")), default_timeout=60).run()
    at.selectbox(key="dataset_choice").set_value("shapes")
    at = at.run()
    assert not at.exception, at.exception
    shown = {m.label: m.value for m in at.metric}
    # what a 32 px training keeps of the upload (the import may have held some out for validation, all are counted)
    assert shown["Left out"] == "2" and shown["Upscaled"] == "2" and shown["Buckets used"] == "3"
    at.number_input(key="bk-aspect-shapes").set_value(6.0)
    at = at.run()
    assert {m.label: m.value for m in at.metric}["Left out"] == "0"
