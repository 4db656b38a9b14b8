"""Built-in real datasets from Debian packages: Fashion-MNIST and emoji (small subsets here)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from core.datasets import builtin


def need(path: Path, package: str) -> None:
    if not path.exists():
        pytest.skip(f"{path} is missing; install it with: sudo apt-get install -y {package}")


def test_fashion_mnist_subset_imports_as_a_version_with_held_out_templates(home: Path) -> None:
    need(builtin.FASHION_DIR, "dataset-fashion-mnist")
    from core.datasets.versions import read_manifest, resolve
    from core.evaluation.data import label_of

    ref = builtin.import_builtin("fashion-mnist", limit=3)
    name, version = resolve(ref)
    items = read_manifest(name, version)
    assert len(items) == 60 and sum(i.split == "val" for i in items) == 30
    assert {label_of(i) for i in items} == {"t-shirt", "pair-of-trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"}
    assert all((i.width, i.height) == (28, 28) for i in items)
    held_out = [t.format("") for t in builtin.HELD_OUT_TEMPLATES]
    train_captions = [i.caption for i in items if i.split == "train"]
    assert not any(c.startswith(h) for c in train_captions for h in held_out)
    assert "a photo of an ankle boot" in {builtin.fashion_caption(9, 0, "train")}
    assert builtin.import_builtin("fashion-mnist", limit=3) == ref  # same content, same version


def test_emoji_render_in_colour_with_their_names(home: Path) -> None:
    need(builtin.EMOJI_FONT, "fonts-noto-color-emoji")
    need(builtin.EMOJI_TEST, "unicode-data")
    import io

    from PIL import Image

    entries = builtin.emoji_entries()
    assert 1800 < len(entries) < 2000 and entries[0][1] == "grinning face"
    items = builtin.emoji_items(limit=20)
    assert items[0].caption == "grinning face emoji" and items[0].source == "Smileys & Emotion/face-smiling/1F600.png"
    image = Image.open(io.BytesIO(items[0].data))
    assert image.size == (64, 64) and image.mode == "RGB"
    r, g, b = image.getpixel((32, 20))
    assert r > 200 and g > 150 and b < 120  # the yellow face, not a blank or monochrome glyph
    assert builtin.emoji_caption("flag: Wales") == "the flag of Wales, emoji"


def test_missing_package_and_bad_checksum_are_one_clear_sentence(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    monkeypatch.setattr(builtin, "FASHION_DIR", tmp_path / "absent")
    assert main(["dataset", "import", "--builtin", "fashion-mnist"]) == 2
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err

    need(Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist")
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in builtin.FASHION_FILES:
        shutil.copy(Path("/usr/share/datasets/fashion-mnist") / f, copy / f)
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 20))
    monkeypatch.setattr(builtin, "FASHION_DIR", copy)
    assert main(["dataset", "import", "--builtin", "fashion-mnist"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse refuses an unknown built-in
        main(["dataset", "import", "--builtin", "mnist"])


def test_datasets_page_offers_the_builtins_and_explains_a_missing_package(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(builtin, "FASHION_DIR", tmp_path / "absent")
    at = AppTest.from_file(str(Path(__file__).with_name("datasets_page_app.py")), default_timeout=60).run()
    assert any("fashion-mnist" in m.value for m in at.markdown) and any("emoji" in m.value for m in at.markdown)
    at.button(key="builtin-fashion-mnist").click()
    at = at.run()
    assert not at.exception
    [error] = at.error
    assert error.value.endswith("is missing; install the Debian package first: sudo apt-get install -y dataset-fashion-mnist")
