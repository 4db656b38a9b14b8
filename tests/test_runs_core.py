"""core.tracking against a real MLflow store holding two real tiny trainings (the `runs_home` fixture)."""

from __future__ import annotations

import zipfile
from datetime import date, timedelta

import pytest
from PIL import Image

from core.errors import StudioError
from core.inference.models import generate_side_by_side
from core.tracking import artifacts, compare, edits, registry, runs, samples
from core.training import clone

pytestmark = pytest.mark.slow


def test_list_filters_sort_and_paging(runs_store: dict) -> None:
    a, b = runs_store["runs"]["tiny-a"], runs_store["runs"]["tiny-b"]
    def names(q, token=None):  # type: ignore[no-untyped-def]
        return [r.name for r in runs.list_runs(q, token).rows]

    assert set(names(runs.RunQuery())) == {"tiny-a", "tiny-b", "broken-small"}
    assert set(names(runs.RunQuery(status=["FINISHED"]))) == {"tiny-a", "tiny-b"}
    assert names(runs.RunQuery(status=["FAILED", "KILLED"])) == ["broken-small"]
    assert set(names(runs.RunQuery(dataset="digits-mini"))) == {"tiny-a", "tiny-b"}
    assert set(names(runs.RunQuery(dataset=runs_store["dataset"]))) == {"tiny-a", "tiny-b"}
    assert names(runs.RunQuery(preset="small")) == ["broken-small"]
    assert names(runs.RunQuery(tag="job_id=tiny-b")) == ["tiny-b"]
    assert set(names(runs.RunQuery(tag="job_id"))) == {"tiny-a", "tiny-b"}
    assert names(runs.RunQuery(search="NY-A")) == ["tiny-a"]
    assert len(names(runs.RunQuery(since=date.today() - timedelta(days=1)))) == 3
    assert names(runs.RunQuery(until=date(2020, 1, 1))) == []

    # Sorting by a metric puts the lower final val loss first.
    rows = runs.list_runs(runs.RunQuery(sort="val_loss", descending=False, status=["FINISHED"])).rows
    assert [r.val_loss for r in rows] == sorted(r.val_loss for r in rows)

    first = runs.list_runs(runs.RunQuery(page_size=2))
    assert len(first.rows) == 2 and first.next_token
    second = runs.list_runs(runs.RunQuery(page_size=2), first.next_token)
    assert len(second.rows) == 1 and second.next_token is None
    assert {r.run_id for r in first.rows + second.rows} == {a, b, runs_store["failed"]}

    row = next(r for r in first.rows + second.rows if r.run_id == a)
    assert (row.dataset, row.preset, row.stage, row.backend, row.steps) == (runs_store["dataset"], "tiny", "all", "local", 10)
    assert row.last_loss is not None and row.val_loss is not None and row.duration_s > 0

    with pytest.raises(StudioError, match="quotes"):
        runs.list_runs(runs.RunQuery(search="it's"))


def test_detail_histories_and_run_references(runs_store: dict) -> None:
    a = runs_store["runs"]["tiny-a"]
    detail = runs.run_detail(a)
    assert detail.params["unet.lr"] == "0.001" and detail.params["preset"] == "tiny"
    assert detail.tags["job_id"] == "tiny-a"
    assert {"images/", "model/", "validation_prompts.json"} <= set(detail.artifacts)
    assert "model/model_index.json" in [p for p, _ in detail.model_files]

    assert compare.metric_keys([a])[:2] == ["loss", "val_loss"]
    frame = compare.metric_frame([a], ["loss", "vae_val_psnr"])
    assert set(frame["key"]) == {"loss", "vae_val_psnr"}
    assert list(frame[frame.key == "loss"]["step"]) == [2, 4, 6]
    assert (frame["wall_s"] >= 0).all()

    assert runs.resolve_run("tiny-a") == a
    assert runs.resolve_run(a[:10]) == a
    with pytest.raises(StudioError, match="No run"):
        runs.resolve_run("no-such-run")


def test_smoothing() -> None:
    import pandas as pd

    values = pd.Series([1.0, 0.0, 1.0, 0.0])
    assert list(compare.smooth(values, 0.0)) == list(values)
    smoothed = compare.smooth(values, 0.6)
    assert smoothed.iloc[0] == 1.0  # bias correction keeps the first point
    assert smoothed.std() < values.std()
    with pytest.raises(StudioError):
        compare.smooth(values, 1.0)


def test_images_are_indexed_by_key_and_step_and_aligned_by_prompt(runs_store: dict) -> None:
    a, b = runs_store["runs"]["tiny-a"], runs_store["runs"]["tiny-b"]
    index_a, index_b = samples.image_index(a), samples.image_index(b)
    assert set(index_a) == {"prompt_00", "prompt_01", "prompt_02", "samples"}
    assert list(index_a["prompt_00"]) == [3, 6]
    assert list(index_b["prompt_00"]) == [2, 4, 6]
    assert samples.image_steps(index_b) == [2, 4, 6]

    assert samples.nearest_step([3, 6], 4) == 3
    assert samples.nearest_step([3, 6], 5) == 6
    assert samples.nearest_step([2, 4, 6], 3) == 2  # a tie goes to the earlier step
    assert samples.nearest_step([], 3) is None

    grid = samples.sample_grid([a, b], 4)
    # tiny-b logged the prompts in the reverse order; rows still pair the same prompt.
    assert list(grid) == ["a handwritten digit one", "a handwritten digit two", "a handwritten digit three"]
    for cells in grid.values():
        assert [c.step for c in cells] == [3, 4]
        for cell in cells:
            assert Image.open(cell.path).size[1] == 32
    row_b = grid["a handwritten digit one"][1]
    assert "prompt_02+step+4" in row_b.path.name


def test_param_diff_and_final_metrics(runs_store: dict) -> None:
    a, b = runs_store["runs"]["tiny-a"], runs_store["runs"]["tiny-b"]
    diff = compare.param_diff([a, b])
    assert diff.differing["unet.lr"] == ["0.001", "0.003"]
    assert diff.differing["seed"] == ["0", "1"]
    assert diff.differing["sample_every"] == ["3", "2"]
    assert "preset" in diff.identical and "preset" not in diff.differing
    table = compare.final_metrics([a, b], ["loss", "val_loss"])
    assert list(table.index) == ["loss", "val_loss"] and table.shape == (2, 2)


def test_clone_config_round_trips(runs_store: dict) -> None:
    from core.training.config import TrainConfig

    config = clone.run_config(runs_store["runs"]["tiny-b"])
    assert config["unet"]["lr"] == 0.003 and config["seed"] == 1
    assert config["validation_prompts"][0] == "a handwritten digit three"
    assert config["deepspeed"] is None and "output_dir" not in config
    TrainConfig.model_validate(config)
    with pytest.raises(StudioError, match="no training parameters"):
        clone.run_config(runs_store["failed"])


def test_notes_tags_promote_zip_and_delete(runs_store: dict) -> None:
    from core.tracking import get_tracking

    a, b = runs_store["runs"]["tiny-a"], runs_store["runs"]["tiny-b"]
    edits.set_note(a, "sharpest digits so far")
    edits.set_tag(a, "review", "keep")
    detail = runs.run_detail(a)
    assert detail.note == "sharpest digits so far" and detail.tags["review"] == "keep"
    assert runs.list_runs(runs.RunQuery(tag="review=keep")).rows[0].run_id == a
    edits.delete_tag(a, "review")
    assert "review" not in runs.run_detail(a).tags
    with pytest.raises(StudioError):
        edits.set_tag(a, "mlflow.user", "x")

    assert registry.promote(a, "digits") == 1
    client = get_tracking().client
    champion = client.get_model_version_by_alias("digits", "champion")
    assert champion.run_id == a and int(champion.version) == 1
    assert registry.promote(b, "digits") == 2
    assert client.get_model_version_by_alias("digits", "champion").run_id == b
    with pytest.raises(StudioError, match="no trained model"):
        registry.promote(runs_store["failed"], "digits")

    path = artifacts.model_zip(a)
    with zipfile.ZipFile(path) as zf:
        assert "model_index.json" in zf.namelist() and any(n.startswith("unet/") for n in zf.namelist())

    with pytest.raises(StudioError, match="registered as digits v1"):
        edits.delete_run(a)
    edits.delete_run(runs_store["failed"])
    assert {r.name for r in runs.list_runs().rows} == {"tiny-a", "tiny-b"}


def test_generate_with_the_same_seed(runs_store: dict) -> None:
    from core.inference.torch_backend import GenerateRequest

    a, b = runs_store["runs"]["tiny-a"], runs_store["runs"]["tiny-b"]
    request = GenerateRequest(prompt="a handwritten digit one", steps=2, seed=7)
    images = generate_side_by_side([a, b], request)
    assert [len(v) for v in images.values()] == [1, 1]
    again = generate_side_by_side([a], request)[a][0]
    assert again.tobytes() == images[a][0].tobytes()  # same seed, same model: same image
    assert images[a][0].tobytes() != images[b][0].tobytes()
