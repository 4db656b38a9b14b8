"""One uploaded image: checked under Pillow's bomb limit, normalised to RGB and hashed.

Pure functions from bytes (or a file holding them, for large entries) to bytes and facts; writing
the files is the caller's business.

The header decides what an image needs. One that is stored as uploaded (RGB JPEG, PNG or WebP,
upright, one frame) is decoded only to prove it is whole and to hash it: a JPEG at a reduced scale
(libjpeg still reads and checks every block of the stream, so truncation and corruption are found
as in a full decode), which also gives the small greyscale thumbnail the perceptual hash needs.
Any other image is decoded fully, rotated by its EXIF orientation, converted to RGB and stored as
PNG.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

KEEP_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
READ_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"}
HASH_SIDE = 8  # 64-bit hashes
PHASH_SIDE = 32  # imagehash.phash resamples to 32×32 (hash_size 8 × highfreq_factor 4)
# The first 8 rows of the DCT-II basis: DCT_LOW @ x @ DCT_LOW.T is the top-left 8×8 block of
# scipy.fftpack.dct along both axes, up to a factor of 4 that a comparison with the median ignores.
DCT_LOW = np.cos(np.pi * (2 * np.arange(PHASH_SIDE)[None, :] + 1) * np.arange(HASH_SIDE)[:, None] / (2 * PHASH_SIDE))


class BadImage(Exception):
    """An image that cannot be used; its message is the reason shown in the report."""


@dataclass(frozen=True)
class StoredImage:
    """What the draft records of an image stored as `images/<sha256>.<ext>`."""

    sha256: str
    ext: str
    width: int
    height: int
    phash: str
    original: str  # originals/<sha256><suffix> when the image was converted, else ""


@contextmanager
def reading() -> Iterator[None]:
    """Pillow's errors, and its decompression-bomb warning, as a BadImage with the reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImage(f"decompression bomb: {str(exc).split(', could be')[0]} (Pillow's limit)") from None
        except UnidentifiedImageError:
            raise BadImage("not an image Pillow can read (corrupt or unsupported)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise BadImage(f"corrupt or truncated image ({exc})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Palette, CMYK, 16-bit, greyscale and alpha images as 8-bit RGB (transparency on white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray((arr / top * 255.0).clip(0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def perceptual_hash(im: Image.Image) -> str:
    """`imagehash.phash` of a decoded image as hex, computed on a small greyscale thumbnail.

    The library's algorithm with the same bits on the same 32×32 input (a test holds them equal),
    at a fraction of the cost: the thumbnail comes from a whole-factor box `reduce` (plus one
    bilinear step when the sides are not multiples of 32), and the 8×8 low frequencies of the 2-D
    DCT are one small matrix product instead of scipy's full transform, whose import alone takes a
    second. Hashing the full-size image through the library cost more than decoding it.
    """
    grey = im.convert("L")
    factor = min(grey.size) // PHASH_SIDE
    if factor > 1:
        grey = grey.reduce(factor)
    if grey.size != (PHASH_SIDE, PHASH_SIDE):
        grey = grey.resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.BILINEAR)
    pixels = np.frombuffer(grey.tobytes(), np.uint8).reshape(PHASH_SIDE, PHASH_SIDE)  # asarray costs twice as much
    low = DCT_LOW @ pixels.astype(np.float64) @ DCT_LOW.T
    ranked = np.sort(low, axis=None)
    median = (ranked[ranked.size // 2 - 1] + ranked[ranked.size // 2]) / 2  # np.median's value, at a tenth of its cost
    return np.packbits(low > median).tobytes().hex()


def prepare_image(raw: bytes | Path, rel: PurePosixPath, min_side: int) -> tuple[StoredImage, bytes | Path] | str:
    """(what the draft records, the bytes to store) of an encoded image, or why it cannot be used.

    `raw` is the encoded bytes, or a file holding them (a large entry, streamed to disk rather than
    read into memory); an image stored as uploaded is then that same file.
    """
    if (raw.stat().st_size if isinstance(raw, Path) else len(raw)) == 0:
        return "empty file (0 bytes)"
    source = raw.open("rb") if isinstance(raw, Path) else io.BytesIO(raw)
    with source:
        return _prepare(source, raw, rel, min_side)


def _prepare(source: io.BufferedIOBase, raw: bytes | Path, rel: PurePosixPath, min_side: int) -> tuple[StoredImage, bytes | Path] | str:
    data: bytes | Path
    try:
        with reading():
            im = Image.open(source)  # the header only; Pillow's bomb check runs here
            if im.format not in READ_FORMATS:
                raise BadImage(f"unsupported image format {im.format}")
            keep = (
                im.format in KEEP_FORMATS
                and im.mode == "RGB"
                and getattr(im, "n_frames", 1) == 1
                and im.getexif().get(0x0112, 1) == 1
            )
            if keep:
                size = im.size
                im.draft("L", (PHASH_SIDE, PHASH_SIDE))  # JPEG: decode at 1/2…1/8 scale; other formats: no-op
                im.load()
                data, ext = raw, KEEP_FORMATS[im.format]
            else:
                im.seek(0)
                im.load()
                im = to_rgb(ImageOps.exif_transpose(im))
                size = im.size
                buffer = io.BytesIO()
                im.save(buffer, format="PNG")
                data, ext = buffer.getvalue(), "png"
        if min(size) < min_side:
            raise BadImage(f"too small: {size[0]}×{size[1]}, the minimum side is {min_side} (STUDIO_MIN_IMAGE_SIDE)")
    except BadImage as exc:
        return str(exc)
    if isinstance(data, Path):
        with data.open("rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
    else:
        sha = hashlib.sha256(data).hexdigest()
    original = "" if keep else f"originals/{sha}{rel.suffix.lower()}"
    return StoredImage(sha, ext, size[0], size[1], perceptual_hash(im), original), data
