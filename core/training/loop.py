"""The training loop: read it top to bottom.

`train(config)` builds (or loads) the model, loads the dataset version, then runs the stages in
order: `vae` (reconstruction + KL) and `unet` (denoising, with the VAE and usually the text encoder
frozen). Every N steps it logs metrics, measures held-out loss, renders a sample grid and saves a
checkpoint; SIGTERM saves a checkpoint and stops cleanly. The same code runs on one CPU, under
torchrun on many GPUs (DDP, or DeepSpeed when the config has a `deepspeed:` section) and inside a
SageMaker container.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn

from core.errors import StudioError
from core.inference.torch_backend import GenerateRequest, generate_with, image_grid
from core.modeling.io import load_components, save_components
from core.modeling.lora import add_lora, has_lora, load_lora_state, lora_state
from core.modeling.presets import Components, build_components
from core.training.checkpoint import checkpoint_name, latest_checkpoint, load_state, save_checkpoint, save_state
from core.training.config import StageConfig, TrainConfig
from core.training.data import Split, batch_indices, load_splits
from core.training.distributed import Dist, init_distributed
from core.training.metrics import MetricsSink
from core.training.objectives import DenoiseObjective, VaeObjective
from core.tracking import flatten

log = logging.getLogger("core.training")
STATUS_FILE = "status.json"
VAL_LIMIT = 256
SCALE_SAMPLES = 4096  # enough images to estimate the latent std; encoding all of a large set costs minutes


@dataclass
class TrainResult:
    status: str  # "succeeded" or "stopped"
    model_dir: Path | None
    stage: str
    step: int


class StopFlag:
    """Set by SIGTERM (a stop from the studio, or a spot interruption); checked after each step."""

    def __init__(self) -> None:
        self.requested = False
        with contextlib.suppress(ValueError):  # only the main thread may install handlers
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_: Any) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping.")
        self.requested = True


class Optimizer:
    """AdamW + warmup/cosine (+ GradScaler for fp16), or DeepSpeed's engine when configured."""

    def __init__(self, objective: nn.Module, params: list[nn.Parameter], stage: StageConfig, config: TrainConfig, d: Dist):
        self.stage = stage
        self.params = params
        inner = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
        total = max(1, stage.steps)
        self.schedule = get_scheduler(
            stage.lr_schedule if stage.lr_schedule != "constant" else "constant_with_warmup",
            inner,
            num_warmup_steps=min(stage.warmup_steps, total),
            num_training_steps=total,
        )
        self.engine = None
        if config.deepspeed is not None:
            import deepspeed

            ds = {
                "train_micro_batch_size_per_gpu": stage.batch_size,
                "gradient_accumulation_steps": stage.grad_accum,
                "gradient_clipping": stage.max_grad_norm or 0.0,
                "zero_optimization": {"stage": config.deepspeed.zero_stage},
                "bf16": {"enabled": config.mixed_precision == "bf16"},
                "fp16": {"enabled": config.mixed_precision == "fp16"},
                "zero_allow_untested_optimizer": True,
                "zero_force_ds_cpu_optimizer": False,
                "steps_per_print": 10**9,
            }
            if config.deepspeed.offload_optimizer:
                ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
            self.engine, self.optimizer, _, self.schedule = deepspeed.initialize(
                model=objective, optimizer=inner, lr_scheduler=self.schedule, config=ds
            )
            self.model: nn.Module = self.engine
        else:
            self.optimizer = inner
            self.model = nn.parallel.DistributedDataParallel(objective) if d.world > 1 else objective
        self.scaler = torch.amp.GradScaler(enabled=config.mixed_precision == "fp16" and self.engine is None)

    def backward(self, loss: torch.Tensor) -> None:
        if self.engine is not None:
            self.engine.backward(loss)
        else:
            self.scaler.scale(loss / self.stage.grad_accum).backward()

    def step(self) -> float:
        """One optimizer step after `grad_accum` backward passes; returns the gradient norm."""
        if self.engine is not None:
            self.engine.step()
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else 0.0
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.stage.max_grad_norm or math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return float(norm)

    def micro_step(self) -> None:
        """DeepSpeed counts micro-batches itself: it must see every one."""
        if self.engine is not None:
            self.engine.step()

    @property
    def lr(self) -> float:
        return float(self.schedule.get_last_lr()[0])

    def state_dict(self) -> dict[str, Any]:
        if self.engine is not None:
            return {}  # DeepSpeed saves its own state next to ours
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.engine is None and state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            self.scaler.load_state_dict(state["scaler"])


class Trainer:
    def __init__(self, config: TrainConfig, d: Dist, data_dir: Path, model_dir: Path | None = None) -> None:
        self.config = config
        self.d = d
        self.stop = StopFlag()
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision)
        if config.mixed_precision == "fp16" and d.device.type != "cuda":
            raise StudioError("Mixed precision fp16 needs a GPU; use bf16 or no on a CPU.")
        self.components = self._load_model(model_dir)
        self.resolution = self.components.resolution
        log.info("Loading %s at %dx%d", data_dir, self.resolution, self.resolution)
        self.train_split, self.val_split = load_splits(data_dir, self.resolution)
        self.prompts = config.validation_prompts or sorted(set(self.val_split.captions) | set(self.train_split.captions))[:10]
        self.sink = MetricsSink(config.checkpoints / "metrics.jsonl", config.mlflow_run_id) if d.main else None
        self.generator = torch.Generator().manual_seed(config.seed * 7919 + d.rank)
        self.ema: EMAModel | None = None

    # ---- model -------------------------------------------------------------------------------
    def _load_model(self, model_dir: Path | None) -> Components:
        """The preset built from config, the fine-tuning base, or a checkpoint's model when resuming."""
        c = self.config
        folder = model_dir or (c.base_model if c.preset == "finetune" else None)
        if folder is not None:
            components = load_components(folder, prediction_type=c.unet.prediction_type)
        else:
            components = build_components(c.preset, prediction_type=c.unet.prediction_type, seed=c.seed)
        for module in (components.text_encoder, components.vae, components.unet):
            module.to(self.d.device)
        if c.gradient_checkpointing:
            components.unet.enable_gradient_checkpointing()
            components.vae.enable_gradient_checkpointing()
        if c.unet.lora_rank:
            add_lora(components.unet, c.unet.lora_rank)
        return components

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.d.device.type, dtype=self.autocast_dtype)

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator).to(self.d.device)

    # ---- run -----------------------------------------------------------------------------------
    def run(self, resume: Path | None) -> TrainResult:
        state = load_state(resume / "state.pt") if resume else None
        if resume:
            log.info("Resuming from %s (stage %s, step %s)", resume, state["stage"], state["step"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        self._log_run_info()
        stages = self.config.stages()
        for index, stage in enumerate(stages):
            if state and stages.index(state["stage"]) > index:
                continue
            own_state = state if state and state["stage"] == stage else None
            run_stage = self._train_vae if stage == "vae" else self._train_unet
            stopped_at = run_stage(own_state, resume)
            if stopped_at is not None:
                self._write_status("stopped", stage, stopped_at)
                return TrainResult("stopped", None, stage, stopped_at)
        model_dir = self._finish()
        last = stages[-1]
        steps = getattr(self.config, last).steps
        self._write_status("succeeded", last, steps, model_dir)
        return TrainResult("succeeded", model_dir, last, steps)

    def _log_run_info(self) -> None:
        if not self.sink:
            return
        self.sink.params(flatten(self.config.model_dump(mode="json", exclude={"mlflow_run_id"})))
        tags = {"preset": self.config.preset, "stage": self.config.stage}
        if self.config.dataset:
            tags["dataset"] = self.config.dataset
        self.sink.tags(tags)
        self.sink.artifact_text(json.dumps(self.prompts, indent=1), "validation_prompts.json")

    # ---- stage: VAE ----------------------------------------------------------------------------
    def _train_vae(self, state: dict[str, Any] | None, resume: Path | None) -> int | None:
        cfg = self.config.vae
        vae = self.components.vae
        vae.requires_grad_(True).train()
        objective = VaeObjective(vae, cfg.kl_weight)
        opt = Optimizer(objective, [p for p in vae.parameters() if p.requires_grad], cfg, self.config, self.d)
        start = self._restore(opt, state, resume)
        latent = (self.components.vae.config.latent_channels, self.resolution // self._vae_factor())
        tick, seen = time.perf_counter(), 0
        for step in range(start, cfg.steps):
            for micro in range(cfg.grad_accum):
                idx = batch_indices(len(self.train_split), cfg.batch_size, step * cfg.grad_accum + micro, self.config.seed, self.d.rank, self.d.world)
                pixels = self.train_split.pixels(idx).to(self.d.device)
                eps = self._rand(len(idx), latent[0], latent[1], latent[1])
                with self._autocast():
                    loss, mse = opt.model(pixels, eps)
                opt.backward(loss)
                if micro < cfg.grad_accum - 1:
                    opt.micro_step()
                seen += len(idx) * self.d.world
            grad_norm = opt.step()
            done = step + 1
            if done % self.config.log_every == 0 or done == cfg.steps:
                elapsed = time.perf_counter() - tick
                self._log("vae", done, cfg.steps, {"vae_loss": loss.item(), "vae_mse": mse.item(), "vae_lr": opt.lr, "vae_grad_norm": grad_norm, "vae_samples_per_s": seen / elapsed})
                tick, seen = time.perf_counter(), 0
            if done % self.config.validate_every == 0 or done == cfg.steps:
                self._validate_vae(done)
            if self.d.any(self.stop.requested):
                self._checkpoint("vae", done, opt)
                return done
            if done % self.config.checkpoint_every == 0 and done < cfg.steps:
                self._checkpoint("vae", done, opt)
        vae.requires_grad_(False).eval()
        self._set_latent_scale()
        self._checkpoint("vae", cfg.steps, opt)
        return None

    def _vae_factor(self) -> int:
        return 2 ** (len(self.components.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def _validate_vae(self, step: int) -> None:
        vae = self.components.vae
        was_training = vae.training
        vae.eval()
        pixels = self.val_split.pixels(torch.arange(min(len(self.val_split), VAL_LIMIT)))
        errors = []
        for chunk in pixels.split(64):
            chunk = chunk.to(self.d.device)
            recon = vae.decode(vae.encode(chunk).latent_dist.mean).sample.clamp(-1, 1)
            errors.append(((recon - chunk) ** 2).flatten(1).mean(1).cpu())
        mse = torch.cat(errors)
        # PSNR on [0, 1] images: the [-1, 1] range has a peak-to-peak of 2, so MSE/4.
        psnr = float((10 * torch.log10(1.0 / (mse / 4).clamp_min(1e-10))).mean())
        vae.train(was_training)
        if self.sink:
            self.sink.log(step, {"vae_val_mse": float(mse.mean()), "vae_val_psnr": psnr})
            log.info("[vae] step %d val_mse=%.5f val_psnr=%.2f", step, float(mse.mean()), psnr)

    @torch.no_grad()
    def _encode_stats(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std of every image of a split (the latent cache)."""
        vae = self.components.vae
        means, stds = [], []
        for chunk in torch.arange(len(split)).split(128):
            dist = vae.encode(split.pixels(chunk).to(self.d.device)).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
        return torch.cat(means), torch.cat(stds)

    def _set_latent_scale(self) -> None:
        """Scale latents to unit variance, as Stable Diffusion's 0.18215 does for its VAE."""
        n = min(len(self.train_split), SCALE_SAMPLES)
        mean, _ = self._encode_stats(Split(self.train_split.images[:n], self.train_split.captions[:n]))
        scale = 1.0 / float(mean.std().clamp_min(1e-6))
        self.components.vae.register_to_config(scaling_factor=scale)
        log.info("Latent scaling factor: %.5f", scale)

    # ---- stage: UNet ---------------------------------------------------------------------------
    def _train_unet(self, state: dict[str, Any] | None, resume: Path | None) -> int | None:
        cfg = self.config.unet
        c = self.components
        c.vae.requires_grad_(False).eval()
        train_text = cfg.train_text_encoder
        c.text_encoder.requires_grad_(train_text).train(train_text)
        if not cfg.lora_rank:
            c.unet.requires_grad_(True)
        c.unet.train()
        objective = DenoiseObjective(c.unet, c.text_encoder if train_text else None, c.scheduler, cfg.min_snr_gamma)
        params = [p for p in objective.parameters() if p.requires_grad]
        opt = Optimizer(objective, params, cfg, self.config, self.d)
        if cfg.ema_decay:
            self.ema = EMAModel([p for p in c.unet.parameters() if p.requires_grad], decay=cfg.ema_decay)
        start = self._restore(opt, state, resume)
        if state and self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        if state and state.get("lora"):
            load_lora_state(c.unet, state["lora"])
        # Encoding the whole split up front pays off only when the run sees at least that many images;
        # decided on the total step count so a resumed run makes the same choice.
        worth_it = cfg.steps * cfg.batch_size * cfg.grad_accum >= len(self.train_split)
        cache = self._encode_stats(self.train_split) if self.config.cache_latents and worth_it else None
        embeddings = None if train_text else self._embed_captions(self.train_split.captions + self.val_split.captions + [""])
        scale = c.vae.config.scaling_factor
        tick, seen = time.perf_counter(), 0
        for step in range(start, cfg.steps):
            for micro in range(cfg.grad_accum):
                idx = batch_indices(len(self.train_split), cfg.batch_size, step * cfg.grad_accum + micro, self.config.seed, self.d.rank, self.d.world)
                with torch.no_grad():
                    if cache is not None:
                        mean, std = cache[0][idx], cache[1][idx]
                    else:
                        dist = c.vae.encode(self.train_split.pixels(idx).to(self.d.device)).latent_dist
                        mean, std = dist.mean, dist.std
                    latents = (mean + std * self._rand(*mean.shape)) * scale
                drop = torch.rand(len(idx), generator=self.generator) < cfg.caption_dropout
                captions = ["" if d else self.train_split.captions[i] for i, d in zip(idx.tolist(), drop.tolist(), strict=True)]
                text = self._tokens(captions) if train_text else torch.stack([embeddings[t] for t in captions])
                noise = self._rand(*latents.shape)
                if cfg.noise_offset:
                    noise = noise + cfg.noise_offset * self._rand(latents.shape[0], latents.shape[1], 1, 1)
                timesteps = torch.randint(0, c.scheduler.config.num_train_timesteps, (len(idx),), generator=self.generator).to(self.d.device)
                with self._autocast():
                    loss = opt.model(latents, noise, timesteps, text)
                opt.backward(loss)
                if micro < cfg.grad_accum - 1:
                    opt.micro_step()
                seen += len(idx) * self.d.world
            grad_norm = opt.step()
            if self.ema is not None:
                self.ema.step([p for p in c.unet.parameters() if p.requires_grad])
            done = step + 1
            if done % self.config.log_every == 0 or done == cfg.steps:
                elapsed = time.perf_counter() - tick
                self._log("unet", done, cfg.steps, {"loss": self.d.mean(loss.item()), "lr": opt.lr, "grad_norm": grad_norm, "samples_per_s": seen / elapsed})
                tick, seen = time.perf_counter(), 0
            if done % self.config.validate_every == 0 or done == cfg.steps:
                self._validate_unet(done, embeddings)
            if done % self.config.sample_every == 0 and done < cfg.steps:
                self._sample(done)
            if self.d.any(self.stop.requested):
                self._checkpoint("unet", done, opt)
                return done
            if done % self.config.checkpoint_every == 0 and done < cfg.steps:
                self._checkpoint("unet", done, opt)
        c.unet.eval()
        c.text_encoder.eval()
        if self.ema is not None:
            self.ema.copy_to([p for p in c.unet.parameters() if p.requires_grad])
            self.ema = None
        self._checkpoint("unet", cfg.steps, opt)
        return None

    def _tokens(self, captions: list[str]) -> torch.Tensor:
        tok = self.components.tokenizer
        return tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids.to(self.d.device)

    @torch.no_grad()
    def _embed_captions(self, captions: list[str]) -> dict[str, torch.Tensor]:
        unique = sorted(set(captions))
        out: dict[str, torch.Tensor] = {}
        for i in range(0, len(unique), 256):
            chunk = unique[i : i + 256]
            hidden = self.components.text_encoder(self._tokens(chunk))[0]
            out.update(zip(chunk, hidden, strict=True))
        return out

    @torch.no_grad()
    def _validate_unet(self, step: int, embeddings: dict[str, torch.Tensor] | None) -> None:
        """Held-out loss with fixed noise and timesteps, so values are comparable across steps and runs."""
        c = self.components
        n = min(len(self.val_split), VAL_LIMIT)
        fixed = torch.Generator().manual_seed(20_251_126)
        mean, _ = self._encode_stats(Split(self.val_split.images[:n], self.val_split.captions[:n]))
        latents = mean * c.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=fixed).to(self.d.device)
        timesteps = torch.randint(0, c.scheduler.config.num_train_timesteps, (n,), generator=fixed).to(self.d.device)
        captions = self.val_split.captions[:n]
        objective = DenoiseObjective(c.unet, c.text_encoder if embeddings is None else None, c.scheduler, None)
        was_training = c.unet.training
        c.unet.eval()
        with self._ema_weights():
            losses = []
            for chunk in torch.arange(n).split(64):
                caps = [captions[i] for i in chunk.tolist()]
                text = self._tokens(caps) if embeddings is None else torch.stack([embeddings[t] for t in caps])
                losses.append(float(objective(latents[chunk], noise[chunk], timesteps[chunk], text, weighted=False)) * len(chunk))
        c.unet.train(was_training)
        value = self.d.mean(sum(losses) / n)
        if self.sink:
            self.sink.log(step, {"val_loss": value})
            log.info("[unet] step %d val_loss=%.5f", step, value)

    @contextlib.contextmanager
    def _ema_weights(self):  # type: ignore[no-untyped-def]
        if self.ema is None:
            yield
            return
        params = [p for p in self.components.unet.parameters() if p.requires_grad]
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    @torch.no_grad()
    def _sample(self, step: int) -> Path | None:
        """A grid with one row per validation prompt, fixed seeds; logged per prompt and whole."""
        if not self.d.main:
            return None
        c = self.components
        was_training = c.unet.training
        c.unet.eval()
        rows = []
        with self._ema_weights():
            for i, prompt in enumerate(self.prompts):
                request = GenerateRequest(
                    prompt=prompt,
                    steps=self.config.sample_steps,
                    guidance=self.config.sample_guidance,
                    seed=self.config.sample_seed,
                    batch=self.config.sample_images_per_prompt,
                )
                images = generate_with(c, request, self.d.device)
                row = image_grid(images, rows=1)
                rows.append(row)
                if self.sink:
                    self.sink.image(row, key=f"prompt_{i:02d}", step=step)
        c.unet.train(was_training)
        grid = image_grid(rows, rows=len(rows)) if len(rows) > 1 else rows[0]
        path = self.config.output_dir / "samples" / f"step-{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        if self.sink:
            self.sink.image(grid, key="samples", step=step)
        log.info("[unet] step %d sample grid: %s", step, path)
        return path

    # ---- bookkeeping -----------------------------------------------------------------------------
    def _log(self, stage: str, step: int, total: int, values: dict[str, float]) -> None:
        if not self.sink:
            return
        self.sink.log(step, values)
        text = " ".join(f"{k.removeprefix('vae_')}={v:.4g}" for k, v in values.items())
        log.info("[%s] step %d/%d %s", stage, step, total, text)

    def _restore(self, opt: Optimizer, state: dict[str, Any] | None, resume: Path | None) -> int:
        if not state:
            return 0
        if opt.engine is not None and resume is not None and (resume / "deepspeed").is_dir():
            opt.engine.load_checkpoint(str(resume / "deepspeed"), load_module_strict=False)
        opt.load_state_dict(state.get("optimizer", {}))
        return int(state["step"])

    def _checkpoint(self, stage: str, step: int, opt: Optimizer) -> None:
        name = checkpoint_name(stage, step)
        root = self.config.checkpoints
        staging = root / f".tmp-{name}"
        if opt.engine is not None:
            opt.engine.save_checkpoint(str(staging / "deepspeed"))
        if self.d.main:
            state = {
                "stage": stage,
                "step": step,
                "optimizer": opt.state_dict(),
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
            save_components(self.components, model_dir)
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
            path = self.config.output_dir / STATUS_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"status": status, "stage": stage, "step": step, "model_dir": str(model_dir) if model_dir else None}))


def resolve_resume(config: TrainConfig, resume: str | None) -> Path | None:
    if not resume:
        return None
    if resume == "latest":
        found = latest_checkpoint(config.checkpoints)
        if found is None:
            log.info("No checkpoint in %s yet; starting from the beginning.", config.checkpoints)
        return found
    path = Path(resume)
    if not (path / "state.pt").is_file():
        raise StudioError(f"{path} is not a checkpoint folder (state.pt is missing).")
    return path


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
    d = init_distributed(config.device, need_env=config.deepspeed is not None)
    resume_from = resolve_resume(config, resume)
    data_dir = resolve_data_dir(config)
    trainer = Trainer(config, d, data_dir, model_dir=resume_from / "model" if resume_from else None)
    return trainer.run(resume_from)
