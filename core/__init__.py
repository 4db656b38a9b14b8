"""Diffusion Studio's domain: datasets, models, training, inference, export, evaluation.

Never imports streamlit, gradio, app, pages or jobs. Importing it switches off every library's
telemetry before those libraries are imported anywhere in the process.
"""

import os

_TELEMETRY_OFF = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "SAGEMAKER_TELEMETRY_OPT_OUT": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "DS_SKIP_CUDA_CHECK": "1",
}
for _key, _value in _TELEMETRY_OFF.items():
    os.environ.setdefault(_key, _value)
