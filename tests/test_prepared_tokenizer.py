"""The prepared tokenizer (transforms.prepared_tokenizer) against transformers' AutoTokenizer.

Every member the job reads is compared on the bundled tokenizer, on saved tokenizer folders (Qwen2
vocabulary with the generation template; Llama-3-style with a BOS and extra special tokens; a small
WordPiece tokenizer with an unknown token and decode clean-up), and loading a prepared folder is
shown not to import transformers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chatshards_testing import quick_first
from transforms.prepared_tokenizer import NAMED_SPECIAL_TOKENS, PreparedTokenizer, preparable
from transforms.tokenizer_loading import (
    bundled_tokenizer,
    load_tokenizer,
    read_template,
    special_tokens_for_template,
    tokenizer_description,
)

TEXTS = ["Hello, world! Don't stop .", "<|im_start|>user\nWhy?<|im_end|>\n", "naïve café 東京 🙂", "",
         "<|begin_of_text|><|start_header_id|>x<|end_header_id|> it 's fine , isn't it ?"]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A fresh prepared-tokenizer cache holding the bundled backend (so nothing slow is rebuilt)."""
    from transforms import tokenizer_loading

    folder = tmp_path / "cache"
    folder.mkdir()
    cached, _ = tokenizer_loading._bundled_backend()
    if cached:
        os.symlink(cached, folder / os.path.basename(cached))
    monkeypatch.setenv("CHATSHARDS_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def generation_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generation_tokenizer")
    bundled_tokenizer(chat_template=read_template("chatml_generation.jinja")).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def wordpiece_dir(tmp_path_factory):
    """A small non-BPE tokenizer: [UNK] fallback and decode clean-up apply to it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "hello", ",", "world", "!", "don", "'", "t", "stop", ".", "it",
             "s", "fine", "isn", "?"]
    backend = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", clean_up_tokenization_spaces=True)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<extra>"]})
    tokenizer.add_tokens(["<plain_added>"])
    tokenizer.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    folder = tmp_path_factory.mktemp("wordpiece_tokenizer")
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def assert_same_members(prepared, reference):
    assert isinstance(prepared, PreparedTokenizer)
    assert prepared.chat_template == reference.chat_template
    assert prepared.name_or_path == reference.name_or_path
    assert prepared.is_fast and reference.is_fast
    for key in NAMED_SPECIAL_TOKENS:
        assert getattr(prepared, key) == getattr(reference, key), key
        assert getattr(prepared, key + "_id") == getattr(reference, key + "_id"), key
    assert prepared.special_tokens_map == reference.special_tokens_map
    # the vocabulary hash recorded when the folder was prepared is the one the reference gives
    from transforms.prepared_tokenizer import vocab_digest
    from transforms.tokenizer_loading import vocab_hash

    assert prepared.known_vocab_hash == vocab_digest(reference.get_vocab()) == vocab_hash(reference)
    assert vocab_hash(prepared) == vocab_digest(prepared.get_vocab())
    assert all(value is not None for value in prepared.special_tokens_map.values())
    assert prepared.all_special_tokens == reference.all_special_tokens
    assert prepared.all_special_ids == reference.all_special_ids
    assert {i: (t.content, t.special) for i, t in prepared.added_tokens_decoder.items()} == {
        i: (t.content, t.special) for i, t in reference.added_tokens_decoder.items()}
    assert prepared.get_added_vocab() == reference.get_added_vocab()
    assert prepared.get_vocab() == reference.get_vocab()
    assert len(prepared) == len(reference)
    assert prepared.backend_tokenizer.to_str() == reference.backend_tokenizer.to_str()
    size = len(reference)
    ids = [0, 1, 2, size - 1, *reference.all_special_ids, *list(reference.get_added_vocab().values())[:5]]
    assert prepared.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
    assert prepared.convert_ids_to_tokens(ids, skip_special_tokens=True) == reference.convert_ids_to_tokens(
        ids, skip_special_tokens=True)
    assert prepared.convert_ids_to_tokens(ids[3]) == reference.convert_ids_to_tokens(ids[3])
    tokens = [*reference.all_special_tokens, "hello", "no-such-token-xyz", *reference.get_added_vocab()]
    assert prepared.convert_tokens_to_ids(tokens) == reference.convert_tokens_to_ids(tokens)
    assert prepared.convert_tokens_to_ids("no-such-token-xyz") == reference.convert_tokens_to_ids("no-such-token-xyz")
    for text in TEXTS:
        for special in (False, True):
            assert prepared.encode(text, add_special_tokens=special) == reference.encode(
                text, add_special_tokens=special)
        encoded = reference.encode(text, add_special_tokens=True)
        for skip in (False, True):
            assert prepared.decode(encoded, skip_special_tokens=skip) == reference.decode(
                encoded, skip_special_tokens=skip)
            for cleanup in (False, True):
                assert prepared.decode(encoded, skip_special_tokens=skip, clean_up_tokenization_spaces=cleanup) == \
                    reference.decode(encoded, skip_special_tokens=skip, clean_up_tokenization_spaces=cleanup)
    batch = [reference.encode(t) for t in TEXTS[:3]]
    assert prepared.decode(batch) == reference.decode(batch)
    assert prepared.decode(ids[0]) == reference.decode(ids[0])
    assert tokenizer_description(prepared) == tokenizer_description(reference)
    assert special_tokens_for_template(prepared) == special_tokens_for_template(reference)


@pytest.mark.slow
def test_bundled_tokenizer_prepared_matches_transformers(cache):
    first = load_tokenizer(None, prepared=True)   # prepared now
    again = load_tokenizer(None, prepared=True)   # read from the cache
    assert list((cache / "prepared").iterdir()), "nothing was written to the cache"
    for prepared in (first, again):
        assert_same_members(prepared, load_tokenizer(None))


@pytest.mark.slow
def test_bundled_tokenizer_with_a_template_file(cache, tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text(read_template("llama3_style.jinja"))
    prepared = load_tokenizer(None, chat_template_file=str(template), prepared=True)
    assert prepared.chat_template == template.read_text()
    assert load_tokenizer(None, prepared=True).chat_template == read_template("chatml_default_system.jinja")


@pytest.mark.parametrize("folder_fixture", quick_first(["wordpiece_dir", "generation_dir", "llama3_style_dir"]))
def test_saved_folder_prepared_matches_auto_tokenizer(cache, request, folder_fixture):
    from transformers import AutoTokenizer

    folder = request.getfixturevalue(folder_fixture)
    reference = AutoTokenizer.from_pretrained(folder)
    assert preparable(reference)
    first = load_tokenizer(folder, prepared=True)
    again = load_tokenizer(folder, prepared=True)
    assert_same_members(first, reference)
    assert_same_members(again, reference)
    assert not isinstance(load_tokenizer(folder), PreparedTokenizer)  # the default stays transformers


def test_cache_is_keyed_by_the_folder_content(cache, generation_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(generation_dir, copy)
    load_tokenizer(generation_dir, prepared=True)
    assert load_tokenizer(str(copy), prepared=True).name_or_path == str(copy)
    assert len(list((cache / "prepared").iterdir())) == 1  # same content: same entry
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["eos_token"] = "<|endoftext|>"
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    changed = load_tokenizer(str(copy), prepared=True)
    assert changed.eos_token == "<|endoftext|>"
    assert len(list((cache / "prepared").iterdir())) == 2


def test_a_class_that_overrides_decode_is_not_prepared(cache, generation_dir):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(generation_dir)
    custom = type("CustomTokenizer", (type(reference),), {"decode": lambda self, *a, **k: "custom"})
    reference.__class__ = custom
    assert not preparable(reference)


def test_loading_a_prepared_folder_does_not_import_transformers(cache, generation_dir):
    load_tokenizer(generation_dir, prepared=True)  # prepares
    code = ("import sys; from transforms.tokenizer_loading import load_tokenizer; "
            f"t = load_tokenizer({generation_dir!r}, prepared=True); "
            "print(type(t).__name__, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "CHATSHARDS_CACHE": str(cache)})
    assert done.stdout.split() == ["PreparedTokenizer", "False"]


def test_a_first_load_behaves_as_every_later_load(cache, wordpiece_dir, tmp_path):
    """A first load wraps the Rust tokenizer transformers built (its serialisation was just written: no second
    parse); where that tokenizer holds state the serialisation drops (``encode_special_tokens``, from
    ``split_special_tokens``), the written copy is read back instead, so a first run tokenizes as later runs do."""
    import shutil

    first = load_tokenizer(wordpiece_dir, prepared=True)
    again = load_tokenizer(wordpiece_dir, prepared=True)
    assert isinstance(first, PreparedTokenizer) and first.backend_tokenizer.to_str() == again.backend_tokenizer.to_str()
    split = tmp_path / "split"
    shutil.copytree(wordpiece_dir, split)
    config = json.loads((split / "tokenizer_config.json").read_text())
    config["split_special_tokens"] = True
    (split / "tokenizer_config.json").write_text(json.dumps(config))
    first, again = load_tokenizer(str(split), prepared=True), load_tokenizer(str(split), prepared=True)
    text = "hello [SEP] world <extra>"
    assert first.encode(text, add_special_tokens=False) == again.encode(text, add_special_tokens=False)
    assert first.backend_tokenizer.encode_special_tokens == again.backend_tokenizer.encode_special_tokens
