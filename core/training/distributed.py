"""The process group, and the trained module as the loop drives it (`Engine`).

One process by default, torchrun's environment when launched under it. `Engine` owns the wrapper
around the stage's objective: DistributedDataParallel across ranks, DeepSpeed's engine when the
config has a `deepspeed:` section, or the bare module on one process; with it the optimizer, the LR
schedule and (fp16 without DeepSpeed) the GradScaler.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from core.training.config import StageConfig, TrainConfig


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank if any rank says so (e.g. one of them received SIGTERM)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def means(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of each value, in one all-reduce; every rank must call it."""
        if self.world == 1 or not values:
            return dict(values)
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(values, t.tolist(), strict=True)}

    def close(self) -> None:
        """Leave the process group while the interpreter is whole: gloo's threads still holding work
        at interpreter exit abort the process (SIGABRT) after a run that otherwise succeeded."""
        if dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str, need_env: bool = False) -> Dist:
    """Join torchrun's group (gloo on CPU, nccl on GPU). DeepSpeed needs the env even for one process."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if need_env:
        for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if (world > 1 or need_env) and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local_rank, target)


class Engine:
    """AdamW + warmup/cosine around the stage's objective, wrapped for the run's process layout.

    `model` is what the loop calls; the objective returns a dict with `loss` (and values to log).
    """

    def __init__(self, objective: nn.Module, stage: StageConfig, config: TrainConfig, d: Dist) -> None:
        from diffusers.optimization import get_scheduler

        self.stage = stage
        self.params = [p for p in objective.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=stage.lr, weight_decay=stage.weight_decay)
        total = max(1, stage.steps)
        schedule = get_scheduler(
            stage.lr_schedule if stage.lr_schedule != "constant" else "constant_with_warmup",
            optimizer,
            num_warmup_steps=min(stage.warmup_steps, total),
            num_training_steps=total,
        )
        self.deepspeed: Any = None
        if config.deepspeed is not None:
            import deepspeed

            self.deepspeed, self.optimizer, _, self.schedule = deepspeed.initialize(
                model=objective, optimizer=optimizer, lr_scheduler=schedule, config=deepspeed_config(stage, config)
            )
            self.model: nn.Module = self.deepspeed
        else:
            self.optimizer, self.schedule = optimizer, schedule
            self.model = nn.parallel.DistributedDataParallel(objective) if d.world > 1 else objective
        self.scaler = torch.amp.GradScaler(enabled=config.mixed_precision == "fp16" and self.deepspeed is None)

    def sync(self, last_micro_step: bool) -> contextlib.AbstractContextManager:
        """Around a micro-step's forward and backward: DDP all-reduces gradients only on the last
        micro-step of an accumulation (DeepSpeed knows the boundary from its own config)."""
        if not last_micro_step and isinstance(self.model, nn.parallel.DistributedDataParallel):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        if self.deepspeed is not None:
            self.deepspeed.backward(loss)  # scales by 1/grad_accum itself
            self.deepspeed.step()  # counts micro-batches; steps the optimizer only at the boundary
        else:
            self.scaler.scale(loss / self.stage.grad_accum).backward()

    def step(self) -> float:
        """The optimizer step after `grad_accum` backward passes; returns the gradient norm."""
        if self.deepspeed is not None:
            norm = self.deepspeed.get_global_grad_norm()
            return float(norm) if norm is not None else 0.0
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.stage.max_grad_norm or math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return float(norm)

    @property
    def lr(self) -> float:
        return float(self.schedule.get_last_lr()[0])

    def state_dict(self) -> dict[str, Any]:
        if self.deepspeed is not None:
            return {}  # DeepSpeed saves its own state next to ours
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.deepspeed is None and state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            self.scaler.load_state_dict(state["scaler"])


def deepspeed_config(stage: StageConfig, config: TrainConfig) -> dict[str, Any]:
    assert config.deepspeed is not None
    zero: dict[str, Any] = {"stage": config.deepspeed.zero_stage}
    if config.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": stage.batch_size,
        "gradient_accumulation_steps": stage.grad_accum,
        "gradient_clipping": stage.max_grad_norm or 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": config.mixed_precision == "bf16"},
        "fp16": {"enabled": config.mixed_precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
    }
