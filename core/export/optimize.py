"""Graph optimization saved with an export, and the optional fp16 conversion for CUDA.

The saved graphs carry ONNX Runtime's provider-independent ("basic") optimizations: constant
folding, redundant-node elimination, shape-op simplification. The provider-specific fusions
(extended and layout levels) are applied when a session loads the graph, because a graph saved
with CPU fusions (FusedConv, NCHWc) would no longer run on CUDA, and the other way round.
"""

from __future__ import annotations

from pathlib import Path

from core.files import atomic_path


def optimize_graph(path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with atomic_path(path) as tmp:
        options.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def convert_fp16(path: Path) -> None:
    """Weights and activations in fp16, inputs and outputs kept fp32 so the pipeline is unchanged."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
