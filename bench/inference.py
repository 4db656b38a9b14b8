"""PyTorch eager vs our ONNX Runtime pipeline on the same exported `tiny` model.

20 steps, DDIM, guidance 3 (fused CFG batch), batch 1 and 4; the median of repeated runs in one
process, after a warm-up; one thread each (DESIGN.md). Writes bench/results/inference.json.

    .venv/bin/python bench/inference.py [--repeats 7] [--preset tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import repo_on_path  # noqa: F401  (first: benchmarks run as files)

import core  # noqa: F401
import torch

from bench.common import write_result
from core.export.graphs import PARTS, export_graphs
from core.export.optimize import optimize_graph
from core.inference.onnx_backend import OnnxGenerator
from core.inference.torch_backend import GenerateRequest, TorchGenerator
from core.modeling.io import save_components
from core.modeling.presets import build_components


def median_seconds(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up: first-run allocations and lazy initialisation
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_components(build_components(args.preset), Path(tmp) / "model")
        export = Path(tmp) / "onnx"
        torch_gen = TorchGenerator(folder, "cpu")
        export_graphs(torch_gen.components, export)
        for part in PARTS:
            optimize_graph(export / part / "model.onnx")
        onnx_gen = OnnxGenerator(export)

        rows = []
        for batch in (1, 4):
            request = GenerateRequest(prompt="a handwritten digit seven", steps=20, guidance=3.0, seed=0, batch=batch)
            torch_s = median_seconds(lambda: torch_gen(request), args.repeats)
            onnx_s = median_seconds(lambda: onnx_gen(request), args.repeats)
            rows.append(
                {
                    "batch": batch,
                    "torch_ms_per_image": round(1000 * torch_s / batch, 1),
                    "onnx_ms_per_image": round(1000 * onnx_s / batch, 1),
                    "speedup": round(torch_s / onnx_s, 2),
                }
            )
    result = {
        "preset": args.preset,
        "steps": 20,
        "scheduler": "ddim",
        "guidance": 3.0,
        "repeats": args.repeats,
        "statistic": "median",
        "baseline": "PyTorch eager (diffusers StableDiffusionPipeline)",
        "candidate": f"ONNX Runtime pipeline, providers {onnx_gen.providers}",
        "results": rows,
        "load_average_before": load_before,
    }
    write_result("inference", result)


if __name__ == "__main__":
    main()
