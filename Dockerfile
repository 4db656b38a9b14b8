# Diffusion Studio on a GPU host. Not built in this repository's CI (no Docker engine there);
# kept correct by reading (tests/test_team_deploy.py reads compose.yaml and .dockerignore).
# Build: docker build -t diffusion-studio .   (.dockerignore keeps .env, data and virtualenvs out)
# Run:   docker run --gpus all -p 127.0.0.1:8501:8501 -p 127.0.0.1:7860:7860 -v studio-data:/home/studio/studio-data diffusion-studio
# Team:  docker compose up -d --build   (compose.yaml: postgres, mlflow, api, studio; settings from .env)
# Inside the container the servers listen on 0.0.0.0 (else nothing could reach them); publish the
# ports on the host's loopback, as above, unless the team reaches the host over the network.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DS_BUILD_OPS=0 \
    STUDIO_HOME=/home/studio/studio-data \
    STUDIO_PLAYGROUND_HOST=0.0.0.0 \
    MLFLOW_DISABLE_TELEMETRY=true \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HUB_OFFLINE=1

# Python 3.11 (the version the pins are tested with), a compiler for DeepSpeed's just-in-time ops.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common curl ca-certificates build-essential git \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 studio
WORKDIR /home/studio/app

# The same install as `make install`: torch first (on PyPI torch 2.13.0 for Linux is the CUDA
# build), then the rest without build isolation so DeepSpeed builds against it.
COPY requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml ./
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip==25.3 setuptools==84.2.1 wheel==0.48.0 \
 && /opt/venv/bin/pip install "$(grep -E '^torch==' requirements.txt)" \
 && /opt/venv/bin/pip install --no-build-isolation -r requirements.txt -c constraints.txt \
 && /opt/venv/bin/pip install --no-deps -r requirements-nodeps.txt
ENV PATH=/opt/venv/bin:$PATH

COPY --chown=studio:studio . .
RUN pip install --no-deps --no-build-isolation -e . && mkdir -p $STUDIO_HOME && chown -R studio:studio $STUDIO_HOME

USER studio
EXPOSE 8501 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8501/_stcore/health || exit 1
CMD ["streamlit", "run", "app/main.py", "--server.address=0.0.0.0", "--browser.serverAddress=localhost"]
