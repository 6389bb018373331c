"""The Beam job end to end on real data (FnApiRunner): counts, contract, determinism, failure modes."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from chatshards_testing import REPO, RUNNER_ARGS, quick_first, run_job, sample
from transforms import shard_format as sf
from transforms.config import TokenizeOptions
from transforms.formats import FormatOptions
from transforms.reading import iter_raw_records_from_path
from transforms.rows import RowBuilder

INPUTS = [
    "sharegpt/fastchat_dummy_conversation.json",
    "openai/openai_cookbook_toy_chat_fine_tuning.jsonl",
    "tool_calling/llamafactory_glaive_toolcall_en_demo.json",
    "tool_calling/openai_cookbook_drone_training_first3.jsonl",
    "edge_cases/axolotl_conversation.missingturns.json",
    "edge_cases/openai_cookbook_01-testing-example_multiline.jsonl",
    "edge_cases/qwen3vl_single_images_trailing_comma.json",
    "edge_cases/xtuner_openai_sft_bare_lists.jsonl",
]


def input_args():
    args = []
    for relative in INPUTS:
        args += ["--input", str(sample(relative))]
    return args


def read_shards(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for entry in manifest["shards"]:
        with pa.memory_map(str(out / entry["path"])) as source:
            table = pa.ipc.open_stream(source).read_all()
        rows += table.to_pylist()
    return rows


def tree_digest(out: Path) -> dict[str, str]:
    return {
        str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(out.rglob("*")) if path.is_file()
    }


@pytest.fixture(scope="module")
def job_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "out"
    assert run_job([*input_args(), "--output", str(out), "--max-length", "1024", "--num-shards", "3"]) == 0
    return out


def test_counts_reconcile_with_independent_count(job_output):
    manifest = json.loads((job_output / "manifest.json").read_text())
    expected_read = sum(len(list(iter_raw_records_from_path(str(sample(r))))) for r in INPUTS)
    counts = manifest["counts"]
    assert counts["read"] == expected_read
    assert counts["read"] == counts["written"] + counts["rejected"]
    rejected_lines = [json.loads(line) for f in sorted((job_output / "rejected").glob("*.jsonl"))
                      for line in f.read_text().splitlines()]
    assert len(rejected_lines) == counts["rejected"]
    assert Counter(r["reason"] for r in rejected_lines) == Counter(manifest["rejected_by_reason"])
    by_source = Counter((Path(r["source"]).name, r["reason"]) for r in rejected_lines)
    assert by_source[("axolotl_conversation.missingturns.json", "empty_turn")] == 1
    assert by_source[("qwen3vl_single_images_trailing_comma.json", "invalid_content")] == 3
    for line in rejected_lines:
        assert set(line) == {"reason", "detail", "source", "index", "record"} and line["record"] is not None
    rows = read_shards(job_output)
    assert len(rows) == counts["written"] == sum(e["rows"] for e in manifest["shards"])


def test_shards_follow_the_contract_and_open_with_datasets(job_output):
    import datasets

    manifest = json.loads((job_output / "manifest.json").read_text())
    assert [e["path"] for e in manifest["shards"]] == [f"data/shard-{i:05d}-of-00003.arrow" for i in range(3)]
    total = 0
    for entry in manifest["shards"]:
        path = job_output / entry["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
        ds = datasets.Dataset.from_file(str(path))
        assert len(ds) == entry["rows"]
        total += len(ds)
        table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
        assert table.schema.field("input_ids").type == pa.list_(pa.int32())
        assert table.schema.field("labels").type == pa.list_(pa.int32())
        for name, typ in [("length", pa.int32()), ("num_loss_tokens", pa.int32()), ("truncated", pa.bool_()),
                          ("source", pa.string()), ("index", pa.int64()), ("record_id", pa.string())]:
            assert table.schema.field(name).type == typ
        keys = [sf.row_sort_key(s, i) for s, i in zip(table["source"].to_pylist(), table["index"].to_pylist())]
        assert keys == sorted(keys) and all(sf.shard_of(k, 3) == int(entry["path"][11:16]) for k in keys)
        assert entry["tokens"] == sum(table["length"].to_pylist())
    assert total == manifest["counts"]["written"]
    tok = manifest["tokenizer"]
    assert tok["pad_token_id"] == 151643 and tok["eos_token_id"] == 151645
    assert manifest["template_check"]["injects_default_system_prompt"] is True
    assert len(manifest["config_fingerprint"]) == 64 and manifest["schema_version"] == sf.SCHEMA_VERSION


def test_rows_equal_the_pure_builder_output(job_output, qwen_tokenizer):
    """The Beam path and a direct RowBuilder call give the same rows (one implementation)."""
    rows = {(r["source"], r["index"]): r for r in read_shards(job_output)}
    builder = RowBuilder(tokenizer=qwen_tokenizer, format_options=FormatOptions(),
                         tokenize_options=TokenizeOptions(max_length=1024))
    raws = list(iter_raw_records_from_path(str(sample(INPUTS[0]))))[:40]
    for raw, (_kind, expected) in zip(raws, builder.build_records(raws)):
        row = rows[(raw.source, raw.index)]
        assert row["input_ids"] == expected["input_ids"].tolist()
        assert row["labels"] == expected["labels"].tolist()
        assert row["record_id"] == sf.record_id_of(raw.value)


@pytest.mark.slow
def test_identical_bytes_across_direct_runner_modes(tmp_path):
    args = ["--input", str(sample("sharegpt/fastchat_dummy_conversation.json")),
            "--input", str(sample("edge_cases/openai_cookbook_01-testing-example_multiline.jsonl")),
            "--input", str(sample("edge_cases/axolotl_conversation.missingturns.json")), "--num-shards", "4"]
    digests = []
    for mode in ("in_memory", "multi_processing"):
        out = tmp_path / mode
        extra = ["--runner=FnApiRunner", f"--direct_running_mode={mode}"]
        if mode == "multi_processing":
            extra.append("--direct_num_workers=2")
        assert run_job([*args, "--output", str(out), *extra]) == 0
        digests.append(tree_digest(out))
    assert digests[0] == digests[1]
    assert "manifest.json" in digests[0] and sum(k.startswith("data/") for k in digests[0]) == 4


@pytest.mark.slow
def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--input", str(sample("openai/openai_cookbook_toy_chat_fine_tuning.jsonl")), "--output", str(out)]
    assert run_job(args) == 0
    first = tree_digest(out)
    assert run_job(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_job([*args, "--num-shards", "2", "--overwrite"]) == 0
    second = tree_digest(out)
    assert sorted(k for k in second if k.startswith("data/")) == [
        "data/shard-00000-of-00002.arrow", "data/shard-00001-of-00002.arrow"]
    assert not any(k.startswith("data/") and k in second for k in first if k.startswith("data/"))


@pytest.mark.slow
def test_a_run_that_dies_leaves_no_manifest(tmp_path, monkeypatch, capsys):
    from pipeline.engines.beam import sink

    def explode(self, element, num_shards):
        raise RuntimeError("injected failure while writing a shard")

    monkeypatch.setattr(sink.WriteShardFn, "process", explode)
    out = tmp_path / "out"
    assert run_job(["--input", str(sample("openai/openai_cookbook_toy_chat_fine_tuning.jsonl")),
                    "--output", str(out)]) == 1
    assert "injected failure" in capsys.readouterr().err
    assert not (out / "manifest.json").exists()
    from transforms.runtime import ShardDataset  # the reader refuses the folder

    with pytest.raises(sf.ManifestError):
        ShardDataset(str(out))


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "pipeline", *args, *RUNNER_ARGS], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,message", quick_first([
    (["--max-length", "1"], "--max-length"),
    (["--truncation", "drop"], "needs --max-length"),
    (["--pad-to", "max_length"], "needs --max-length"),
    (["--field-map", "nonsense"], "--field-map"),
    (["--role-map", "bot=robot"], "robot"),
]))
def test_config_errors_fail_fast_with_exit_2(tmp_path, args, message):
    result = _cli("--input", str(sample("openai/openai_cookbook_toy_chat_fine_tuning.jsonl")),
                  "--output", str(tmp_path / "o"), *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "chatshards: error:" in result.stderr and message in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_unmatched_input_and_unusable_template_fail_fast(tmp_path):
    result = _cli("--input", str(tmp_path / "nothing-*.jsonl"), "--output", str(tmp_path / "o"))
    assert result.returncode == 2 and "matches no file" in result.stderr
    bad = tmp_path / "no_stop.jinja"  # assistant turns never closed by a stop token
    bad.write_text("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    result = _cli("--input", str(sample("openai/openai_cookbook_toy_chat_fine_tuning.jsonl")),
                  "--output", str(tmp_path / "o"), "--chat-template", str(bad))
    assert result.returncode == 2 and "stop token" in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_pad_to_max_length_rows(tmp_path):
    out = tmp_path / "out"
    assert run_job(["--input", str(sample("sharegpt/fastchat_dummy_conversation.json")), "--output", str(out),
                    "--max-length", "128", "--pad-to", "max_length"]) == 0
    rows = read_shards(out)
    for row in rows[:50]:
        n = row["length"]
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["attention_mask"]) == 128
        assert row["attention_mask"] == [1] * n + [0] * (128 - n)
        assert set(row["labels"][n:]) <= {-100}


def test_transforms_import_without_apache_beam():
    code = (
        "import sys; sys.modules['apache_beam'] = None\n"
        "import transforms.rows, transforms.shard_format, transforms.template_check\n"
        "assert 'apache_beam' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
