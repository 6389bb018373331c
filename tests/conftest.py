"""Shared fixtures: paths to ../shared/data, the real-vocabulary tokenizers, runner options."""
from __future__ import annotations

import os

import pytest

from chatshards_testing import LLAMA3_SPECIALS


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The bundled tokenizer: Qwen2 vocabulary, ChatML template with a default system prompt."""
    from transforms.tokenizer_loading import bundled_tokenizer

    return bundled_tokenizer()


@pytest.fixture(scope="session")
def qwen_generation_tokenizer():
    """Same vocabulary; template with {% generation %} markers."""
    from transforms.tokenizer_loading import bundled_tokenizer, read_template

    return bundled_tokenizer(chat_template=read_template("chatml_generation.jinja"))


@pytest.fixture(scope="session")
def llama3_style_dir(tmp_path_factory):
    """A tokenizer directory (loaded through AutoTokenizer like a user's --tokenizer PATH): Qwen2
    vocabulary plus Llama-3 header tokens, BOS rendered by the template, turns closed by <|eot_id|>."""
    from transforms.tokenizer_loading import bundled_tokenizer, read_template

    tokenizer = bundled_tokenizer(chat_template=read_template("llama3_style.jinja"))
    tokenizer.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                  "additional_special_tokens": LLAMA3_SPECIALS})
    folder = tmp_path_factory.mktemp("llama3_style_tokenizer")
    tokenizer.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def llama3_style_tokenizer(llama3_style_dir):
    from transforms.tokenizer_loading import load_tokenizer

    return load_tokenizer(llama3_style_dir)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
