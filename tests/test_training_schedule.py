"""The zero-terminal-SNR schedule: its last step is pure noise, it needs v-prediction, and its loss
stays finite at that step; a model saved with it samples from the same schedule, and a fine-tune
keeps a base's schedule unless its config sets another."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.errors import StudioError
from core.inference.schedulers import make_scheduler
from core.modeling.io import load_components, save_components
from core.modeling.presets import build_components, build_scheduler
from core.training.config import build_config
from core.training.objectives import DenoiseObjective


def test_the_last_step_is_pure_noise_only_when_asked() -> None:
    assert build_scheduler("v_prediction", zero_terminal_snr=True).alphas_cumprod[-1] == 0
    assert build_scheduler("v_prediction").alphas_cumprod[-1] > 1e-3  # the SD schedule leaks the image's mean


def test_zero_terminal_snr_needs_v_prediction() -> None:
    base = {"dataset": "digits", "preset": "tiny"}
    with pytest.raises(StudioError, match="zero_terminal_snr needs unet.prediction_type 'v_prediction'"):
        build_config({**base, "unet": {"zero_terminal_snr": True}})
    assert build_config({**base, "unet": {"zero_terminal_snr": True, "prediction_type": "v_prediction"}}).unet.zero_terminal_snr


def test_the_loss_is_finite_at_the_pure_noise_step() -> None:
    c = build_components("tiny", prediction_type="v_prediction", zero_terminal_snr=True)
    objective = DenoiseObjective(c.unet, c.text_encoder, c.scheduler, min_snr_gamma=5.0)
    latents = torch.randn(2, c.unet.config.in_channels, 8, 8)
    ids = c.tokenizer(["a shoe", "a bag"], padding="max_length", max_length=c.tokenizer.model_max_length, return_tensors="pt").input_ids
    loss = objective(latents, torch.randn_like(latents), torch.tensor([999, 998]), ids)["loss"]
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", ["ddim", "euler", "dpmpp"])
def test_samplers_keep_the_schedule(name: str) -> None:
    sampler = make_scheduler(name, build_scheduler("v_prediction", zero_terminal_snr=True).config)
    sampler.set_timesteps(5)
    assert sampler.config.rescale_betas_zero_snr and int(sampler.timesteps[0]) == 999  # sampling starts at pure noise


def test_a_base_keeps_its_schedule_unless_the_config_sets_one(tmp_path: Path) -> None:
    folder = save_components(build_components("tiny", prediction_type="v_prediction", zero_terminal_snr=True), tmp_path / "base")
    kept = load_components(folder).scheduler.config
    assert (kept.prediction_type, kept.rescale_betas_zero_snr) == ("v_prediction", True)
    plain = load_components(folder, zero_terminal_snr=False).scheduler.config
    assert (plain.prediction_type, plain.rescale_betas_zero_snr) == ("v_prediction", False)
    with pytest.raises(StudioError, match="zero-terminal-SNR schedule, which needs v-prediction"):
        load_components(folder, prediction_type="epsilon")
