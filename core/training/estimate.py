"""A measured estimate of a training run: a few real steps of each stage, before launch.

`python -m core.training.estimate` reads a TrainConfig as JSON on stdin and prints a `RunEstimate`
as JSON: it runs in a process of its own, so its peak memory is the training's alone and the
studio's process stays light. It copies a small sample of the dataset, builds the model as the
run would, runs `WARMUP_STEPS + MEASURED_STEPS` steps of each stage through the loop's own
`run_stage` (warm-up steps are not counted), and times one validation, checkpoint, sample grid and
the final save. The whole run is then

    startup + data loading + Σ stages (setup + steps × s/step + validations + samples + checkpoints)
    + the final model and grid,

where each allowance is measured once on the sample and scaled to the full dataset where its cost
grows with it (loading, latent caching, validation up to `VAL_LIMIT` images, the latent scale),
and a grid's cost taken from grids of 1 and `SAMPLE_STEPS` denoising steps. The peak memory is
CUDA's max allocated on a GPU, else the process's peak RSS, plus the pixels (and cached latents)
of the images the sample left out. Not measured: writing to MLflow (the sample run has none), a
queue wait, and other load on the machine between the estimate and the run.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from core.errors import StudioError
from core.training.config import TrainConfig

WARMUP_STEPS = 1  # the first step pays for lazy initialisation; not counted
MEASURED_STEPS = 3
VAL_SAMPLE = 32  # held-out images in the sample
SAMPLE_STEPS = 3  # denoising steps of the timed grid, scaled to the config's
CLASS_SAMPLE = 2  # class images a prior-preservation trial generates; the run's count is scaled from them
MB = 1024 * 1024


class StageEstimate(BaseModel):
    name: str
    steps: int
    batch_size: int
    seconds_per_step: float
    seconds: float  # steps × s/step plus this stage's setup, validations, samples and checkpoints


class RunEstimate(BaseModel):
    """What a run of this config will take on this machine; JSON-serialisable."""

    device: str  # "cpu" or "cuda"
    threads: int
    memory_measure: Literal["cuda_max_allocated", "cpu_peak_rss"]
    peak_memory_mb: float  # measured on the sample, plus what the full dataset adds
    baseline_memory_mb: float  # the process before the model and data: what the peak is over
    device_memory_mb: float  # the GPU's memory, or the RAM available on this machine
    stages: list[StageEstimate]
    allowances: dict[str, float]  # seconds outside the steps: startup, data, validation, sampling, checkpoints, final, class images
    total_seconds: float
    sample_images: int
    dataset_images: int
    measured_at: datetime

    @property
    def model_memory_mb(self) -> float:
        return max(self.peak_memory_mb - self.baseline_memory_mb, 0.0)


def memory_refusal(estimate: RunEstimate, limit_mb: float | None = None) -> str | None:
    """One sentence when the run's peak memory exceeds `limit_mb` (default: the measured device's)."""
    limit = estimate.device_memory_mb if limit_mb is None else limit_mb
    if estimate.peak_memory_mb <= limit:
        return None
    where = "GPU memory" if estimate.device == "cuda" else "available RAM"
    return (f"This run needs about {estimate.peak_memory_mb:,.0f} MB but the {where} is {limit:,.0f} MB: "
            "lower the batch sizes, turn on gradient checkpointing or mixed precision, or pick a smaller preset.")


def bucket_refusal(config: TrainConfig, items: list[Any], spec: Any) -> str | None:
    """One sentence when a stage's batch is larger than the smallest bucket's train images (with
    aspect-ratio buckets on): such batches would repeat images. Sizes come from the manifest, no image is read."""
    from core.datasets.buckets import place

    if not config.buckets.enabled:
        return None
    counts = Counter(placed.target for item in items if item.split == "train" and (placed := place((item.width, item.height), spec)))
    if not counts:
        return None  # the loop says why: every image is too elongated
    (width, height), smallest = min(counts.items(), key=lambda kv: kv[1])
    name, cfg = max(((name, getattr(config, name)) for name in config.stages()), key=lambda kv: kv[1].batch_size)
    if cfg.batch_size <= smallest:
        return None
    return (f"The {width}x{height} bucket holds only {smallest} training images, fewer than the {name} batch of {cfg.batch_size}: "
            f"lower the batch size to {smallest} or fewer, or narrow the buckets (buckets.min_side, buckets.max_side, buckets.max_aspect).")


def _bucket_spec(trainer: Any) -> Any:
    """The bucket spec the Trainer loaded its data with (it does not keep it)."""
    from core.inference.torch_backend import components_size_multiple, size_limits
    from core.training.buckets import bucket_spec

    step = components_size_multiple(trainer.components)
    return bucket_spec(trainer.config.buckets, trainer.resolution, step, size_limits(trainer.resolution, step))


def _count(steps: int, every: int, with_end: bool) -> int:
    """How often `done % every == 0` holds over a stage, as `run_stage` checks it; `with_end` adds
    the last step (validation) where the cadence misses it, else leaves the last step out."""
    hits = steps // every
    if with_end:
        return hits + (steps % every != 0)
    return (steps - 1) // every if steps else 0


@contextlib.contextmanager
def _sample_folder(data_dir: Path, items: list[Any], train_n: int, config: TrainConfig) -> Iterator[tuple[Path, int, int, int, list[str]]]:
    """A temporary dataset version with the first `train_n` train and `VAL_SAMPLE` val images.

    Yields (folder, sample images, full train images, full val images, the run's validation prompts).
    """
    from core.datasets.versions import MANIFEST, manifest_bytes
    from core.modeling.tokenizer import clean_caption

    train = [i for i in items if i.split == "train"]
    val = [i for i in items if i.split == "val"]
    if not train:
        raise StudioError(f"The dataset in {data_dir} has no training images.")
    val_full = len(val) or max(1, len(train) // 10)  # the loop's fallback: a slice of train
    # The run's prompts, as the Trainer picks them from the whole dataset, so the sample grid costs the same.
    prompts = config.validation_prompts or sorted({clean_caption(i.caption) for i in items})[:10]
    chosen = train[:train_n] + val[:VAL_SAMPLE]
    with tempfile.TemporaryDirectory(prefix="studio-estimate-") as tmp:
        folder = Path(tmp) / "data"
        (folder / "images").mkdir(parents=True)
        for item in chosen:
            shutil.copyfile(data_dir / item.file, folder / item.file)
        (folder / MANIFEST).write_bytes(manifest_bytes(chosen))
        yield folder, len(chosen), len(train), val_full, prompts


def _peak_memory_mb(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _device_memory_mb(device: Any) -> float:
    import psutil
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / MB
    return psutil.virtual_memory().available / MB


class Timer:
    """Wraps a callable and keeps (start, seconds) of each call."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.calls: list[tuple[float, float]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.calls.append((start, time.perf_counter() - start))

    @property
    def last(self) -> float:
        return self.calls[-1][1]


def _step_seconds(ticks: Timer, accum: int, validation: Timer) -> float:
    """Mean seconds of the counted steps: a step starts at its first micro-batch's inputs and ends
    where the next step (or, after the last, the stage's closing validation) starts."""
    starts = [start for start, _ in ticks.calls[::accum]] + [validation.calls[0][0]]
    counted = starts[WARMUP_STEPS:]
    return (counted[-1] - counted[0]) / (len(counted) - 1)


def _data_mb(trainer: Any, images: int, caches: bool, device: str) -> float:
    """Memory `images` more images take: uint8 pixels in RAM, and their latents when cached."""
    vae = trainer.components.vae
    side = trainer.resolution // 2 ** (len(vae.config.block_out_channels) - 1)
    latents = 2 * 4 * vae.config.latent_channels * side * side if caches else 0  # mean and std, float32
    pixels = 3 * trainer.resolution**2 if device == "cpu" else 0
    return images * (pixels + latents) / MB


def _one_step_grid(trainer: Any, sampler: Timer) -> float:
    """Seconds of a sample grid with a single denoising step."""
    config = trainer.config
    trainer.config = config.model_copy(update={"sample_steps": 1})
    try:
        sampler(0)
    finally:
        trainer.config = config
    return sampler.last


def _grid_seconds(one_step: float, measured: float, measured_steps: int, steps: int) -> float:
    """A grid costs a fixed part (prompts, decoding, drawing) plus its denoising steps: grids of 1
    and `measured_steps` steps give both, for `steps`."""
    if measured_steps == 1:
        return one_step
    return one_step + (measured - one_step) / (measured_steps - 1) * (steps - 1)


def measure(config: TrainConfig, started: float) -> RunEstimate:
    """Run the sample and extrapolate to the whole run; `started` is this process's start (time.time())."""
    from core.settings import get_settings
    from core.datasets.versions import MANIFEST, parse_manifest
    from core.training.data import load_splits
    from core.training.distributed import init_distributed
    from core.training.loop import STAGES, Trainer, resolve_data_dir
    from core.training.subject import class_images
    from core.training.validation import VAL_LIMIT

    d = init_distributed(config.device, need_env=config.deepspeed is not None)
    baseline = _peak_memory_mb(d.device) if d.device.type == "cpu" else 0.0
    data_dir = resolve_data_dir(config)
    items = parse_manifest((data_dir / MANIFEST).read_bytes())
    run_steps = WARMUP_STEPS + MEASURED_STEPS
    stage_cfgs = {name: getattr(config, name) for name in config.stages()}
    # Few enough train images that the sample caches latents exactly when the real run does.
    train_n = max(1, min(run_steps * c.batch_size * c.grad_accum for c in stage_cfgs.values()))
    unet = config.unet
    with tempfile.TemporaryDirectory(prefix="studio-estimate-") as out, _sample_folder(data_dir, items, train_n, config) as sample:
        folder, sample_images, train_full, val_full, prompts = sample
        caches = config.cache_latents and unet.steps * unet.batch_size * unet.grad_accum >= train_full
        every = {key: run_steps for key in ("log_every", "validate_every", "sample_every", "checkpoint_every")}
        subject = config.subject
        generates = subject is not None and subject.prior_preservation and not subject.class_dataset
        trial = config.model_copy(update={
            **every, "data_dir": folder, "dataset": None, "output_dir": Path(out), "checkpoint_dir": None, "mlflow_run_id": None,
            "vae": config.vae.model_copy(update={"steps": run_steps}), "unet": unet.model_copy(update={"steps": run_steps}),
            "validation_prompts": prompts, "cache_latents": caches, "evaluate": None,
            "sample_steps": min(config.sample_steps, SAMPLE_STEPS),
            **({"subject": subject.model_copy(update={"num_class_images": min(subject.num_class_images, CLASS_SAMPLE)})} if subject and generates else {}),
        })
        make_classes = Timer(class_images)
        if generates:
            make_classes(trial, d)  # a few, cached in the trial's checkpoints, where the Trainer finds them
        trainer = Trainer(trial, d, folder)
        ready = time.time()
        spec = _bucket_spec(trainer)
        if (problem := bucket_refusal(config, items, spec)) is not None:
            raise StudioError(problem)
        load = Timer(load_splits)
        load(folder, spec)  # again, timed: the Trainer loaded the sample once already
        sampler, checkpoint = Timer(trainer._sample), Timer(trainer._checkpoint)
        trainer._sample, trainer._checkpoint = sampler, checkpoint  # type: ignore[method-assign]
        data_scale = (train_full + val_full) / sample_images
        generating = make_classes.last if generates else 0.0
        allowances = {"startup": ready - started - load.last - generating, "data": load.last * data_scale,
                      "setup": 0.0, "validation": 0.0, "checkpoints": 0.0}
        if subject and trial.subject and generates:  # generated once before training, at the config's sampling steps
            allowances["class_images"] = generating * subject.num_class_images / trial.subject.num_class_images * config.sample_steps / trial.sample_steps
        stages: list[StageEstimate] = []
        grids: dict[str, int] = {}  # grids rendered during each sampling stage
        for name, cfg in stage_cfgs.items():
            setup = Timer(STAGES[name])
            stage = setup(trainer)
            ticks, validation, finish = Timer(stage.inputs), Timer(stage.validate), Timer(stage.finish)
            trainer.run_stage(replace(stage, inputs=ticks, validate=validation, finish=finish), None, None)
            per_step = _step_seconds(ticks, cfg.grad_accum, validation)
            extra = {
                # Setup (latent cache, caption embeddings) and finish (the latent scale) grow with the dataset.
                "setup": (setup.last + finish.last) * train_full / len(trainer.train_split),
                "validation": _count(cfg.steps, config.validate_every, True) * validation.last
                * min(val_full, VAL_LIMIT) / min(len(trainer.val_split), VAL_LIMIT),
                "checkpoints": (_count(cfg.steps, config.checkpoint_every, False) + 1) * checkpoint.last,
            }
            if stage.samples:
                grids[name] = _count(cfg.steps, config.sample_every, False)
            stages.append(StageEstimate(name=name, steps=cfg.steps, batch_size=cfg.batch_size, seconds_per_step=per_step,
                                        seconds=cfg.steps * per_step + sum(extra.values())))
            for key, value in extra.items():
                allowances[key] += value
        one_step = _one_step_grid(trainer, sampler) if grids else 0.0
        final = Timer(trainer._finish)  # the model saved, and the last grid when the UNet trains
        final()
        grid_s = _grid_seconds(one_step, sampler.last, trial.sample_steps, config.sample_steps) if grids else 0.0
        allowances["final"] = final.last + (grid_s - sampler.last if grids else 0.0)
        allowances["sampling"] = sum(grids.values()) * grid_s
        stages = [s.model_copy(update={"seconds": s.seconds + grids.get(s.name, 0) * grid_s}) for s in stages]
    extra_images = train_full + val_full - sample_images
    return RunEstimate(
        device=d.device.type,
        threads=get_settings().torch_threads,
        memory_measure="cuda_max_allocated" if d.device.type == "cuda" else "cpu_peak_rss",
        peak_memory_mb=_peak_memory_mb(d.device) + _data_mb(trainer, extra_images, caches, d.device.type),
        baseline_memory_mb=baseline,
        device_memory_mb=_device_memory_mb(d.device),
        stages=stages,
        allowances=allowances,
        total_seconds=sum(s.steps * s.seconds_per_step for s in stages) + sum(allowances.values()),
        sample_images=sample_images,
        dataset_images=train_full + val_full,
        measured_at=datetime.now(UTC),
    )


def main() -> int:
    """Read a TrainConfig as JSON on stdin, print the RunEstimate as JSON on stdout."""
    import psutil
    import torch

    from core.settings import get_settings

    started = psutil.Process().create_time()
    torch.set_num_threads(get_settings().torch_threads)
    try:
        config = TrainConfig.model_validate_json(sys.stdin.read())
        print(measure(config, started).model_dump_json(), flush=True)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
