"""The Train form's model without a page: a recipe, a run's or a job's config goes through the form
unchanged, and a field edited in the form changes only its own part of the config."""

from __future__ import annotations

from typing import Any

import pytest

from app.train_form import TrainForm
from core.training.config import build_config
from core.training.recipes import QUICK_DEMO, RECIPES


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"unet": {"lr": 1}}` -> `{"unet.lr": 1}`, so two configs differ key by key."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed(form: TrainForm, **edits: Any) -> dict[str, Any]:
    """The config keys (and their new values) that editing the form's fields changes."""
    before = flat(form.to_config().model_dump(mode="json"))
    after = flat(form.model_copy(update=edits).to_config().model_dump(mode="json"))
    return {k: after.get(k) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_goes_through_the_form_unchanged(name: str) -> None:
    assert TrainForm.from_config(RECIPES[name]).to_config() == build_config(RECIPES[name])


def test_the_quick_demo_keeps_its_min_snr_weighting() -> None:
    """The user report: quick-demo filled into the form launched with `unet.min_snr_gamma` None."""
    form = TrainForm.from_config(QUICK_DEMO)
    assert form.min_snr == 5.0 and form.to_config().unet.min_snr_gamma == 5.0


def test_the_default_form_is_the_demo_recipe() -> None:
    form = TrainForm.default()
    assert (form.unet_steps, form.min_snr, form.backend) == (RECIPES["demo"]["unet"]["steps"], 5.0, "local")


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ({"version": "abc"}, {"dataset": "fashion-mnist@abc"}),
        ({"preset": "small"}, {"preset": "small"}),
        ({"stage": "unet"}, {"stage": "unet"}),
        ({"seed": 7}, {"seed": 7}),
        ({"vae_steps": 10}, {"vae.steps": 10}),
        ({"unet_steps": 20}, {"unet.steps": 20}),
        ({"batch_size": 4}, {"unet.batch_size": 4}),
        ({"lr": 0.003}, {"unet.lr": 0.003}),
        ({"vae_batch_size": 16}, {"vae.batch_size": 16}),
        ({"vae_lr": 0.0005}, {"vae.lr": 0.0005}),
        ({"train_text": False}, {"unet.train_text_encoder": False, "unet.caption_noise": 0.0}),  # the fashion recipe's noise goes with it
        ({"ema": 0.999}, {"unet.ema_decay": 0.999}),
        ({"min_snr": 0.0}, {"unet.min_snr_gamma": None}),
        ({"noise_offset": 0.05}, {"unet.noise_offset": 0.05}),
        ({"v_prediction": True}, {"unet.prediction_type": "v_prediction"}),
        ({"v_prediction": True, "zero_snr": True}, {"unet.prediction_type": "v_prediction", "unet.zero_terminal_snr": True}),
        ({"zero_snr": True}, {}),  # needs v-prediction: ticked alone it changes nothing
        ({"mixed_precision": "bf16"}, {"mixed_precision": "bf16"}),
        ({"grad_checkpointing": True}, {"gradient_checkpointing": True}),
        ({"buckets": True}, {"buckets.enabled": True}),
        ({"checkpoint_every": 50}, {"checkpoint_every": 50}),
        ({"validate_every": 60}, {"validate_every": 60}),
        ({"sample_every": 70}, {"sample_every": 70}),
        ({"prompts": " a shoe \n\n a bag"}, {"validation_prompts": ["a shoe", "a bag"]}),
        ({"zero_stage": "2", "offload": True}, {"deepspeed.zero_stage": 2, "deepspeed.offload_optimizer": True}),
        ({"evaluate_n": 500}, {"evaluate.n": 500}),
        ({"preset": "finetune", "base_model": "/models/sd", "lora_rank": 8}, {"preset": "finetune", "base_model": "/models/sd", "unet.lora_rank": 8}),
        (
            {"preset": "finetune", "base_model": "/models/sd", "stage": "unet", "subject": True, "instance_prompt": "a photo of sks dog",
             "class_prompt": "a photo of a dog", "prior_preservation": True, "prior_weight": 0.5, "class_images": 20},
            {"preset": "finetune", "base_model": "/models/sd", "stage": "unet", "subject.instance_prompt": "a photo of sks dog",
             "subject.class_prompt": "a photo of a dog", "subject.prior_preservation": True, "subject.prior_loss_weight": 0.5,
             "subject.num_class_images": 20},
        ),
    ],
)
def test_editing_a_field_changes_only_that_field(edits: dict[str, Any], expected: dict[str, Any]) -> None:
    form = TrainForm.from_config({**RECIPES["fashion"], "dataset": "fashion-mnist@v1"})
    assert changed(form, **edits) == expected


def test_unticking_v_prediction_turns_a_zero_snr_schedule_off_with_it() -> None:
    fashion = RECIPES["fashion"]
    form = TrainForm.from_config({**fashion, "dataset": "fashion-mnist@v1", "unet": {**fashion["unet"], "prediction_type": "v_prediction", "zero_terminal_snr": True}})
    assert form.to_config().unet.zero_terminal_snr  # kept through the form
    # Unticked is the model's own schedule: ε for a preset, the base's when fine-tuning.
    assert changed(form, v_prediction=False) == {"unet.prediction_type": None, "unet.zero_terminal_snr": None}


def test_turning_a_section_off_drops_only_that_section() -> None:
    form = TrainForm.from_config({**RECIPES["fashion"], "dataset": "fashion-mnist@v1"})
    config = form.to_config()
    assert form.model_copy(update={"evaluate": False}).to_config() == config.model_copy(update={"evaluate": None})
    assert form.model_copy(update={"zero_stage": "off", "offload": True}).to_config() == config  # offload needs DeepSpeed


def test_a_jobs_config_clones_without_its_run_but_with_its_launch() -> None:
    from jobs.sagemaker import SageMakerLaunch

    config = build_config({**RECIPES["fashion"], "dataset": "fashion-mnist@v1", "output_dir": "/jobs/j1/output", "mlflow_run_id": "r1", "run_name": "first"})
    launch = SageMakerLaunch(instance_type="ml.g5.12xlarge", instance_count=2, max_run_hours=8.0, role="arn:aws:iam::1:role/r",
                             image_uri=None, subnets=["subnet-1"], security_group_ids=["sg-1"])
    job_config = {**config.model_dump(mode="json"), "sagemaker": {**launch.model_dump(), "dataset": "s3://bucket/datasets/fashion-mnist/v1/"}}

    form = TrainForm.from_config(job_config)
    assert (form.backend, form.instance_type, form.instance_count, form.max_hours, form.role) == ("sagemaker", "ml.g5.12xlarge", 2, 8.0, launch.role)
    assert form.to_config() == config.model_copy(update={"output_dir": build_config({"dataset": "x"}).output_dir, "mlflow_run_id": None, "run_name": None})
    assert form.sagemaker_options() == launch.model_dump()  # the VPC the form does not show is kept; the S3 URIs are the old job's
    assert form.model_copy(update={"role": ""}).sagemaker_options().get("role", "unset") == "unset"  # the launch's default role then

    local = TrainForm.from_config({**config.model_dump(mode="json"), "processes": 2})
    assert (local.backend, local.processes, local.sagemaker_options()) == ("local", 2, None)


def test_a_recipe_or_run_leaves_where_it_runs_to_the_user() -> None:
    assert TrainForm.from_config(RECIPES["demo"]).model_fields_set.isdisjoint({"backend", "processes", "instance_type", "role"})


def test_a_bad_value_is_one_sentence() -> None:
    from core.errors import StudioError

    with pytest.raises(StudioError, match="LoRA"):
        TrainForm.default().model_copy(update={"lora_rank": 4}).to_config()
