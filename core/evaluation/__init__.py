"""Image-quality evaluation: metrics (metrics.py), per-dataset evaluators (evaluator.py), the
feature networks (features.py: inception.py, imagenet.py, over pooling.py), the evaluation itself (evaluate.py) and its MLflow records."""
