"""The training loop: read it top to bottom.

`train(config)` builds (or loads) the model, loads the dataset version, then runs the stages in
order: `vae` (reconstruction + KL) and `unet` (denoising, with the VAE and usually the text encoder
frozen). A stage is a `Stage`: its objective, the inputs of a micro-batch, its validation and what
it does when done. `run_stage` is the one cadence all stages share: micro-batches and an optimizer
step, then every N steps log metrics, validate, render a sample grid, and checkpoint; SIGTERM saves
a checkpoint and stops cleanly. A new stage is a `_<name>_stage` method and an entry in `STAGES`
(plus its metric names in `logline` and its order in `checkpoint`). The same code runs on one CPU,
under torchrun on many GPUs (DDP, or DeepSpeed when the config has a `deepspeed:` section; see
`distributed.Engine`) and inside a SageMaker container.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.training_utils import EMAModel
from torch import nn

from core.errors import StudioError
from core.files import atomic_path, atomic_write_text
from core.inference.torch_backend import components_size_multiple, size_limits
from core.modeling.io import load_components, save_components
from core.modeling.lora import add_lora, has_lora, load_lora_state, lora_state
from core.modeling.presets import Components, build_components
from core.tracking import flatten
from core.training.buckets import bucket_spec, sample_sizes, write_trained_sizes
from core.training.captions import noise_captions, noise_tokens
from core.training.checkpoint import checkpoint_name, hold_checkpoints, load_state, resolve_resume, save_checkpoint, save_state
from core.training.config import StageConfig, TrainConfig
from core.training.data import batch_indices, load_splits, prior_batch_indices
from core.training.distributed import Dist, Engine, init_distributed
from core.training.logline import format_line, metric_key
from core.training.metrics import MetricsSink
from core.training.objectives import DenoiseObjective, VaeObjective, embed_captions, tokenize
from core.training.subject import class_grid, class_images, subject_prompts, subject_splits
from core.training.validation import encode_stats, heldout_loss, prompt_grid, reconstruction, sample_rows

log = logging.getLogger("core.training")
STATUS_FILE = "status.json"
SCALE_SAMPLES = 4096  # enough images to estimate the latent std; encoding all of a large set costs minutes


@dataclass
class TrainResult:
    status: str  # "succeeded" or "stopped"
    model_dir: Path | None
    stage: str
    step: int


@dataclass
class Stage:
    """What one stage trains and how it is measured; `run_stage` does the rest."""

    name: str  # names its checkpoints, its log lines and its metric keys
    cfg: StageConfig
    objective: nn.Module  # returns {"loss": ..., other values to log}
    inputs: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]  # the objective's inputs for these image indices
    validate: Callable[[], dict[str, float]]
    finish: Callable[[], None]  # after the last step, before the stage's final checkpoint
    samples: bool = False  # render a sample grid every `sample_every` steps
    ema_decay: float | None = None  # keep an EMA of the UNet's trained weights


class StopFlag:
    """Set by SIGTERM (a stop from the studio, or a spot interruption); checked after each step."""

    def __init__(self) -> None:
        self.requested = False
        with contextlib.suppress(ValueError):  # only the main thread may install handlers
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_: Any) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping.")
        self.requested = True


class Trainer:
    def __init__(self, config: TrainConfig, d: Dist, data_dir: Path, model_dir: Path | None = None) -> None:
        self.config = config
        self.d = d
        self.stop = StopFlag()
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision)
        if config.mixed_precision == "fp16" and d.device.type != "cuda":
            raise StudioError("Mixed precision fp16 needs a GPU; use bf16 or no on a CPU.")
        subject = config.subject
        # Generated class images come from the base as it is on disk, before any adapter or step.
        self.classes = class_images(config, d) if subject and subject.prior_preservation else None
        self.components = self._load_model(model_dir)
        self.resolution = self.components.resolution
        step = components_size_multiple(self.components)
        spec = bucket_spec(config.buckets, self.resolution, step, size_limits(self.resolution, step))
        log.info("Loading %s at %dx%d", data_dir, self.resolution, self.resolution)
        self.train_split, self.val_split = load_splits(data_dir, spec)
        if config.buckets.enabled:
            used = ", ".join(f"{w}x{h} ({n})" for (w, h), n in zip(self.train_split.sizes, self.train_split.counts, strict=True))
            log.info("Train images by bucket: %s; %d upscaled, %d left out as too elongated", used, self.train_split.upscaled, self.train_split.dropped)
        self.sizes = self.train_split.sizes  # the dataset's bucket sizes, most images first: what inference offers
        self.prior_buckets = 0  # buckets of class images at the end of the train split (prior preservation)
        if subject:
            buckets = len(self.train_split.buckets)
            self.train_split, self.val_split = subject_splits(config, self.train_split, self.val_split, self.classes, spec)
            self.prior_buckets = len(self.train_split.buckets) - buckets
        self.prompts = config.validation_prompts or subject_prompts(subject) or sorted(set(self.val_split.captions) | set(self.train_split.captions))[:10]
        self.sink = MetricsSink(config.checkpoints / "metrics.jsonl", config.mlflow_run_id) if d.main else None
        self.generator = torch.Generator().manual_seed(config.seed * 7919 + d.rank)
        self.ema: EMAModel | None = None

    def _load_model(self, model_dir: Path | None) -> Components:
        """The preset built from config, the fine-tuning base, or a checkpoint's model when resuming."""
        c = self.config
        folder = model_dir or (c.base_model if c.preset == "finetune" else None)
        if folder is not None:
            components = load_components(folder, c.unet.prediction_type, c.unet.zero_terminal_snr)
        else:
            components = build_components(c.preset, c.unet.prediction_type or "epsilon", c.seed, bool(c.unet.zero_terminal_snr))
        for module in (components.text_encoder, components.vae, components.unet):
            module.to(self.d.device)
        if c.gradient_checkpointing:
            components.unet.enable_gradient_checkpointing()
            components.vae.enable_gradient_checkpointing()
        if c.unet.lora_rank:
            add_lora(components.unet, c.unet.lora_rank)
        return components

    # ---- run -----------------------------------------------------------------------------------
    def run(self, resume: Path | None) -> TrainResult:
        state = load_state(resume / "state.pt") if resume else None
        if resume:
            log.info("Resuming from %s (stage %s, step %s)", resume, state["stage"], state["step"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        self._log_run_info()
        stages = self.config.stages()
        for index, name in enumerate(stages):
            if state and stages.index(state["stage"]) > index:
                continue
            own_state = state if state and state["stage"] == name else None
            stopped_at = self.run_stage(STAGES[name](self), own_state, resume)
            if stopped_at is not None:
                self._write_status("stopped", name, stopped_at)
                return TrainResult("stopped", None, name, stopped_at)
        model_dir = self._finish()
        last, steps = stages[-1], getattr(self.config, stages[-1]).steps
        self._write_status("succeeded", last, steps, model_dir)
        return TrainResult("succeeded", model_dir, last, steps)

    def run_stage(self, stage: Stage, state: dict[str, Any] | None, resume: Path | None) -> int | None:
        """Train one stage from its first (or resumed) step; returns the step it stopped at, or None when done."""
        c, d, cfg = self.config, self.d, stage.cfg
        engine = Engine(stage.objective, cfg, c, d)
        # Made after the wrapper: DDP has broadcast rank 0's weights, so every rank averages the same ones.
        self.ema = EMAModel(self._ema_params(), decay=stage.ema_decay) if stage.ema_decay else None
        start = self._restore(engine, state, resume)
        tick, seen = time.perf_counter(), 0
        for step in range(start, cfg.steps):
            totals: dict[str, torch.Tensor] = {}
            for micro in range(cfg.grad_accum):
                idx = self._batch(cfg, step * cfg.grad_accum + micro)
                inputs = stage.inputs(idx)
                with engine.sync(last_micro_step=micro == cfg.grad_accum - 1):
                    with self._autocast():
                        out = engine.model(*inputs)
                    engine.backward(out["loss"])
                for key, value in out.items():  # the step's values are the mean over its micro-batches
                    totals[key] = totals.get(key, 0) + value.detach().float() / cfg.grad_accum
                seen += len(idx) * d.world
            grad_norm = engine.step()
            if self.ema is not None:
                self.ema.step(self._ema_params())
            done = step + 1
            end = done == cfg.steps
            if done % c.log_every == 0 or end:
                losses = d.means({key: float(value) for key, value in totals.items()})  # the same on any rank count
                rates = {"lr": engine.lr, "grad_norm": grad_norm, "samples_per_s": seen / (time.perf_counter() - tick)}
                self._emit(stage.name, done, losses | rates, total=cfg.steps)
                tick, seen = time.perf_counter(), 0
            if done % c.validate_every == 0 or end:
                self._emit(stage.name, done, d.means(stage.validate()))
            if stage.samples and done % c.sample_every == 0 and not end:
                self._sample(done)
            if d.any(self.stop.requested):
                self._checkpoint(stage.name, done, engine)
                return done
            if done % c.checkpoint_every == 0 and not end:
                self._checkpoint(stage.name, done, engine)
        if self.ema is not None:  # the averaged weights are what the stage hands on
            self.ema.copy_to(self._ema_params())
            self.ema = None
        stage.finish()
        self._checkpoint(stage.name, cfg.steps, engine)
        return None

    # ---- stage: VAE ----------------------------------------------------------------------------
    def _vae_stage(self) -> Stage:
        cfg, vae = self.config.vae, self.components.vae
        vae.requires_grad_(True).train()
        channels, factor = vae.config.latent_channels, 2 ** (len(vae.config.block_out_channels) - 1)

        def inputs(idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
            pixels = self.train_split.pixels(idx).to(self.d.device)  # one bucket: one size
            return pixels, self._rand(len(idx), channels, pixels.shape[2] // factor, pixels.shape[3] // factor)

        def validate() -> dict[str, float]:
            return reconstruction(vae, self.val_split, self.d.device)

        def finish() -> None:
            vae.requires_grad_(False).eval()
            # Scale latents to unit variance, as Stable Diffusion's 0.18215 does for its VAE.
            stats = encode_stats(vae, self.train_split.head(SCALE_SAMPLES), self.d.device)
            std = torch.cat([mean.flatten() for mean, _ in stats]).std()  # over every bucket's latents
            vae.register_to_config(scaling_factor=1.0 / float(std.clamp_min(1e-6)))
            log.info("Latent scaling factor: %.5f", vae.config.scaling_factor)

        return Stage("vae", cfg, VaeObjective(vae, cfg.kl_weight), inputs, validate, finish)

    # ---- stage: UNet ---------------------------------------------------------------------------
    def _unet_stage(self) -> Stage:
        cfg, c = self.config.unet, self.components
        c.vae.requires_grad_(False).eval()
        train_text = cfg.train_text_encoder
        c.text_encoder.requires_grad_(train_text).train(train_text)
        if not cfg.lora_rank:
            c.unet.requires_grad_(True)
        c.unet.train()
        prior_weight = self.config.subject.prior_loss_weight if self.config.subject else 1.0
        objective = DenoiseObjective(c.unet, c.text_encoder if train_text else None, c.scheduler, cfg.min_snr_gamma, prior_weight)
        # Encoding the whole split up front pays off only when the run sees at least that many images;
        # decided on the total step count so a resumed run makes the same choice.
        worth_it = cfg.steps * cfg.batch_size * cfg.grad_accum >= len(self.train_split)
        cache = encode_stats(c.vae, self.train_split, self.d.device) if self.config.cache_latents and worth_it else None
        every_caption = self.train_split.captions + self.val_split.captions + [""]
        embeddings = None if train_text else embed_captions(c.text_encoder, c.tokenizer, every_caption, self.d.device)
        scale = c.vae.config.scaling_factor
        inserted = noise_tokens(c.tokenizer) if cfg.caption_noise else None

        def text(captions: list[str]) -> torch.Tensor:
            if embeddings is None:
                return tokenize(c.tokenizer, captions, self.d.device)
            return torch.stack([embeddings[t] for t in captions])

        def part(idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with torch.no_grad():
                if cache is not None:  # one latent tensor per bucket
                    bucket, local = self.train_split.locate(idx)
                    mean, std = cache[bucket][0][local], cache[bucket][1][local]
                else:
                    dist = c.vae.encode(self.train_split.pixels(idx).to(self.d.device)).latent_dist
                    mean, std = dist.mean, dist.std
                latents = (mean + std * self._rand(*mean.shape)) * scale
            drop = torch.rand(len(idx), generator=self.generator) < cfg.caption_dropout
            captions = ["" if d else self.train_split.captions[i] for i, d in zip(idx.tolist(), drop.tolist(), strict=True)]
            if inserted is not None:
                captions = noise_captions(captions, cfg.caption_noise, inserted, self.generator)
            noise = self._rand(*latents.shape)
            if cfg.noise_offset:
                noise = noise + cfg.noise_offset * self._rand(latents.shape[0], latents.shape[1], 1, 1)
            timesteps = torch.randint(0, c.scheduler.config.num_train_timesteps, (len(idx),), generator=self.generator).to(self.d.device)
            return latents, noise, timesteps, text(captions)

        def inputs(idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if not self.prior_buckets:
                return part(idx)
            half = len(idx) // 2  # subject images, then as many class images (maybe of another size)
            return (*part(idx[:half]), *part(idx[half:]))

        def finish() -> None:
            c.unet.eval()
            c.text_encoder.eval()

        def validate() -> dict[str, float]:
            with self._eval_weights():
                return heldout_loss(c, self.val_split, self.d.device, text, encode_text=train_text)

        return Stage("unet", cfg, objective, inputs, validate, finish, samples=True, ema_decay=cfg.ema_decay)

    def _batch(self, cfg: StageConfig, number: int) -> torch.Tensor:
        """The image indices of micro-batch `number`: a pure function of (seed, number, rank), so a
        resumed run sees the batches an uninterrupted one would have."""
        c, d, counts = self.config, self.d, self.train_split.counts
        if self.prior_buckets:  # subject images, then as many class images
            subject = len(counts) - self.prior_buckets
            return prior_batch_indices(counts[:subject], counts[subject:], cfg.batch_size, number, c.seed, d.rank, d.world)
        return batch_indices(counts, cfg.batch_size, number, c.seed, d.rank, d.world)

    @contextlib.contextmanager
    def _eval_weights(self) -> Iterator[None]:
        """The UNet in eval mode with its EMA weights (when kept), for validation and samples."""
        unet = self.components.unet
        was_training = unet.training
        unet.eval()
        if self.ema is not None:
            self.ema.store(self._ema_params())
            self.ema.copy_to(self._ema_params())
        try:
            yield
        finally:
            if self.ema is not None:
                self.ema.restore(self._ema_params())
            unet.train(was_training)

    def _ema_params(self) -> list[nn.Parameter]:
        return [p for p in self.components.unet.parameters() if p.requires_grad]

    def _sample(self, step: int) -> None:
        """A grid with one row per validation prompt, fixed seeds; logged per prompt and whole (rank 0)."""
        if not self.d.main:
            return
        c = self.config
        settings = {"steps": c.sample_steps, "guidance": c.sample_guidance, "seed": c.sample_seed, "batch": c.sample_images_per_prompt}
        with self._eval_weights():
            rows = sample_rows(self.components, self.prompts, self.d.device, sample_sizes(self.sizes, self.resolution), **settings)
        grid = prompt_grid(rows, self.prompts)
        path = c.output_dir / "samples" / f"step-{step:07d}.png"
        with atomic_path(path) as tmp:
            grid.save(tmp, format="PNG")
        if self.sink:
            for i, row in enumerate(rows):
                self.sink.image(row, key=f"prompt_{i:02d}", step=step)
            self.sink.image(grid, key="samples", step=step)
        log.info("[unet] step %d sample grid: %s", step, path)

    # ---- bookkeeping -----------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.d.device.type, dtype=self.autocast_dtype)

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator).to(self.d.device)

    def _emit(self, stage: str, step: int, values: dict[str, float], total: int | None = None) -> None:
        """One metric line to the console (SageMaker reads it) and the same values to the sink."""
        if self.sink:
            self.sink.log(step, {metric_key(stage, name): value for name, value in values.items()})
            log.info(format_line(stage, step, values, total))

    def _log_run_info(self) -> None:
        if not self.sink:
            return
        params = flatten(self.config.model_dump(mode="json", exclude={"mlflow_run_id"}))
        schedule = self.components.scheduler.config  # the schedule trained, where the config left it to the base
        params.update({"unet.prediction_type": schedule.prediction_type, "unet.zero_terminal_snr": schedule.rescale_betas_zero_snr})
        self.sink.params(params)
        tags = {"preset": self.config.preset, "stage": self.config.stage}
        if self.config.dataset:
            tags["dataset"] = self.config.dataset
        self.sink.tags(tags)
        self.sink.artifact_text(json.dumps(self.prompts, indent=1), "validation_prompts.json")
        if self.classes is not None:
            folder = self.config.output_dir / "class-images"
            with atomic_path(folder / "grid.png") as tmp:
                class_grid(self.classes).save(tmp, format="PNG")
            self.sink.artifacts(folder, "class_images")

    def _restore(self, engine: Engine, state: dict[str, Any] | None, resume: Path | None) -> int:
        """The optimizer, EMA and LoRA state of a resumed stage; returns its step (0 for a fresh stage)."""
        if not state:
            return 0
        if engine.deepspeed is not None and resume is not None and (resume / "deepspeed").is_dir():
            engine.deepspeed.load_checkpoint(str(resume / "deepspeed"), load_module_strict=False)
        engine.load_state_dict(state.get("optimizer", {}))
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        if state.get("lora"):
            load_lora_state(self.components.unet, state["lora"])
        return int(state["step"])

    def _checkpoint(self, stage: str, step: int, engine: Engine) -> None:
        name = checkpoint_name(stage, step)
        root = self.config.checkpoints
        staging = root / f".tmp-{name}"
        if engine.deepspeed is not None:
            engine.deepspeed.save_checkpoint(str(staging / "deepspeed"))
        if self.d.main:
            state = {
                "stage": stage,
                "step": step,
                "optimizer": engine.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "lora": lora_state(self.components.unet) if has_lora(self.components.unet) else None,
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
            }

            def write(folder: Path) -> None:
                save_components(self.components, folder / "model", merge_lora=False)
                save_state(folder / "state.pt", state)

            save_checkpoint(root, name, write, self.config.keep_checkpoints, staging=staging)
            log.info("Checkpoint saved: %s", root / name)
        self.d.barrier()

    def _finish(self) -> Path:
        model_dir = self.config.output_dir / "model"
        if self.d.main:
            save_components(self.components, model_dir, training=flatten(self.config.model_dump(mode="json")))
            if self.config.buckets.enabled:  # the sizes inference offers for this model
                write_trained_sizes(model_dir, self.sizes, self.resolution)
            if "unet" in self.config.stages():
                self._sample(self.config.unet.steps)
            if self.sink:
                self.sink.flush()
                self.sink.artifacts(model_dir, "model")
        self.d.barrier()
        return model_dir

    def _write_status(self, status: str, stage: str, step: int, model_dir: Path | None = None) -> None:
        if self.sink:
            self.sink.flush()
        if self.d.main:
            atomic_write_text(self.config.output_dir / STATUS_FILE, json.dumps({"status": status, "stage": stage, "step": step, "model_dir": str(model_dir) if model_dir else None}))


# The stages in training order (`TrainConfig.stages()` picks which run); each builds its `Stage`.
STAGES: dict[str, Callable[[Trainer], Stage]] = {"vae": Trainer._vae_stage, "unet": Trainer._unet_stage}


def resolve_data_dir(config: TrainConfig) -> Path:
    if config.data_dir is not None:
        if not config.data_dir.is_dir():
            raise StudioError(f"The data folder {config.data_dir} does not exist.")
        return config.data_dir
    from core.datasets.versions import materialize, resolve

    assert config.dataset is not None
    name, version = resolve(config.dataset)
    return materialize(name, version)


def train(config: TrainConfig, resume: str | None = None) -> TrainResult:
    lock = hold_checkpoints(config.checkpoints)  # before anything is written there; held to the end
    d = None
    try:
        d = init_distributed(config.device, need_env=config.deepspeed is not None)
        resume_from = resolve_resume(config.checkpoints, resume)
        data_dir = resolve_data_dir(config)
        trainer = Trainer(config, d, data_dir, model_dir=resume_from / "model" if resume_from else None)
        return trainer.run(resume_from)
    finally:
        if d is not None:
            d.close()
        if lock is not None:
            lock.close()
