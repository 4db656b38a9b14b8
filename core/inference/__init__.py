"""Generation: schedulers and text-to-image sampling, PyTorch and ONNX Runtime backends."""
