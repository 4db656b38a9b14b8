"""The parity report of an export: every ONNX graph against PyTorch, then whole generations.

Per component: max absolute and relative error on fresh random inputs, at a batch size and (for
the convolutional graphs) an image size the export did not trace with, so the dynamic axes are
checked too. End to end: one prompt and seed through both backends, PSNR between the images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from core.export.graphs import IO_NAMES, example_inputs, modules
from core.inference.onnx_backend import OnnxGenerator, make_session, psnr
from core.inference.torch_backend import GenerateRequest, components_size_multiple, generate_with
from core.modeling.presets import Components

# fp32 graphs agree with PyTorch to ~1e-6; fp16 ones to a few 1e-3.
TOLERANCE = {False: {"max_rel": 1e-3, "min_psnr": 40.0}, True: {"max_rel": 3e-2, "min_psnr": 25.0}}
PARITY_REQUEST = GenerateRequest(prompt="a handwritten digit seven", negative_prompt="blurry", steps=10, guidance=3.0, seed=1234, batch=2)


class ComponentParity(BaseModel):
    name: str
    input_shape: list[int]
    max_abs: float
    max_rel: float
    passed: bool


class ParityReport(BaseModel):
    components: list[ComponentParity]
    psnr_db: list[float]
    request: GenerateRequest
    tolerance: dict[str, float]
    providers: list[str]
    fp16: bool
    passed: bool

    def failures(self) -> list[str]:
        bad = [f"{c.name} (max rel. error {c.max_rel:.2e})" for c in self.components if not c.passed]
        if min(self.psnr_db) < self.tolerance["min_psnr"]:
            bad.append(f"end-to-end images (PSNR {min(self.psnr_db):.1f} dB)")
        return bad


def fresh_inputs(components: Components) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs unlike the traced ones: another seed, batch 3, and one size step up for the image graphs."""
    size = components.resolution + components_size_multiple(components)
    return example_inputs(components, batch=3, size=size, generator=torch.Generator().manual_seed(2024))


@torch.no_grad()
def component_parity(components: Components, folder: Path, max_rel: float) -> list[ComponentParity]:
    inputs = fresh_inputs(components)
    results = []
    for name, module in modules(components).items():
        expected = module.eval()(*inputs[name]).float().numpy()
        session = make_session(folder / name / "model.onnx")
        feed = {key: value.numpy() for key, value in zip(IO_NAMES[name][0], inputs[name])}
        got = session.run(None, feed)[0].astype(np.float32)
        abs_err = float(np.max(np.abs(got - expected)))
        rel_err = abs_err / max(float(np.max(np.abs(expected))), 1e-12)
        results.append(
            ComponentParity(
                name=name, input_shape=list(inputs[name][0].shape), max_abs=abs_err, max_rel=rel_err, passed=rel_err <= max_rel
            )
        )
    return results


def parity_report(components: Components, folder: Path, fp16: bool = False) -> ParityReport:
    tolerance = TOLERANCE[fp16]
    parts = component_parity(components, folder, tolerance["max_rel"])
    onnx = OnnxGenerator(folder)
    request = PARITY_REQUEST
    expected = generate_with(components, request, torch.device("cpu"))
    got = onnx(request)
    scores = [round(psnr(a, b), 2) for a, b in zip(got, expected)]
    passed = all(p.passed for p in parts) and min(scores) >= tolerance["min_psnr"]
    return ParityReport(
        components=parts,
        psnr_db=scores,
        request=request,
        tolerance=tolerance,
        providers=onnx.providers,
        fp16=fp16,
        passed=passed,
    )
