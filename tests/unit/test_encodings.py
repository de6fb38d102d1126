from __future__ import annotations

from importlib import resources

import pytest

from ftflow import encodings
from ftflow.catalog import load_catalog
from ftflow.encodings import PACKAGED_BPE, get_encoding, special_tokens
from ftflow.errors import ConfigError


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano-2025-04-14", "o200k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme:support:abc123", "o200k_base"),
        ("ft:gpt-3.5-turbo-0125:acme::xyz", "cl100k_base"),
    ],
)
def test_encoding_follows_the_model_name(model, name):
    assert encodings.encoding_name_for_model(model) == name


def test_packaged_encodings_count_like_tiktoken_reference_values():
    # Reference ids published with tiktoken: "hello world" is [15339, 1917] in cl100k_base.
    assert encodings.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert encodings.get_encoding("o200k_base").encode("hello world") == [24912, 2375]


def test_a_tampered_bpe_file_is_refused(monkeypatch):
    encodings.get_encoding.cache_clear()
    filename, _ = encodings.PACKAGED_BPE["cl100k_base"]
    monkeypatch.setitem(encodings.PACKAGED_BPE, "cl100k_base", (filename, "0" * 64))
    try:
        with pytest.raises(ConfigError, match="expects another cl100k_base file"):
            encodings.get_encoding("cl100k_base")
    finally:
        encodings.get_encoding.cache_clear()


@pytest.mark.parametrize("name", sorted(PACKAGED_BPE))
def test_the_packaged_ranks_are_what_tiktoken_s_loader_reads(name, monkeypatch):
    import tiktoken.load

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # the reference reads the file, writes no copy
    filename, sha256 = PACKAGED_BPE[name]
    path = str(resources.files("ftflow").joinpath(f"data/tiktoken/{filename}"))
    reference = tiktoken.load.load_tiktoken_bpe(path, expected_hash=sha256)
    assert list(encodings.read_ranks(path, sha256).items()) == list(reference.items())  # in the same order too


def test_a_bpe_file_changed_since_it_was_packaged_is_refused(tmp_path):
    filename, sha256 = PACKAGED_BPE["cl100k_base"]
    changed = tmp_path / filename
    contents = resources.files("ftflow").joinpath(f"data/tiktoken/{filename}").read_bytes()
    changed.write_bytes(contents.replace(b" 0\n", b" 1\n", 1))
    with pytest.raises(ConfigError, match="sha256 differs"):
        encodings.read_ranks(str(changed), sha256)


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="no known tokenizer"):
        encodings.encoding_name_for_model("llama-3")


def test_catalog_has_the_required_models_with_dated_prices():
    catalog = load_catalog()
    assert catalog.as_of and catalog.source
    for model in ["gpt-3.5-turbo", "gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"]:
        info = catalog.get(model)
        assert info.training > 0 and info.finetuned_input > info.base_input
    assert catalog.get("ft:gpt-4o-mini-2024-07-18:org:x:1").name == "gpt-4o-mini-2024-07-18"
    with pytest.raises(ConfigError, match="not in the price table"):
        catalog.get("davinci-002")


def test_every_provider_s_fine_tuned_name_leads_back_to_its_base_model():
    from ftflow.catalog import base_model_of

    llama = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
    assert base_model_of("ft:gpt-4o-mini-2024-07-18:org:ftflow:abc") == "gpt-4o-mini-2024-07-18"
    assert base_model_of("gpt-4o-mini-2024-07-18.ft-0123abcd-ftflow") == "gpt-4o-mini-2024-07-18"
    # Together: a baseline equal to the candidate could never be beaten, so nothing would be promoted.
    assert base_model_of("ftflow-local/Meta-Llama-3.1-8B-Instruct-Reference-ftflow-ca7a70a871-xuvBmrFQ") == llama
    assert base_model_of(llama) == llama


@pytest.mark.parametrize("name", sorted(PACKAGED_BPE))
def test_special_tokens_without_the_bpe_file_are_the_encodings_own(name):
    assert special_tokens(name) == get_encoding(name).special_tokens_set
