"""Train: a form over the engine's config, one Launch click, the queue, and a live view of a job."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pandas as pd
import streamlit as st

from app.train_form import TrainForm
from app.widgets import loss_chart, status_label, user_errors, user_log
from core.datasets.versions import list_datasets, list_versions
from core.errors import StudioError
from core.settings import get_settings
from core.training.config import PRESET_NAMES
from core.training.recipes import RECIPES
from core.training.recipes import DESCRIPTIONS as RECIPE_DESCRIPTIONS
from jobs import control
from jobs.cost import estimate, price_table
from jobs.estimate import LaunchEstimate, estimate_launch, minutes
from jobs.progress import job_progress
from jobs.records import ACTIVE, FINAL, RUNNING, get_job, list_jobs, queue

LIVE_SECONDS = 2.0
WATCH = "train.watch"  # the job the live view shows
ESTIMATE = "train.estimate"  # (form.launch_key(), LaunchEstimate) of the last estimate
INSTANCE_TYPES = list(price_table()["usd_per_hour"])
# Chosen by the dataset picker among what the catalog holds, never defaulted.
PICKED = ("dataset", "version")


def _form_key(name: str) -> str:
    return f"train.{name}"


def _init_form() -> None:
    # Every run: Streamlit drops the state of a widget it did not draw (the SageMaker fields, say).
    for name, value in TrainForm.default().model_dump(exclude=set(PICKED)).items():
        st.session_state.setdefault(_form_key(name), value)


def form_state() -> TrainForm:
    """The form as the widgets hold it."""
    return TrainForm.model_validate({name: st.session_state[_form_key(name)] for name in TrainForm.model_fields if _form_key(name) in st.session_state})


def fill_form(config: dict[str, Any]) -> None:
    """Pre-fill the widgets from a recipe's, run's or job's config (the widgets read session state).
    What the config does not set (where a recipe runs) stays as the user left it."""
    form = TrainForm.from_config(config)
    values = form.model_dump(exclude_unset=True)
    if form.dataset not in {d.name for d in list_datasets()}:
        if form.dataset:
            st.warning(f"The catalog has no `{form.dataset}` dataset yet: import it on the Datasets page, then pick it here.", icon="🗂️")
        for name in PICKED:
            values.pop(name)
    for name, value in values.items():
        st.session_state[_form_key(name)] = value


def take_run_clone() -> bool:
    """Fill the form from a run cloned on the Runs page (its config waits in `train_clone`), once."""
    config = st.session_state.pop("train_clone", None)
    if not config:
        return False
    fill_form(config)
    return True


def dataset_picker() -> str | None:
    datasets = [d.name for d in list_datasets()]
    if not datasets:
        st.info("No dataset yet. Import one on the Datasets page, or create the demo digits here.", icon="🗂️")
        if st.button("Create the demo digits dataset"):
            from core.datasets.demo import ensure_demo_dataset

            with user_errors(), st.spinner("Creating the demo dataset…"):
                ensure_demo_dataset()
                st.rerun()
        return None
    left, right = st.columns(2)
    name = left.selectbox("Dataset", datasets, key=_form_key("dataset"), help="A dataset from the catalog.")
    versions = [f"{v.version}" for v in list_versions(name)]
    if st.session_state.get(_form_key("version")) not in versions:
        st.session_state[_form_key("version")] = versions[0]
    version = right.selectbox("Version", versions, key=_form_key("version"), help="Versions never change; newest first.")
    return f"{name}@{version}"


def recipe_picker() -> None:
    """Fill the form from a named recipe; its dataset is chosen too when the catalog has it."""
    with st.expander("Start from a recipe"):
        name = st.selectbox("Recipe", list(RECIPES), format_func=lambda r: f"{r}: {RECIPE_DESCRIPTIONS[r]}", key=_form_key("recipe"))
        if st.button("Fill in the form", key=_form_key("fill_recipe")):
            fill_form(RECIPES[name])
            st.toast(f"Filled in the {name} recipe.")


def backend_options() -> None:
    k = _form_key
    backend = st.radio("Run on", ["local", "sagemaker"], horizontal=True, key=k("backend"), format_func={"local": "This machine", "sagemaker": "Amazon SageMaker"}.get)
    if backend == "local":
        st.number_input("Processes (torchrun)", min_value=1, max_value=64, key=k("processes"), help="More than one runs under torchrun, e.g. one per GPU.")
        return
    s1, s2, s3, s4 = st.columns(4)
    cloned = st.session_state[k("instance_type")]  # a cloned job's type may be one the price table lacks
    instance = s1.selectbox("Instance type", INSTANCE_TYPES if cloned in INSTANCE_TYPES else [cloned, *INSTANCE_TYPES], key=k("instance_type"))
    count = s2.number_input("Instances", min_value=1, max_value=64, key=k("instance_count"))
    hours = s3.number_input("Max hours", min_value=0.1, max_value=672.0, key=k("max_hours"))
    spot = s4.checkbox("Managed spot", key=k("spot"), help="Cheaper; an interruption resumes from the last checkpoint in S3.")
    st.text_input("IAM role ARN", key=k("role"), placeholder="default: STUDIO_SAGEMAKER_ROLE", help="The role the training job runs as.")
    expected = st.slider("Expected hours", 0.1, float(hours), min(1.0, float(hours)), key=k("expected_hours"))
    cost = estimate(instance, int(count), expected, spot)
    if cost.on_demand_usd is None:
        st.caption(f"No price for {instance} in the shipped table (prices of {cost.price_date}).")
    else:
        spot_text = f"; with spot about ${cost.spot_usd:,.2f} (an estimate)" if cost.spot_usd is not None else ""
        st.caption(f"Estimated cost: ${cost.on_demand_usd:,.2f} on demand{spot_text}. Prices of {cost.price_date}, us-east-1.")


def subject_fields() -> None:
    """Subject fine-tuning (DreamBooth): a few photos of one subject, with its class kept in place."""
    k = _form_key
    if not st.checkbox("Subject fine-tuning (DreamBooth)", key=k("subject"), help="Every image is captioned with the instance prompt; runs the UNet stage only."):
        return
    s1, s2 = st.columns(2)
    s1.text_input("Instance prompt", key=k("instance_prompt"), placeholder="a photo of sks dog", help="The caption of every training image: a rare token plus the class.")
    s2.text_input("Class prompt", key=k("class_prompt"), placeholder="a photo of a dog", help="What the subject is; prior preservation keeps this class as the base model draws it.")
    p1, p2, p3 = st.columns(3)
    p1.checkbox("Prior preservation", key=k("prior_preservation"), help="Train on class images beside the subject's, so 'a photo of a dog' does not turn into your dog.")
    p2.number_input("Prior loss weight", min_value=0.0, max_value=10.0, step=0.1, key=k("prior_weight"), disabled=not st.session_state[k("prior_preservation")])
    p3.number_input("Class images to generate", min_value=1, max_value=1000, key=k("class_images"), disabled=not st.session_state[k("prior_preservation")],
                    help="Generated once by the base model before training and reused on resume; unused when a class dataset is given.")
    st.text_input("Class dataset (name@version, optional)", key=k("class_dataset"), disabled=not st.session_state[k("prior_preservation")],
                  help="Use these images as the class images instead of generating them.")


def launch_form() -> None:
    _init_form()
    k = _form_key
    if take_run_clone():
        st.info("Filled in from the run you cloned on the Runs page: check the settings and launch.", icon="🧬")
    recipe_picker()
    finished = [j for j in list_jobs(limit=50) if j.kind == "train"]
    if finished:
        with st.expander("Clone a job's settings"):
            choice = st.selectbox("Job", finished, format_func=lambda j: f"{j.id} · {j.dataset or '-'} · {j.status}", key=k("clone_choice"))
            if st.button("Clone into the form", key=k("clone")):
                with user_errors():
                    fill_form(choice.config)
                    st.rerun()

    dataset = dataset_picker()
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Preset", PRESET_NAMES, key=k("preset"), help="Model size (tiny-wide: the Fashion-MNIST recipe's); 'finetune' starts from a local model folder.")
    c2.radio("Stage", ["all", "vae", "unet"], key=k("stage"), horizontal=True, help="'all' trains the VAE, then the UNet.")
    c3.number_input("Seed", min_value=0, key=k("seed"))
    if st.session_state[k("preset")] == "finetune":
        st.text_input("Base model folder", key=k("base_model"), help="A Stable-Diffusion-layout folder on this machine.")
        subject_fields()
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("VAE steps", min_value=0, step=50, key=k("vae_steps"))
    c2.number_input("UNet steps", min_value=0, step=50, key=k("unet_steps"))
    c3.number_input("Batch size", min_value=1, max_value=4096, key=k("batch_size"), help="The UNet's; the VAE's is under Advanced.")
    c4.number_input("Learning rate", min_value=1e-7, max_value=1.0, format="%.6f", key=k("lr"), help="The UNet's; the VAE's is under Advanced.")

    with st.expander("Advanced"):
        a1, a2, a3 = st.columns(3)
        a1.number_input("VAE batch size", min_value=1, max_value=4096, key=k("vae_batch_size"))
        a2.number_input("VAE learning rate", min_value=1e-7, max_value=1.0, format="%.6f", key=k("vae_lr"))
        a3.checkbox("Train the text encoder", key=k("train_text"), help="Learns the prompts' words with the UNet; without it the text encoder stays as initialised. Helps prompts worded unlike the captions.")
        a1.number_input("EMA decay (0 = off)", min_value=0.0, max_value=0.99999, format="%.5f", key=k("ema"), help="Keep an exponential moving average of the UNet weights, e.g. 0.999.")
        a2.number_input("Min-SNR γ (0 = off)", min_value=0.0, key=k("min_snr"), help="Min-SNR loss weighting; 5 is the paper's value.")
        a3.number_input("Noise offset", min_value=0.0, max_value=1.0, key=k("noise_offset"), help="Helps very dark or bright images; 0.05–0.1.")
        a1.checkbox("v-prediction", key=k("v_prediction"), help="Predict v instead of the noise. Unticked, a fine-tuned base keeps its own.")
        a2.checkbox("Zero terminal SNR", key=k("zero_snr"), disabled=not st.session_state[k("v_prediction")],
                    help="Rescale the noise schedule so its last step is pure noise, as sampling starts (Lin et al. 2024). Needs v-prediction.")
        a3.selectbox("Mixed precision", ["no", "bf16", "fp16"], key=k("mixed_precision"), help="bf16 on recent GPUs; 'no' on CPU.")
        a1.checkbox("Gradient checkpointing", key=k("grad_checkpointing"), help="Less memory, ~30% slower.")
        a2.number_input("LoRA rank (0 = off)", min_value=0, max_value=512, key=k("lora_rank"), help="Fine-tuning only: train LoRA adapters on the UNet.")
        a3.checkbox("Aspect-ratio buckets", key=k("buckets"), help="Train each image at the size nearest its shape (area ≤ resolution²) instead of a centre square; the Datasets page's Statistics tab shows the buckets a dataset fills.")
        a1.number_input("Checkpoint every (steps)", min_value=1, key=k("checkpoint_every"), help="A stop or crash loses at most this many steps.")
        a2.number_input("Validate every (steps)", min_value=1, key=k("validate_every"))
        a3.number_input("Sample grid every (steps)", min_value=1, key=k("sample_every"))
        st.text_area("Validation prompts (one per line)", key=k("prompts"), help="Default: captions from the dataset.")
        d1, d2 = st.columns(2)
        d1.selectbox("DeepSpeed ZeRO stage", ["off", "0", "1", "2"], key=k("zero_stage"), help="Runs under torchrun; 2 shards optimizer state and gradients.")
        d2.checkbox("Offload optimizer to CPU", key=k("offload"))
        e1, e2 = st.columns(2)
        e1.checkbox("Evaluate when training finishes", key=k("evaluate"), help="Starts an evaluation job (prompt accuracy, Fréchet distance, coverage at guidance 1, 2, 4) against the dataset's val split; the results appear in the Runs page.")
        e2.number_input("Images per guidance", min_value=10, max_value=100_000, step=50, key=k("evaluate_n"), disabled=not st.session_state[k("evaluate")])

    backend_options()
    left, right = st.columns([1, 5])
    estimate_clicked = left.button("📏 Estimate", disabled=dataset is None, key=k("estimate_button"),
                                   help="Run a few real steps of each stage in a separate process: peak memory, seconds per step, total time and cost.")
    launch_clicked = right.button("🚀 Launch", type="primary", disabled=dataset is None, key=k("launch"))
    form = form_state()
    try:
        key = form.launch_key()
    except StudioError as exc:
        if estimate_clicked or launch_clicked:
            st.error(str(exc), icon="⚠️")
        return
    with user_errors():
        measured = current_estimate(form, key, measure=estimate_clicked or launch_clicked)
        if measured is not None:
            estimate_panel(measured)
        if launch_clicked and measured is not None and not measured.refusal:
            job = control.launch(form.to_config(), backend=form.backend, processes=form.processes, sagemaker=form.sagemaker_options(), estimate=measured)
            st.session_state[WATCH] = job.id  # the Watch box follows the job just launched
            st.success(f"Launched job {job.id}: follow it under Jobs below.", icon="🚀")  # its status there stays live


def current_estimate(form: TrainForm, key: str, measure: bool) -> LaunchEstimate | None:
    """The estimate of the form as it is: kept from the last click while the form is unchanged, else
    measured when `measure` (the Estimate or Launch button)."""
    kept = st.session_state.get(ESTIMATE)
    if kept and kept[0] == key:
        return kept[1]
    if not measure:
        if kept:
            st.caption("The form changed since the last estimate: Estimate or Launch measures again.")
        return None
    with st.spinner("Running a few real steps of each stage…"):
        measured = estimate_launch(form.to_config(), form.sagemaker_options())
    st.session_state[ESTIMATE] = (key, measured)
    return measured


def estimate_panel(measured: LaunchEstimate) -> None:
    run, cloud = measured.run, measured.sagemaker
    cols = st.columns(3 + len(run.stages))
    cols[0].metric("Peak memory", f"{run.peak_memory_mb:,.0f} MB", help=f"{run.memory_measure} on this {run.device}, of {run.device_memory_mb:,.0f} MB")
    for col, stage in zip(cols[1:], run.stages, strict=False):
        col.metric(f"{stage.name} s/step", f"{stage.seconds_per_step:.3f}", help=f"{stage.steps} steps of batch {stage.batch_size}")
    cols[-2].metric("Total time", minutes(measured.total_seconds) if measured.total_seconds is not None else "-",
                    help="Steps × s/step plus measured allowances: " + ", ".join(f"{k} {v:.0f} s" for k, v in run.allowances.items()))
    if cloud and cloud.on_demand_usd is not None:
        cols[-1].metric("Cost", f"${cloud.on_demand_usd:,.2f}", f"spot ${cloud.spot_usd:,.2f}" if cloud.spot_usd is not None else None, delta_color="off",
                        help=f"{cloud.instance_count} × {cloud.instance_type}; speed {cloud.speed_note}; prices of {cloud.price_date}.")
    if measured.refusal:
        st.error(measured.refusal, icon="🧮")


def queue_table() -> None:
    jobs = list_jobs(limit=50)
    if not jobs:
        st.caption("No jobs yet: launch one above.")
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "job": j.id,
                    "status": status_label(j.status),
                    "backend": j.backend,
                    "dataset": j.dataset or "-",
                    "attempts": j.attempts,
                    "created": j.created_at.strftime("%Y-%m-%d %H:%M"),
                    "reason": j.failure_reason or "",
                }
                for j in jobs
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    waiting = queue()
    for i, job in enumerate(waiting):
        c0, c1, c2, c3 = st.columns([6, 1, 1, 1])
        c0.write(f"⏳ {i + 1}. `{job.id}` · {job.dataset or '-'}")
        with user_errors():
            if c1.button("↑", key=f"train.up.{job.id}", disabled=i == 0, help="Start earlier"):
                control.move(job.id, -1)
                st.rerun()
            if c2.button("↓", key=f"train.down.{job.id}", disabled=i == len(waiting) - 1, help="Start later"):
                control.move(job.id, 1)
                st.rerun()
            if c3.button("✕", key=f"train.cancel.{job.id}", help="Cancel"):
                control.cancel(job.id)
                st.rerun()


def eta_text(started: datetime | None, fraction: float) -> str:
    if not started or fraction <= 0 or fraction >= 1:
        return ""
    started = started if started.tzinfo else started.replace(tzinfo=timezone.utc)
    elapsed = (datetime.now(timezone.utc) - started).total_seconds()
    left = elapsed * (1 - fraction) / fraction
    return f" · about {int(left // 60)} min {int(left % 60)} s left"


@st.fragment(run_every=LIVE_SECONDS)
def jobs_section() -> None:
    """The jobs table, the Watch box and the watched job, redrawn live so no status goes stale:
    every active job is brought up to date first, so all three show the same status."""
    with user_errors():
        if list_jobs(limit=None, statuses=RUNNING):
            control.refresh()
    queue_table()
    jobs = list_jobs(limit=50)
    if not jobs:
        return
    statuses = {j.id: j.status for j in jobs}
    if st.session_state.get(WATCH) not in statuses:
        st.session_state[WATCH] = jobs[0].id
    watched = st.selectbox("Watch", list(statuses), format_func=lambda i: f"{i} · {statuses[i]}", key=WATCH)
    live_view(watched)


def live_view(job_id: str) -> None:
    with user_errors():
        job = get_job(job_id)
        progress = job_progress(job)
        head, stop_col, resume_col = st.columns([6, 1, 1])
        by = f" · launched by {job.owner}" if job.owner and get_settings().team_mode else ""
        head.markdown(f"**{status_label(job.status)}** · job `{job.id}` · {job.backend} · attempt {job.attempts} · MLflow run `{job.mlflow_run_id}`{by}")
        if job.failure_reason:
            st.warning(job.failure_reason, icon="⚠️")
        if stop_col.button("⏹ Stop", key=f"train.stop.{job.id}", disabled=job.status not in ACTIVE):
            control.stop(job.id)
            st.rerun(scope="fragment")
        if resume_col.button("▶ Resume", key=f"train.resume.{job.id}", disabled=job.status not in ("stopped", "failed")):
            control.resume(job.id)
            st.rerun(scope="fragment")
        done = 1.0 if job.status == "succeeded" else progress.fraction
        st.progress(done, text=f"{progress.stage} step {progress.step}/{progress.total}{eta_text(job.started_at, done)}")
        charts, sample = st.columns([3, 2])
        with charts:
            loss_chart(progress.metrics, ("loss", "val_loss", "vae_loss", "vae_val_mse"))
            c1, c2 = st.columns(2)
            with c1:
                loss_chart(progress.metrics, ("lr", "vae_lr"), height=160)
            with c2:
                loss_chart(progress.metrics, ("samples_per_s", "vae_samples_per_s"), height=160)
        with sample:
            if progress.latest_sample is not None:
                st.image(str(progress.latest_sample), caption=f"Latest samples ({progress.latest_sample.stem})", width="stretch")
            else:
                st.caption("The first sample grid appears after the UNet's first sampling step.")
        st.code(user_log(control.logs(job.id, 200), 30) or "(no log yet)", language=None)
        if job.status in FINAL and job.status != "stopped":
            st.caption("This job has ended; its run is on the Runs page.")


def render() -> None:
    st.title("🏋️ Train")
    with user_errors():
        control.refresh()
    with st.container(border=True):
        st.subheader("New training job")
        launch_form()
    st.subheader("Jobs")
    jobs_section()
