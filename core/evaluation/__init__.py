"""Image-quality evaluation: metrics (metrics.py), per-dataset evaluators (evaluator.py), the
Inception network (inception.py), the evaluation itself (evaluate.py) and its MLflow records."""
