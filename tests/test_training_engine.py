"""The Engine's gradient accumulation, in process: what a step does with `grad_accum` micro-batches,
on one process and across two real gloo ranks under DDP."""

from __future__ import annotations

import gc
import os
import socket
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from core.training.config import UnetConfig, build_config
from core.training.distributed import Dist, Engine

CPU = torch.device("cpu")


class Toy(nn.Module):
    """An objective as the loop sees one: returns {"loss": ...}."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": ((self.linear(x) - y) ** 2).mean()}


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)) for _ in range(n)]


def engine(grad_accum: int, d: Dist) -> Engine:
    stage = UnetConfig(steps=1, lr=0.1, lr_schedule="constant", warmup_steps=0, grad_accum=grad_accum, max_grad_norm=None)
    return Engine(Toy(), stage, build_config({"dataset": "toy"}), d)


def micro_steps(e: Engine, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """The loop's micro-steps; returns the gradients the optimizer step will apply."""
    for i, (x, y) in enumerate(micro):
        with e.sync(last_micro_step=i == len(micro) - 1):
            e.backward(e.model(x, y)["loss"])
    return [p.grad.clone() for p in e.params]


def full_batch_grads(micro: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    toy = Toy()
    x, y = torch.cat([m[0] for m in micro]), torch.cat([m[1] for m in micro])
    toy(x, y)["loss"].backward()
    return [p.grad for p in toy.parameters()]


def test_accumulating_micro_batches_is_one_big_batch() -> None:
    micro = batches(2)
    e = engine(2, Dist(0, 1, 0, CPU))
    for got, want in zip(micro_steps(e, micro), full_batch_grads(micro), strict=True):
        torch.testing.assert_close(got, want)


def _rank(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        e = engine(2, Dist(rank, 2, rank, CPU))
        all_reduces = []

        def counting(state, bucket):  # type: ignore[no-untyped-def]  # DDP refuses string annotations here
            all_reduces.append(bucket.index())
            return allreduce_hook(state, bucket)

        e.model.register_comm_hook(None, counting)
        micro = batches(4)[rank * 2 : rank * 2 + 2]  # each rank's two micro-batches
        grads = micro_steps(e, micro)
        torch.save({"all_reduces": len(all_reduces), "grads": grads}, Path(out) / f"{rank}.pt")
        dist.barrier()
        del e, counting  # the reducer holds the Python hook; drop it before the group goes
        gc.collect()
    finally:
        dist.destroy_process_group()


def test_ddp_all_reduces_only_on_the_last_micro_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gloo ranks, two micro-batches each: one all-reduce per optimizer step (DDP `no_sync` on
    the first micro-step), and the gradients are those of all four micro-batches as one batch."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Spawned ranks re-run the parent's __main__ unless it has no file: an AppTest earlier in this
    # worker may have left its generated script there.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    mp.spawn(_rank, args=(port, str(tmp_path)), nprocs=2)
    want = full_batch_grads(batches(4))
    for rank in (0, 1):
        result = torch.load(tmp_path / f"{rank}.pt")
        assert result["all_reduces"] == 1  # one bucket, reduced once; without no_sync it would be 2
        for got, expected in zip(result["grads"], want, strict=True):
            torch.testing.assert_close(got, expected)
