"""`python -m core.training --config FILE [--set key=value ...] [--resume latest]`

The one entry point for local jobs, torchrun and SageMaker containers. Inside SageMaker it reads
the data channel (`SM_CHANNEL_TRAINING`), writes the model to `SM_MODEL_DIR`, keeps checkpoints in
`/opt/ml/checkpoints` (synced to S3, so a spot interruption resumes) and takes hyperparameters
given as `--key value` (dotted keys, e.g. `--unet.steps 500`). MLflow's credentials come from the
environment, or from the Secrets Manager secret STUDIO_MLFLOW_CREDENTIALS_SECRET names (read first).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from core.errors import StudioError

SM_CHECKPOINTS = Path("/opt/ml/checkpoints")


def sagemaker_overrides(extra: list[str]) -> list[str]:
    """`--key value` pairs (SageMaker hyperparameters) and the container's folders as overrides."""
    overrides = []
    pairs = iter(extra)
    for flag in pairs:
        if not flag.startswith("--"):
            raise StudioError(f"Unexpected argument {flag!r}; hyperparameters come as --key value.")
        key = flag[2:].replace("-", "_") if "." not in flag else flag[2:]
        value = next(pairs, "")
        if key not in ("config", "resume"):
            overrides.append(f"{key}={value}")
    channel = os.environ.get("SM_CHANNEL_TRAINING")
    if channel:
        overrides.append(f"data_dir={channel}")
    if os.environ.get("SM_MODEL_DIR"):
        overrides.append(f"output_dir={os.environ.get('SM_OUTPUT_DATA_DIR', '/opt/ml/output/data')}")
    if "SM_TRAINING_ENV" in os.environ and SM_CHECKPOINTS.is_dir():
        overrides.append(f"checkpoint_dir={SM_CHECKPOINTS}")
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.training", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="YAML training config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout, force=True)

    import torch

    from core.settings import get_settings
    from core.training.config import load_config
    from core.training.loop import train

    torch.set_num_threads(get_settings().torch_threads)
    try:
        if get_settings().mlflow_credentials_secret:  # a SageMaker job: MLflow's credentials by name only
            from core.tracking.credentials import load_secret

            load_secret(get_settings().mlflow_credentials_secret)
        config = load_config(args.config, [*sagemaker_overrides(extra), *args.set])
        resume = args.resume or ("latest" if config.checkpoint_dir == SM_CHECKPOINTS else None)
        result = train(config, resume)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    model_dir = os.environ.get("SM_MODEL_DIR")
    if model_dir and result.model_dir is not None and int(os.environ.get("RANK", "0")) == 0:
        import shutil

        shutil.copytree(result.model_dir, model_dir, dirs_exist_ok=True)
    print(json.dumps({"status": result.status, "stage": result.stage, "step": result.step, "model_dir": str(result.model_dir)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
