"""The engine, for real: tiny trainings in subprocesses, exactly as jobs run them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_OVERRIDES, run_training

pytestmark = pytest.mark.slow

# Long enough that a SIGTERM lands mid-run; checkpoints kept so the test can look at them.
RESUMABLE = [o for o in TINY_OVERRIDES if not o.startswith(("vae.steps", "checkpoint_every"))] + [
    "vae.steps=24",
    "checkpoint_every=100",
    "keep_checkpoints=10",
    "dataset=digits",
]


def metrics(path: Path) -> dict[tuple[int, str], float]:
    out = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key not in ("step", "time") and not key.endswith("samples_per_s"):
                out[(row["step"], key)] = value
    return out


def assert_metric_lines_match(output: str, jsonl: Path) -> None:
    """SageMaker's metric regexes find, in what the loop really printed, every value it logged, and
    every metric the loop logs has a regex."""
    from core.training.logline import METRIC_REGEXES

    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    logged = {k for row in rows for k in row} - {"step", "time"}
    assert logged <= METRIC_REGEXES.keys() and METRIC_REGEXES.keys() - logged <= {"prior_loss"}  # only prior preservation logs it
    for name, regex in METRIC_REGEXES.items():
        logged = [row[name] for row in rows if name in row]
        printed = [float(m.group(1)) for line in output.splitlines() if (m := re.search(regex, line))]
        assert printed == pytest.approx(logged, rel=1e-4), name


def test_config_errors_are_one_sentence(demo_home: Path, tmp_path: Path) -> None:
    env = {"STUDIO_HOME": str(demo_home)}
    proc = run_training(["dataset=digits", "unet.learning_rate=1"], env, check=False)
    assert proc.returncode == 2 and "error: The config key 'unet.learning_rate' is not known." in proc.stderr
    proc = run_training(["dataset=digits", "vae.steps=-3"], env, check=False)
    assert proc.returncode == 2 and "'vae.steps' is not valid" in proc.stderr
    proc = run_training(["dataset=nothing"], env, check=False)
    assert proc.returncode == 2 and "The dataset 'nothing' does not exist" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: [tiny\n")
    proc = run_training([], env, "--config", str(bad), check=False)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr
    proc = run_training(["dataset=digits", "preset=finetune", f"base_model={tmp_path}"], env, check=False)
    assert proc.returncode == 2 and "model_index.json is missing" in proc.stderr
    # ZeRO-3 shards the weights that sampling and checkpoints read whole: refused before anything runs.
    proc = run_training(["dataset=digits", "deepspeed.zero_stage=3"], env, check=False)
    assert proc.returncode == 2 and "error: The config value 'deepspeed.zero_stage' is not valid: ZeRO stage 3 is not supported" in proc.stderr
    proc = run_training(["dataset=digits", "unet.caption_noise=0.3"], env, check=False)
    assert proc.returncode == 2 and "unet.caption_noise teaches the text encoder to ignore unknown words; it needs unet.train_text_encoder" in proc.stderr
    assert not any(tmp_path.rglob("status.json"))  # nothing half-written


def test_stop_and_resume_equals_an_uninterrupted_run(demo_home: Path, tmp_path: Path) -> None:
    """SIGTERM checkpoints and exits cleanly; `--resume latest` then continues bit for bit, and
    everything lands in MLflow: params, tags, metrics with steps, sample images, the model."""
    env = {"STUDIO_HOME": str(demo_home)}
    from core.settings import reset_settings

    os.environ["STUDIO_HOME"] = str(demo_home)
    reset_settings()
    from core.tracking import create_run, get_tracking

    run_id = create_run("uninterrupted")
    full = tmp_path / "full"
    run_training([*RESUMABLE, f"output_dir={full}", f"mlflow_run_id={run_id}"], env)

    stopped = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "core.training", *(a for o in [*RESUMABLE, f"output_dir={stopped}"] for a in ("--set", o))]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = stopped / "checkpoints" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (log.is_file() and log.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-2000:]
    status = json.loads((stopped / "status.json").read_text())
    assert status["status"] == "stopped" and status["stage"] == "vae" and 0 < status["step"] < 24
    assert (stopped / "checkpoints" / "latest").read_text().startswith("step-1vae-")

    run_training([*RESUMABLE, f"output_dir={stopped}"], env, "--resume", "latest")
    assert json.loads((stopped / "status.json").read_text())["status"] == "succeeded"
    a, b = metrics(full / "checkpoints" / "metrics.jsonl"), metrics(log)
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key

    client = get_tracking().client
    run = client.get_run(run_id)
    assert run.data.params["vae.steps"] == "24" and run.data.params["preset"] == "tiny"
    assert run.data.tags["dataset"] == "digits"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [2, 4, 6]
    assert client.get_metric_history(run_id, "vae_val_psnr")[-1].value > 5
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"model", "images", "validation_prompts.json"} <= artifacts
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    assert any("prompt_00" in p for p in images) and any("samples" in p for p in images)


def test_sagemaker_container_contract(demo_home: Path, tmp_path: Path) -> None:
    """Inside SageMaker: data from the channel, hyperparameters as --key value, model to SM_MODEL_DIR."""
    from core.datasets.versions import materialize, resolve
    from core.settings import reset_settings

    os.environ["STUDIO_HOME"] = str(demo_home)
    reset_settings()
    channel = materialize(*resolve("digits"))
    env = {
        "STUDIO_HOME": str(tmp_path / "empty-home"),  # no catalog: the channel is all it has
        "SM_CHANNEL_TRAINING": str(channel),
        "SM_MODEL_DIR": str(tmp_path / "opt-ml-model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "opt-ml-output"),
    }
    hps = ["--vae.steps", "2", "--unet.steps", "2", "--vae.batch_size", "4", "--unet.batch_size", "4", "--sample_steps", "2", "--sample_images_per_prompt", "1", "--validate_every", "2"]
    proc = run_training([], env, *hps)
    assert (tmp_path / "opt-ml-model" / "model_index.json").is_file()
    assert_metric_lines_match(proc.stdout, tmp_path / "opt-ml-output" / "checkpoints" / "metrics.jsonl")


def test_torchrun_two_processes(demo_home: Path, tmp_path: Path) -> None:
    """The same entry point under torchrun: two CPU processes, gloo, DDP."""
    out = tmp_path / "ddp"
    args = [a for o in [*TINY_OVERRIDES, "dataset=digits", f"output_dir={out}", "vae.steps=2", "unet.steps=2", "validate_every=2", "sample_every=100"] for a in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "core.training", *args]
    proc = subprocess.run(cmd, check=False, env={**os.environ, "STUDIO_HOME": str(demo_home), "OMP_NUM_THREADS": "1"}, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((out / "status.json").read_text())["status"] == "succeeded"
    rows = [json.loads(x) for x in (out / "checkpoints" / "metrics.jsonl").read_text().splitlines()]
    # Logged by rank 0 only, once per step; both stages' losses are means over the two ranks.
    assert [(r["step"], "vae_loss" in r, "loss" in r) for r in rows if "vae_loss" in r or "loss" in r] == [(2, True, False), (2, False, True)]
    assert_metric_lines_match(proc.stdout, out / "checkpoints" / "metrics.jsonl")


def test_training_options_and_lora_finetune(demo_home: Path, tmp_path: Path) -> None:
    """The options users expect run together; LoRA fine-tuning saves a plain, merged UNet."""
    from safetensors import safe_open

    env = {"STUDIO_HOME": str(demo_home)}
    short = ["dataset=digits", "stage=unet", "unet.steps=2", "unet.batch_size=4", "log_every=1", "validate_every=2", "sample_every=100", "sample_steps=2", "sample_images_per_prompt=1"]
    options = tmp_path / "options"
    run_training(
        [*short, f"output_dir={options}", "unet.ema_decay=0.9", "unet.prediction_type=v_prediction", "unet.zero_terminal_snr=true", "unet.train_text_encoder=true",
         "unet.caption_noise=0.5", "unet.noise_offset=0.05", "gradient_checkpointing=true", "mixed_precision=bf16"],
        env,
    )
    scheduler = json.loads((options / "model" / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["prediction_type"], scheduler["rescale_betas_zero_snr"]) == ("v_prediction", True)

    # Fine-tuning that base with the default config keeps its v-prediction, zero-SNR schedule.
    lora, base_model = tmp_path / "lora", options / "model"
    run_training([*short, f"output_dir={lora}", "preset=finetune", f"base_model={base_model}", "unet.lora_rank=4", "unet.lr=0.05"], env)
    assert json.loads((lora / "model" / "scheduler" / "scheduler_config.json").read_text()) == scheduler
    key = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    name = "unet/diffusion_pytorch_model.safetensors"
    with safe_open(lora / "model" / name, "pt") as tuned, safe_open(base_model / name, "pt") as base:
        assert sorted(tuned.keys()) == sorted(base.keys())  # no adapter keys: diffusers loads it as is
        assert (tuned.get_tensor(key) - base.get_tensor(key)).abs().max() > 0


def test_deepspeed_zero2_on_cpu(demo_home: Path, tmp_path: Path) -> None:
    """The DeepSpeed path as far as it runs on a CPU: ZeRO-2 through deepspeed.initialize, its
    engine's backward/step and checkpoint, then a resume from that checkpoint."""
    out = tmp_path / "ds"
    overrides = [
        "dataset=digits", "stage=unet", "unet.steps=2", "unet.batch_size=4", "log_every=1", "validate_every=2",
        "sample_every=100", "checkpoint_every=1", "sample_steps=2", "sample_images_per_prompt=1",
        "validation_prompts=[a handwritten digit one]", "deepspeed.zero_stage=2", f"output_dir={out}",
    ]
    run_training(overrides, {"STUDIO_HOME": str(demo_home)})
    assert json.loads((out / "status.json").read_text())["status"] == "succeeded"
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    assert (latest / "deepspeed").is_dir() and (latest / "model" / "model_index.json").is_file()
    run_training([*overrides, "unet.steps=3"], {"STUDIO_HOME": str(demo_home)}, "--resume", "latest")
    steps = [json.loads(x)["step"] for x in (out / "checkpoints" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == [1, 2, 3]
