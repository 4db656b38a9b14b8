"""The CLIP tokenizer, built offline from the BPE vocabulary that open-clip-torch ships.

The vocabulary becomes a Hugging Face `CLIPTokenizer` (49,408 tokens, bos 49406, eos/pad 49407)
once and is cached under STUDIO_HOME. `import open_clip` needs torchvision, which breaks this
stack, so the vocabulary file is read by path. A saved tokenizer folder also gets the files of a
published CLIP tokenizer (`write_vocab_files`), so slow tokenizers and other tools load it too.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
import unicodedata
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

from core.files import staged_folder
from core.settings import get_settings

MAX_LENGTH = 77
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2
MERGES_HEADER = "#version: 0.2"  # the first line of openai/clip-vit-large-patch14's merges.txt


def clean_caption(text: str) -> str:
    """The same pre-cleaning open_clip applies, so both tokenizers see the same text."""
    text = html.unescape(html.unescape(text))
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which CLIP's BPE uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise RuntimeError("open-clip-torch is not installed; run `make install`.")
    return Path(spec.origin).parent / BPE_FILE


def build_tokenizer() -> CLIPTokenizer:
    lines = gzip.open(_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = [*byte_chars, *(c + "</w>" for c in byte_chars), *("".join(m) for m in merges)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)


@lru_cache(maxsize=1)
def load_tokenizer() -> CLIPTokenizer:
    """The cached tokenizer; built and saved on first use."""
    cache = get_settings().cache_dir / "clip-tokenizer"
    if not (cache / "tokenizer_config.json").is_file():
        with staged_folder(cache) as tmp:
            build_tokenizer().save_pretrained(tmp)
    return CLIPTokenizer.from_pretrained(cache)


def count_tokens(text: str) -> int:
    """Tokens of a caption including bos/eos, as the text encoder sees them before truncation."""
    return len(load_tokenizer()(clean_caption(text)).input_ids)


def write_vocab_files(folder: Path) -> None:
    """Add `vocab.json`, `merges.txt` and `special_tokens_map.json` beside a saved `tokenizer.json`:
    what transformers 4.x's slow `CLIPTokenizer` and other CLIP loaders read instead."""
    saved = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    model = saved["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    special = {key: config[key] for key in ("bos_token", "eos_token", "unk_token", "pad_token") if key in config}
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join([MERGES_HEADER, *merges]) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
