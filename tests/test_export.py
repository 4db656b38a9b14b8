"""ONNX export of a really trained tiny model: layout, parity, optimization, catalog, MLflow, failures."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from core.errors import StudioError

pytestmark = pytest.mark.slow


def test_export_has_optimum_layout_and_dynamic_axes(exported: dict) -> None:
    root = Path(exported["path"])
    for part in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
        model = onnx.load(str(root / part / "model.onnx"), load_external_data=False)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        first = model.graph.input[0].type.tensor_type.shape.dim
        assert first[0].dim_param == "batch"
        if part != "text_encoder":
            assert [d.dim_param for d in first[2:]] == ["height", "width"]
        assert (root / part / "config.json").is_file()
    assert (root / "tokenizer" / "tokenizer_config.json").is_file()
    assert (root / "scheduler" / "scheduler_config.json").is_file()
    index = json.loads((root / "model_index.json").read_text())
    assert index["unet"] == ["onnx", "model.onnx"] and index["resolution"] == 32


def test_parity_report_per_component_and_end_to_end(exported: dict) -> None:
    from core.export_records import get_export

    report = get_export(exported["export_id"]).parity
    assert report["passed"] and report["providers"] == ["CPUExecutionProvider"]
    names = [c["name"] for c in report["components"]]
    assert names == ["text_encoder", "unet", "vae_decoder", "vae_encoder"]
    for component in report["components"]:
        assert component["max_rel"] < 1e-4, component
        assert component["input_shape"][0] == 3  # a batch the export did not trace with
    assert report["components"][1]["input_shape"][2:] == [10, 10]  # nor that latent size (8x8 traced)
    assert min(report["psnr_db"]) >= 40
    assert json.loads((Path(exported["path"]) / "parity.json").read_text())["passed"]


def test_export_is_catalogued_logged_and_registered(exported: dict) -> None:
    from core.export_records import get_export, list_exports
    from core.tracking import get_tracking

    record = get_export(exported["export_id"])
    assert [e.id for e in list_exports()] == [record.id]
    assert record.mlflow_run_id == exported["run_id"] and record.size_bytes > 0
    client = get_tracking().client
    version = client.get_model_version(record.registered_model, record.registered_version)
    assert record.registered_model == "tiny-trained-onnx"
    assert version.run_id == exported["run_id"] and version.source.endswith("/onnx")
    logged = {a.path for a in client.list_artifacts(exported["run_id"], "onnx")}
    assert {"onnx/unet", "onnx/model_index.json", "onnx/parity.json"} <= logged
    metrics = client.get_run(exported["run_id"]).data.metrics
    assert metrics["onnx_psnr_db"] >= 40 and metrics["onnx_max_rel_unet"] < 1e-4


def test_export_beyond_tolerance_fails_and_registers_nothing(export_home: dict, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.export import parity
    from core.export.exporter import ParityError, export_model
    from core.export_records import list_exports
    from core.tracking import get_tracking

    folder = Path(export_home["home"]) / "cache" / "models" / export_home["run_id"]  # the run's model, downloaded by the export
    monkeypatch.setitem(parity.TOLERANCE, False, {"max_rel": 0.0, "min_psnr": 101.0})
    out = home / "bad-export"
    with pytest.raises(ParityError, match="beyond tolerance") as failure:
        export_model(str(folder), out)
    assert not failure.value.report.passed
    assert not out.exists() and not any(p.name.startswith(".bad-export") for p in home.iterdir())
    assert list_exports() == []
    assert get_tracking().client.search_registered_models() == []



def test_an_export_keeps_the_sizes_a_bucketed_model_was_trained_at(export_home: dict, home: Path) -> None:
    import json
    import shutil

    from core.datasets.buckets import TRAINED_SIZES_FILE
    from core.export.exporter import export_model

    folder = home / "bucketed"
    shutil.copytree(Path(export_home["home"]) / "cache" / "models" / export_home["run_id"], folder)
    sizes = {"sizes": [[40, 24], [32, 32]], "resolution": 32}
    (folder / TRAINED_SIZES_FILE).write_text(json.dumps(sizes))
    record = export_model(str(folder), home / "bucketed-onnx")
    assert json.loads((Path(record.path) / TRAINED_SIZES_FILE).read_text()) == sizes

def test_export_errors_are_one_sentence(home: Path, capsys: pytest.CaptureFixture) -> None:
    from app.cli import main

    assert main(["export", str(home / "missing")]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: The model folder")
    with pytest.raises(StudioError, match="fp16"):
        from core.export.exporter import export_model

        export_model(str(home), fp16=True)
