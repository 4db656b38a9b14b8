"""Evaluation: metric sanity checks with fixed seeds, the evaluator on a small subset, an evaluation
job on a tiny run end to end (CLI -> job -> MLflow), and the metrics table in the Runs comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from core.evaluation.metrics import compare, frechet_distance, kernel_inception_distance, neighbour_metrics


def test_frechet_distance_of_gaussians_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 4))
    b = rng.normal(size=(4000, 4)) + np.array([3.0, 0, 0, 0])
    assert frechet_distance(a, b) == pytest.approx(9.0, abs=0.4)
    assert frechet_distance(a, rng.normal(size=(4000, 4))) < 0.05


def test_kid_is_unbiased_and_neighbour_metrics_see_mode_collapse() -> None:
    rng = np.random.default_rng(1)
    real, same = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    kid_same, _ = kernel_inception_distance(real, same, subsets=20, subset_size=200)
    kid_shifted, _ = kernel_inception_distance(real, same + 1.0, subsets=20, subset_size=200)
    assert abs(kid_same) < 0.01 < kid_shifted
    good = neighbour_metrics(real, same)
    collapsed = neighbour_metrics(real, rng.normal(scale=0.05, size=(400, 8)))  # every sample near the mean
    assert good.recall > 0.8 and good.coverage > 0.8
    assert collapsed.precision > 0.9 and collapsed.recall < 0.1 and collapsed.coverage < 0.1


@pytest.fixture(scope="module")
def digits_evaluator(tmp_path_factory: pytest.TempPathFactory, demo_home: Path):  # type: ignore[no-untyped-def]
    """An evaluator trained briefly on the demo digits (a small subset, fixed seed), and the version."""
    from core.evaluation.data import Version
    from core.evaluation.evaluator import load_evaluator, save_evaluator, train_evaluator

    with pytest.MonkeyPatch.context() as mp:
        from tests.conftest import use_home

        use_home(demo_home, mp)
        version = Version.open("digits")
        evaluator = train_evaluator(version, steps=60, limit=600, seed=0)
        folder = save_evaluator(evaluator, tmp_path_factory.mktemp("evaluator") / "digits")
        assert (folder / "train_evaluator.py").is_file()
        reloaded = load_evaluator(folder)
        val = version.images(version.val)
        assert (reloaded.predict(val) == evaluator.predict(val)).all()
        yield evaluator, version, folder


def test_evaluator_trains_on_a_small_subset_and_reports_its_ceiling(digits_evaluator) -> None:  # type: ignore[no-untyped-def]
    evaluator, version, folder = digits_evaluator
    info = json.loads((folder / "evaluator.json").read_text())
    assert info["train_images"] == 600 and info["held_out_images"] == len(version.val)
    assert len(info["labels"]) == 10
    assert 0.6 < info["held_out_accuracy"] <= 1.0


def test_metric_sanity_real_blur_noise_and_class_means(digits_evaluator) -> None:  # type: ignore[no-untyped-def]
    from core.evaluation.data import label_of

    evaluator, version, _ = digits_evaluator
    rng = np.random.default_rng(0)
    real = version.images(version.val)
    other_items = [version.train[i] for i in rng.permutation(len(version.train))[: len(real)]]
    other = version.images(other_items)
    features = evaluator.features(real)
    floor = compare(features, evaluator.features(other))
    blurred = np.stack([np.asarray(Image.fromarray(x.transpose(1, 2, 0)).filter(ImageFilter.GaussianBlur(1.2))).transpose(2, 0, 1) for x in other])
    noise = rng.integers(0, 256, other.shape, dtype=np.uint8)
    labels = np.array([label_of(i) for i in other_items])
    means = np.stack([other[labels == label].mean(0) for label in labels]).round().astype(np.uint8)
    blur_fd = compare(features, evaluator.features(blurred)).frechet
    noise_fd = compare(features, evaluator.features(noise)).frechet
    mean_metrics = compare(features, evaluator.features(means))
    assert blur_fd > 1.5 * floor.frechet
    assert noise_fd > 5 * floor.frechet and noise_fd > 2 * blur_fd
    assert floor.coverage > 0.5
    # Ten distinct images: no recall, and far less coverage than real images have. (On 180 digits
    # the 5-NN balls are wide, so coverage stays near 0.4; on Fashion-MNIST it is under 0.1, below.)
    assert mean_metrics.recall < 0.1 and mean_metrics.coverage < 0.75 * floor.coverage
    # ...while a classifier still calls most class means by their class: accuracy alone is gameable.
    predicted = evaluator.predict(means)
    assert (np.array(evaluator.info.labels)[predicted] == labels).mean() > 0.5



@pytest.mark.slow
def test_class_mean_images_cover_almost_nothing_on_fashion_mnist(home: Path) -> None:
    from core.datasets import builtin
    from core.evaluation.data import Version, label_of
    from core.evaluation.evaluator import train_evaluator

    if not builtin.FASHION_DIR.exists():
        pytest.skip("Fashion-MNIST is missing; install it with: sudo apt-get install -y dataset-fashion-mnist")
    version = Version.open(builtin.import_builtin("fashion-mnist", limit=60))  # 600 train, 600 val
    evaluator = train_evaluator(version, steps=200, seed=0)
    real = version.images(version.val)
    other_items = [version.train[i] for i in np.random.default_rng(0).permutation(len(version.train))[: len(real)]]
    other = version.images(other_items)
    labels = np.array([label_of(i) for i in other_items])
    means = np.stack([other[labels == label].mean(0) for label in labels]).round().astype(np.uint8)
    features = evaluator.features(real)
    floor, mean_metrics = compare(features, evaluator.features(other)), compare(features, evaluator.features(means))
    assert floor.coverage > 0.9 and floor.recall > 0.9
    assert mean_metrics.coverage < 0.1 and mean_metrics.recall < 0.1 and mean_metrics.frechet > 10 * floor.frechet

def test_imagenet_features_ship_offline_and_separate_real_from_noise(digits_evaluator) -> None:  # type: ignore[no-untyped-def]
    from core.evaluation.features import extractor

    evaluator, version, _ = digits_evaluator
    extract = extractor("imagenet", evaluator)
    real = version.images(version.val[:48])
    other = version.images(version.train[:48])
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    features = extract(real)
    assert features.shape == (48, 1280) and np.isfinite(features).all()
    assert frechet_distance(features, extract(noise)) > 3 * frechet_distance(features, extract(other))


@pytest.mark.slow
def test_eval_job_end_to_end_with_results_in_mlflow_and_the_comparison(demo: str, trained_model: Path, digits_evaluator, capsys) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from streamlit.testing.v1 import AppTest

    from app.cli import main
    from core.evaluation.evaluator import evaluator_dir
    from core.evaluation.records import comparison_rows
    from core.tracking import create_run, get_tracking

    _, _, folder = digits_evaluator
    client = get_tracking().client
    runs = []
    for name in ("tiny-eval-a", "tiny-eval-b"):
        run_id = create_run(name, {"dataset": demo})
        client.log_artifacts(run_id, str(trained_model), "model")
        client.set_terminated(run_id, "FINISHED")
        runs.append(run_id)
    shutil.copytree(folder, evaluator_dir(demo))  # the version's evaluator, already trained (cache hit)

    code = main(["eval", runs[0], "--dataset", demo, "--n", "20", "--guidance", "1,3", "--steps", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["n"] == 20 and [r["guidance"] for r in result["results"]] == [1.0, 3.0]
    assert 0 <= result["results"][0]["prompt_accuracy"] <= 1 and result["floor_vae"]["frechet"] >= 0

    metrics = client.get_run(runs[0]).data.metrics
    assert {"eval/evaluator/cfg3/frechet", "eval/evaluator/cfg3/prompt_accuracy", "eval/evaluator/floor_real/frechet", "eval/evaluator/evaluator_accuracy"} <= metrics.keys()
    artifacts = {a.path for a in client.list_artifacts(runs[0], "evaluation/evaluator")}
    assert {"evaluation/evaluator/result.json", "evaluation/evaluator/grid_cfg3.png"} <= artifacts
    from jobs.records import list_jobs

    job = next(j for j in list_jobs() if j.kind == "eval")
    assert job.status == "succeeded" and job.mlflow_run_id == runs[0]

    rows = comparison_rows(runs)
    assert [(r["run"], r["guidance"]) for r in rows] == [(runs[0], 1.0), (runs[0], 3.0)]

    def page(run_ids: list[str]) -> None:
        from pages.evaluation_panel import metrics_table

        metrics_table(run_ids, {run_ids[0]: "tiny-eval-a", run_ids[1]: "tiny-eval-b"})

    at = AppTest.from_function(page, args=(runs,), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run"]) == ["tiny-eval-a", "tiny-eval-a"]
    assert {"Prompt accuracy", "Fréchet distance", "Coverage", "Floor real-vs-real"} <= set(table.columns)

    # A bad request is one sentence and exit status 2.
    assert main(["eval", runs[1], "--dataset", "nope@000000000000"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_training_with_evaluate_starts_an_evaluation_when_it_succeeds(demo: str, digits_evaluator) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from core.evaluation.evaluator import evaluator_dir
    from core.tracking import get_tracking
    from core.training.config import build_config
    from jobs import control
    from jobs import evaluate as eval_jobs
    from jobs.records import get_job
    from tests.conftest import TINY_OVERRIDES
    from tests.test_jobs_local import wait_until

    shutil.copytree(digits_evaluator[2], evaluator_dir(demo))
    config = build_config({"dataset": demo, "evaluate": {"n": 10, "guidance": [1], "steps": 2}}, TINY_OVERRIDES)
    job = control.launch(config)
    wait_until(lambda: get_job(job.id).status in ("succeeded", "failed"), what="the training job to end")
    assert get_job(job.id).status == "succeeded", get_job(job.id).failure_reason
    wait_until(lambda: [e.status for e in eval_jobs.evaluations(job.mlflow_run_id)] == ["succeeded"], timeout=240, what="the evaluation")
    assert "eval/evaluator/cfg1/prompt_accuracy" in get_tracking().client.get_run(job.mlflow_run_id).data.metrics
    assert "Started evaluation job" in Path(job.log_path).read_text()
