"""The metric log line: the one formatter for what the loop prints, and the SageMaker regexes read from it.

After an optimizer step: `[unet] step 10/1040 loss=0.3407 lr=0.001 grad_norm=0.4364 samples_per_s=45.39`;
after validation: `[vae] step 20 val_mse=0.0711 val_psnr=11.48`. A line names its stage, so keys
print without the stage's prefix (`vae_loss` prints as `loss` in a `[vae]` line). SageMaker scans
the job's log with `METRIC_REGEXES` (one per metric key), so the charts in its console are these
numbers. Kept free of torch: jobs/ imports it to submit a job.
"""

from __future__ import annotations

# The UNet's keys predate the VAE stage and stay unprefixed; a new stage gets a prefix of its own.
PREFIX = {"vae": "vae_", "unet": ""}
METRICS = {
    "vae": ("loss", "mse", "lr", "grad_norm", "samples_per_s", "val_mse", "val_psnr"),
    "unet": ("loss", "prior_loss", "lr", "grad_norm", "samples_per_s", "val_loss"),
}
_NUM = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def metric_key(stage: str, name: str) -> str:
    """The key in metrics.jsonl and MLflow: `vae_loss`, `loss`."""
    return PREFIX[stage] + name


def stage_of(key: str) -> str | None:
    """The stage that logs a metric key (`vae_loss` → vae, `loss` → unet); None for other keys."""
    return next((stage for stage, names in METRICS.items() if key in {metric_key(stage, n) for n in names}), None)


def format_line(stage: str, step: int, values: dict[str, float], total: int | None = None) -> str:
    where = f"{step}/{total}" if total is not None else str(step)
    return f"[{stage}] step {where} " + " ".join(f"{name}={value:.5g}" for name, value in values.items())


def metric_regexes() -> dict[str, str]:
    """One regex per metric key, its value in group 1; `(?:.* )?` keeps `loss` from matching `val_loss`."""
    return {
        metric_key(stage, name): rf"\[{stage}\] step \d+(?:/\d+)? (?:.* )?{name}={_NUM}"
        for stage, names in METRICS.items()
        for name in names
    }


METRIC_REGEXES = metric_regexes()
