"""Offline tokenizers: the BPE files ship inside the package and are checked by sha256.

tiktoken normally downloads its BPE files on first use. We read the packaged copies as
tiktoken's own loader does (`read_ranks`) and build them with its own encoding definitions
(pattern, special tokens), so token counts are exactly tiktoken's, with no network and no cache
directory needed.
"""

from __future__ import annotations

import binascii
import hashlib
import threading
from functools import cache
from importlib import resources
from unittest import mock

import tiktoken
import tiktoken.model
import tiktoken_ext.openai_public as openai_public

from ftflow.catalog import base_model_of, load_catalog
from ftflow.errors import ConfigError

# encoding name -> (packaged file, sha256 that tiktoken itself expects)
PACKAGED_BPE = {
    "cl100k_base": (
        "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
_build_lock = threading.Lock()


def encoding_name_for_model(model: str) -> str:
    """Pick the encoding from the model name as tiktoken does (fine-tuned ids included)."""
    try:
        return tiktoken.model.encoding_name_for_model(base_model_of(model))
    except KeyError:
        pass
    try:
        encoding = load_catalog().get(model).encoding
    except ConfigError:
        encoding = None
    if encoding is None:
        raise ConfigError(f"no known tokenizer for model {model!r}")
    return encoding


def read_ranks(path: str, sha256: str) -> dict[bytes, int]:
    """A BPE file's ranks (token bytes -> rank), checked by its sha256: what tiktoken's
    `load_tiktoken_bpe` returns for it (the reference, tests/unit/test_encodings.py), in one split
    of the whole file instead of one per line (0.25 -> 0.16 s of CPU for o200k_base, under load),
    and without the copy of the file that loader writes to a cache folder."""
    with open(path, "rb") as f:
        contents = f.read()
    if hashlib.sha256(contents).hexdigest() != sha256:
        raise ConfigError(f"{path} is not the BPE file packaged (its sha256 differs)")
    fields = contents.split()  # token rank token rank ..., one pair a line
    return dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2]), strict=True))


@cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """Return the named encoding, built from the packaged BPE file."""
    if name not in PACKAGED_BPE:
        raise ConfigError(f"encoding {name!r} is not packaged (have {sorted(PACKAGED_BPE)})")
    filename, sha256 = PACKAGED_BPE[name]
    path = resources.files("ftflow").joinpath(f"data/tiktoken/{filename}")

    def load_packaged(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        # tiktoken_ext passes its download URL and hash; we hand it the packaged file.
        if expected_hash != sha256:
            raise ConfigError(f"tiktoken expects another {name} file than the one packaged")
        return read_ranks(str(path), sha256)

    with _build_lock, mock.patch.object(openai_public, "load_tiktoken_bpe", load_packaged):
        constructor_args = getattr(openai_public, name)()
    return tiktoken.Encoding(**constructor_args)


@cache
def special_tokens(name: str) -> frozenset[str]:
    """The named encoding's special tokens, from tiktoken's definition, without loading its BPE file."""
    if name not in PACKAGED_BPE:
        raise ConfigError(f"encoding {name!r} is not packaged (have {sorted(PACKAGED_BPE)})")
    with _build_lock, mock.patch.object(openai_public, "load_tiktoken_bpe", lambda *_a, **_k: {}):
        return frozenset(getattr(openai_public, name)()["special_tokens"])


def encoding_for_model(model: str) -> tiktoken.Encoding:
    return get_encoding(encoding_name_for_model(model))
