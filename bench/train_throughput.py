"""Samples/s of our training loop against a bare PyTorch loop: same tiny UNet, same batch, data
already in memory, measured one after the other in the same process. Target: ratio ≥ 0.95.

    .venv/bin/python bench/train_throughput.py [--steps 60] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import repo_on_path  # noqa: F401  (first: benchmarks run as files)

import core  # noqa: F401
import torch


def bare_loop(steps: int, batch: int, warmup: int) -> float:
    """The least a loop can do: forward, loss, backward, AdamW step on cached latents/embeddings."""
    from core.datasets.demo import DIGIT_WORDS, digit_caption
    from core.modeling.presets import build_components

    c = build_components("tiny")
    c.vae.requires_grad_(False)
    c.text_encoder.requires_grad_(False)
    ids = c.tokenizer([digit_caption(i) for i in range(len(DIGIT_WORDS))], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        table = c.text_encoder(ids)[0]
    latents_all = torch.randn(1797, 4, 8, 8)
    labels = torch.randint(0, 10, (1797,))
    opt = torch.optim.AdamW(c.unet.parameters(), lr=1e-3)
    c.unet.train()
    start = None
    for step in range(steps):
        if step == warmup:
            start = time.perf_counter()
        idx = torch.randint(0, 1797, (batch,))
        latents, text = latents_all[idx], table[labels[idx]]
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (batch,))
        pred = c.unet(c.scheduler.add_noise(latents, noise, t), t, text).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(c.unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert start is not None
    return (steps - warmup) * batch / (time.perf_counter() - start)


def our_loop(steps: int, batch: int, warmup: int, home: Path) -> float:
    """core.training's loop, UNet stage, with validation and sampling pushed past the end."""
    from core.datasets.demo import ensure_demo_dataset
    from core.training.config import build_config
    from core.training.loop import train

    ensure_demo_dataset()
    out = home / "run"
    config = build_config(
        {
            "dataset": "digits",
            "stage": "unet",
            "output_dir": str(out),
            "unet": {"steps": steps, "batch_size": batch, "min_snr_gamma": None, "caption_dropout": 0.1},
            "log_every": warmup,
            "validate_every": 10**6,
            "sample_every": 10**6,
            "checkpoint_every": 10**6,
            "sample_steps": 1,
            "sample_images_per_prompt": 1,
            "validation_prompts": ["a handwritten digit one"],
        }
    )
    train(config)
    rows = [json.loads(x) for x in (out / "checkpoints" / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "samples_per_s" in r and r["step"] > warmup]
    # Each row covers `warmup` steps; weight windows by their steps.
    return sum(r["samples_per_s"] for r in timed) / len(timed)


def main() -> None:
    from bench.common import write_result

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STUDIO_HOME"] = tmp
        started = time.time()
        ours = our_loop(args.steps, args.batch, args.warmup, Path(tmp))
        bare = bare_loop(args.steps, args.batch, args.warmup)
        write_result(
            "train_throughput",
            {
                "steps": args.steps,
                "batch": args.batch,
                "ours_samples_per_s": round(ours, 2),
                "baseline_samples_per_s": round(bare, 2),
                "ratio": round(ours / bare, 3),
                "target_ratio": 0.95,
                "wall_s": round(time.time() - started, 1),
            },
        )


if __name__ == "__main__":
    main()
