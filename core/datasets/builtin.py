"""Built-in real datasets, read from Debian packages so they work offline.

- `fashion-mnist`: Zalando's 70,000 28×28 clothing images (10 classes, MIT) from
  `dataset-fashion-mnist`; the official test split becomes `val`. Training captions use four
  templates ("a photo of a sneaker"); the val split also uses two templates never seen in training,
  so an evaluation on val prompts measures text generalisation.
- `emoji`: Noto Color Emoji (`fonts-noto-color-emoji`) rendered with Pillow, named from Unicode's
  `emoji-test.txt` (`unicode-data`): ~1,870 colour images, each with its own caption; the file
  name keeps the group and subgroup (`<group>/<subgroup>/<codepoints>.png`).

Every source file is checked against the checksums dpkg recorded when it installed the package,
and the Fashion-MNIST data against the sha256 of its decoded content, before anything is written.
The label of an item (for evaluators) is the folder part of its `source`; see core.evaluation.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.datasets.versions import NewItem, write_version
from core.errors import StudioError

Progress = Callable[[float, str], None]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# sha256 of the decompressed idx files: the same data whatever compression a package version uses.
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_CLASSES = (
    "a t-shirt", "a pair of trousers", "a pullover", "a dress", "a coat",
    "a sandal", "a shirt", "a sneaker", "a bag", "an ankle boot",
)  # fmt: skip
TRAIN_TEMPLATES = ("a photo of {}", "a picture of {}", "{}", "a grayscale photo of {}")
HELD_OUT_TEMPLATES = ("an image of {}", "a product photo of {}")

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_SIZE = 64
SKIN_TONES = {f"{c:X}" for c in range(0x1F3FB, 0x1F400)}
FONT_SIZE = 109  # NotoColorEmoji is a CBDT bitmap font: it loads only at its strike size

PACKAGES = {"fashion-mnist": ("dataset-fashion-mnist",), "emoji": ("fonts-noto-color-emoji", "unicode-data")}
BUILTINS = tuple(PACKAGES)
DESCRIPTIONS = {
    "fashion-mnist": "70,000 real 28×28 clothing photos in 10 classes, official test split as val (MIT)",
    "emoji": "about 1,870 colour emoji, each captioned with its Unicode name",
}


def _missing(path: Path, package: str) -> StudioError:
    return StudioError(f"{path} is missing; install the Debian package first: sudo apt-get install -y {package}")


def _check_dpkg_md5(path: Path, package: str) -> None:
    """The file must match the md5 dpkg recorded for it (catches a damaged or edited install)."""
    sums = Path(f"/var/lib/dpkg/info/{package}.md5sums")
    if not sums.is_file():
        return  # not installed by dpkg (a copied folder): the content checks below still apply
    wanted = {line.split()[1]: line.split()[0] for line in sums.read_text().splitlines() if line.strip()}
    expected = wanted.get(str(path).lstrip("/"))
    if expected and hashlib.md5(path.read_bytes()).hexdigest() != expected:
        raise StudioError(f"{path} does not match the checksum of the {package} package; reinstall it: sudo apt-get install --reinstall -y {package}")


def _read_idx(path: Path, expected_sha256: str) -> np.ndarray:
    if not path.is_file():
        raise _missing(path, "dataset-fashion-mnist")
    _check_dpkg_md5(path, "dataset-fashion-mnist")
    data = gzip.decompress(path.read_bytes())
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise StudioError(f"{path} is not the Fashion-MNIST file it should be (checksum mismatch); reinstall dataset-fashion-mnist.")
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2049:  # labels
        return np.frombuffer(data, np.uint8, count, 8)
    rows, cols = struct.unpack(">II", data[8:16])
    return np.frombuffer(data, np.uint8, count * rows * cols, 16).reshape(count, rows, cols)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def fashion_caption(label: int, index: int, split: str) -> str:
    templates = TRAIN_TEMPLATES if split == "train" else TRAIN_TEMPLATES + HELD_OUT_TEMPLATES
    return templates[index % len(templates)].format(FASHION_CLASSES[label])


def fashion_items(per_class: int | None = None, progress: Progress | None = None) -> list[NewItem]:
    """All 70,000 images, or the first `per_class` of each class in each split (for tests)."""
    arrays = {f: _read_idx(FASHION_DIR / f, sha) for f, sha in FASHION_FILES.items()}  # every file checked first
    items = []
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images, labels = arrays[f"{prefix}-images-idx3-ubyte.gz"], arrays[f"{prefix}-labels-idx1-ubyte.gz"]
        taken = np.zeros(10, int)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            if per_class is not None and taken[label] >= per_class:
                continue
            taken[label] += 1
            name = FASHION_CLASSES[label].split(" ", 1)[1].replace(" ", "-")  # "pair-of-trousers"
            items.append(
                NewItem(
                    data=_png(Image.fromarray(image, "L")),
                    ext="png",
                    caption=fashion_caption(int(label), i, split),
                    width=28,
                    height=28,
                    split=split,  # type: ignore[arg-type]
                    source=f"{split}/{name}/{prefix}-{i:05d}.png",
                )
            )
            if progress and i % 2000 == 0:
                progress(0.5 * (split == "val") + 0.5 * i / len(images), f"Decoded {split} image {i:,}")
    return items


def emoji_entries() -> list[tuple[str, str, str, str]]:
    """(codepoints, name, group, subgroup) of every fully-qualified emoji without a skin tone."""
    if not EMOJI_TEST.is_file():
        raise _missing(EMOJI_TEST, "unicode-data")
    _check_dpkg_md5(EMOJI_TEST, "unicode-data")
    entries, group, subgroup = [], "", ""
    for line in EMOJI_TEST.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line:
            points = line.split(";")[0].split()
            if SKIN_TONES.isdisjoint(points):
                # "# 😀 E1.0 grinning face": the name follows the emoji and its version
                name = line.split("#", 1)[1].strip().split(" ", 2)[2]
                entries.append((" ".join(points), name, group, subgroup))
    return entries


def emoji_caption(name: str) -> str:
    if name.startswith("flag: "):
        return f"the flag of {name.removeprefix('flag: ')}, emoji"
    return f"{name} emoji"


def render_emoji(text: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    """The emoji on white at EMOJI_SIZE; None when the font draws it as several glyphs (unsupported)."""
    canvas = Image.new("RGBA", (FONT_SIZE * 4, FONT_SIZE * 2), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((FONT_SIZE // 2, FONT_SIZE // 2), text, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None or box[2] - box[0] > 1.4 * FONT_SIZE:
        return None
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((EMOJI_SIZE, EMOJI_SIZE), Image.Resampling.LANCZOS)


def emoji_items(limit: int | None = None, progress: Progress | None = None) -> list[NewItem]:
    if not EMOJI_FONT.is_file():
        raise _missing(EMOJI_FONT, "fonts-noto-color-emoji")
    _check_dpkg_md5(EMOJI_FONT, "fonts-noto-color-emoji")
    font = ImageFont.truetype(str(EMOJI_FONT), size=FONT_SIZE)
    entries = emoji_entries()[:limit]
    items = []
    for i, (points, name, group, subgroup) in enumerate(entries):
        image = render_emoji("".join(chr(int(p, 16)) for p in points.split()), font)
        if image is None:
            continue
        items.append(
            NewItem(
                data=_png(image),
                ext="png",
                caption=emoji_caption(name),
                width=EMOJI_SIZE,
                height=EMOJI_SIZE,
                split="val" if len(items) % 10 == 9 else "train",
                source=f"{group}/{subgroup}/{points.replace(' ', '_')}.png",
            )
        )
        if progress and i % 100 == 0:
            progress(i / len(entries), f"Rendered {i:,}/{len(entries):,} emoji")
    return items


def import_builtin(which: str, *, limit: int | None = None, progress: Progress | None = None) -> str:
    """Import a built-in dataset as a new version of the dataset of the same name; return `name@version`.

    `limit` keeps a small subset (per class and split for fashion-mnist, the first N emoji), for tests.
    """
    if which not in PACKAGES:
        raise StudioError(f"There is no built-in dataset {which!r}; choose one of: {', '.join(BUILTINS)}.")

    def half(start: float) -> Progress | None:
        return (lambda f, text: progress(start + f / 2, text)) if progress else None

    items = fashion_items(limit, half(0.0)) if which == "fashion-mnist" else emoji_items(limit, half(0.0))
    name = which if limit is None else f"{which}-{limit}"
    note = f"built-in {which} from Debian ({', '.join(PACKAGES[which])})" + (f", subset of {limit}" if limit else "")
    version = write_version(name, items, note=note, progress=half(0.5))
    return f"{name}@{version}"
