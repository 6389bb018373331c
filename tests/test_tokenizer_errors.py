"""Every way ``--tokenizer`` can fail, in our words, with the flag that fixes it, and fast
(transforms/tokenizer_loading.py): a missing folder, a folder without tokenizer files, a file, a tokenizer with
its own code (``--trust-remote-code``), a hub id while offline (a few seconds, not a minute of retries; a copy
in the local Hugging Face cache still loads)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.launch.main import main as default_command
from transforms.tokenizer_loading import TokenizerConfigError, bundled_tokenizer, load_tokenizer

REPO = Path(__file__).resolve().parent.parent
TRANSFORMERS_WORDING = ("Repo id", "repo_name", "huggingface.co/docs", "couldn't connect", "sentencepiece or tiktoken")


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok") / "bundled"
    bundled_tokenizer().save_pretrained(folder)
    return folder


def refused(spec: str, **options) -> str:
    with pytest.raises(TokenizerConfigError) as info:
        load_tokenizer(spec, **options)
    text = str(info.value)
    assert not any(words in text for words in TRANSFORMERS_WORDING), text
    assert "\n" not in text
    return text


def test_a_missing_folder_is_named_as_one(tmp_path):
    for spec in (str(tmp_path / "nope"), "./nope", "models/qwen/tokenizer"):
        assert "no such folder" in refused(spec)


def test_a_folder_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert "the folder holds no tokenizer files" in refused(str(tmp_path))


def test_a_file_is_not_a_tokenizer_folder(saved_tokenizer):
    assert "is a file; give the folder" in refused(str(saved_tokenizer / "tokenizer.json"))


def test_a_tokenizer_with_its_own_code_needs_trust_remote_code(saved_tokenizer, tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    for path in saved_tokenizer.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(auto_map={"AutoTokenizer": [None, "custom_tok.CustomTokenizer"]}, tokenizer_class="CustomTokenizer")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "custom_tok.py").write_text("from transformers import PreTrainedTokenizerFast\n\n\n"
                                          "class CustomTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    assert "pass --trust-remote-code to run it" in refused(str(folder))
    assert type(load_tokenizer(str(folder), trust_remote_code=True)).__name__ == "CustomTokenizer"


def test_an_offline_hub_id_fails_in_seconds(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    assert "HF_HUB_OFFLINE is set, and it is not in the local Hugging Face cache" in refused("acme/no-such-tokenizer")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    text = refused("acme/no-such-tokenizer")
    assert "127.0.0.1 cannot be reached from this machine" in text and "hf download acme/no-such-tokenizer" in text
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    assert default_command(["--input", str(data), "--output", str(tmp_path / "out"), "--tokenizer", "acme/tok"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tokenizer 'acme/tok' is not a folder here" in err
    assert time.monotonic() - started < 10  # was about 50 s of retries


def test_a_cached_hub_tokenizer_loads_while_the_hub_is_unreachable(saved_tokenizer, tmp_path):
    """The hub's cache layout (models--owner--name/snapshots/REV, refs/main), filled from a saved tokenizer."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tok" / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    for path in saved_tokenizer.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (snapshot / "config.json").write_text(json.dumps({"model_type": "qwen2"}))  # a model repository's
    (cache / "models--acme--tok" / "refs").mkdir()
    (cache / "models--acme--tok" / "refs" / "main").write_text("0123456789abcdef")
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env.update(HF_HUB_CACHE=str(cache), HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(REPO))
    code = ("import time; t = time.monotonic(); from transforms.tokenizer_loading import load_tokenizer; "
            "tok = load_tokenizer('acme/tok'); print(tok.name_or_path, len(tok), round(time.monotonic() - t, 1))")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    name, size, _seconds = result.stdout.split()
    assert name == "acme/tok" and int(size) == len(bundled_tokenizer())
