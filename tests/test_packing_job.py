"""The job with ``--pack-length`` end to end (generated chat records, no shared data): configuration errors,
no token lost (the multiset of (record, position, token, label) equals the unpacked job's), truncation to
the pack length counted, the manifest and audit sections, byte-identical output across engines, workers
and batch sizes, and efficiency at least TRL's ``pack_dataset(strategy="bfd")`` on the same rows."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from packing_fixtures import chat_records

from chatshards_testing import run_job
from transforms import shard_format as sf
from transforms.packing.unpack import iter_sequences

PACK = 160


def default_command(args: list[str]) -> int:
    from pipeline.launch.main import main

    return main(list(args))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("packing_inputs")
    args = []
    for name, seed, n in (("a.jsonl", 1, 90), ("b.jsonl", 2, 60)):
        path = folder / name
        path.write_text("".join(json.dumps(r) + "\n" for r in chat_records(seed, n)), encoding="utf-8")
        args += ["--input", str(path)]
    return args


@pytest.fixture(scope="module")
def jobs(inputs, tmp_path_factory) -> dict[str, Path]:
    """name -> output folder: unpacked and packed, with --truncation right and drop."""
    root = tmp_path_factory.mktemp("packing_jobs")
    runs = {
        "rows": ["--max-length", str(PACK)],
        "packed": ["--pack-length", str(PACK)],
        "rows-drop": ["--max-length", str(PACK), "--truncation", "drop"],
        "packed-drop": ["--pack-length", str(PACK), "--truncation", "drop", "--pack-strategy", "ffd"],
    }
    out = {}
    for name, flags in runs.items():
        out[name] = root / name
        assert default_command([*inputs, "--output", str(out[name]), "--num-shards", "3", "--workers", "1",
                                *flags]) == 0
    return out


def shard_tables(folder: Path) -> list[pa.Table]:
    manifest = sf.load_manifest(str(folder))
    return [pa.ipc.open_stream(p.read_bytes()).read_all()
            for p in (folder / entry["path"] for entry in manifest["shards"])]


def token_multiset(folder: Path) -> Counter:
    """(source, index, turn, position, token, label) of every token; a row's first label counts as -100
    (packing sets it; the model never predicts a sequence's first token from inside it)."""
    out = Counter()
    for table in shard_tables(folder):
        rows = iter_sequences(table) if "seq_lengths" in table.column_names else table.to_pylist()
        for row in rows:
            labels = [-100, *list(row["labels"])[1:]]
            for position, (token, label) in enumerate(zip(row["input_ids"], labels)):
                out[(row["source"], row["index"], row["turn"], position, int(token), int(label))] += 1
    return out


def tree_digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flags, message", [
    (["--pack-strategy", "ffd"], "--pack-strategy needs --pack-length N"),
    (["--pack-length", "128", "--pad-to", "max_length", "--max-length", "128"], "--pad-to max_length cannot"),
    (["--pack-length", "128", "--max-length", "256"], "is longer than --pack-length 128"),
    (["--pack-length", "1"], "--pack-length must be an integer >= 2"),
    (["--pack-length", "9999999"], "above the limit"),
])
def test_packing_configuration_errors_exit_2_with_one_line(tmp_path, capsys, flags, message):
    data = tmp_path / "a.jsonl"
    data.write_text(json.dumps(chat_records(0, 1)[0]) + "\n")
    assert default_command(["--input", str(data), "--output", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("chatshards: error:") and message in err, err
    assert not (tmp_path / "o").exists()


def test_tasks_that_cannot_be_packed_are_refused(monkeypatch, tmp_path, capsys):
    from pipeline.launch.cli import ConfigError, parse_args
    from transforms.packing.options import packable_tasks
    from transforms.tasks import TASKS
    from transforms.tasks.chat import ChatTask

    assert packable_tasks() == ["chat"]
    assert parse_args(["--input", "x", "--output", "o", "--pack-length", "64"]).packing.length == 64
    others = sorted(set(TASKS) - {"chat"})
    assert others  # text, seq2seq, mlm, classification, ...
    for task in others:
        with pytest.raises(ConfigError, match=f"does not apply to --task {task}: .*tasks that pack: chat"):
            parse_args(["--input", "x", "--output", "o", "--task", task, "--pack-length", "64"])
    data = tmp_path / "a.jsonl"
    data.write_text(json.dumps({"text": "some text"}) + "\n")
    assert default_command(["--input", str(data), "--output", str(tmp_path / "o"), "--task", "text",
                            "--pack-length", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("chatshards: error: --pack-length does not apply to --task text") and "\n" not in err
    monkeypatch.setattr(ChatTask, "packable", False)
    with pytest.raises(ConfigError, match="--pack-length does not apply to --task chat"):
        parse_args(["--input", "x", "--output", "o", "--pack-length", "64"])


def test_no_token_is_lost_and_counts_reconcile(jobs):
    rows, packed = sf.load_manifest(str(jobs["rows"])), sf.load_manifest(str(jobs["packed"]))
    assert token_multiset(jobs["packed"]) == token_multiset(jobs["rows"])
    for key in ("read", "written", "rejected"):
        assert packed["counts"][key] == rows["counts"][key]
    assert packed["rejected_by_reason"] == rows["rejected_by_reason"]
    assert packed["counts"]["sequences"] == rows["counts"]["rows"] == packed["packing"]["sequences"]
    assert packed["counts"]["rows"] == packed["packing"]["packs"] < rows["counts"]["rows"]
    assert packed["totals"]["tokens"] == rows["totals"]["tokens"] == packed["packing"]["tokens"]
    masked = packed["packing"]["first_labels_masked"]
    assert packed["totals"]["loss_tokens"] == rows["totals"]["loss_tokens"] - masked
    assert sum(entry["sequences"] for entry in packed["shards"]) == rows["counts"]["rows"]
    assert all("packing" not in entry for entry in packed["shards"])


def test_rows_longer_than_the_pack_follow_truncation_and_are_counted(jobs):
    packed = sf.load_manifest(str(jobs["packed"]))
    stats = json.loads((jobs["rows"] / "audit" / "stats.json").read_text())
    fitted = packed["packing"]["truncated_to_fit"]
    assert fitted["sequences"] == stats["truncation"]["rows_truncated"] > 0
    assert fitted["tokens_removed"] == stats["truncation"]["tokens_removed"] > 0
    assert packed["config"]["tokenize"]["max_length"] == PACK  # --max-length defaults to the pack length
    drop_rows, drop_packed = sf.load_manifest(str(jobs["rows-drop"])), sf.load_manifest(str(jobs["packed-drop"]))
    assert drop_packed["rejected_by_reason"]["too_long"] == drop_rows["rejected_by_reason"]["too_long"] > 0
    assert drop_packed["packing"]["truncated_to_fit"] == {"sequences": 0, "tokens_removed": 0}
    assert token_multiset(jobs["packed-drop"]) == token_multiset(jobs["rows-drop"])
    for table in shard_tables(jobs["packed"]):
        assert max(pa.compute.list_value_length(table["input_ids"]).to_pylist() or [0]) <= PACK


def test_manifest_audit_and_fingerprint_say_packed(jobs):
    rows, packed = sf.load_manifest(str(jobs["rows"])), sf.load_manifest(str(jobs["packed"]))
    assert "packing" not in rows and rows["config"]["extra"] == {}  # the default job is unchanged
    assert packed["config"]["extra"]["packing"] == {"length": PACK, "strategy": "bfd"}
    assert sf.load_manifest(str(jobs["packed-drop"]))["packing"]["strategy"] == "ffd"
    assert packed["config_fingerprint"] != rows["config_fingerprint"]
    section = packed["packing"]
    assert section["packed"] and section["length"] == PACK and section["unit"] == "shard"
    assert 0.8 < section["efficiency"] <= 1 and section["sequences_per_pack"]["max"] > 2
    padding = section["runtime_padding"]
    assert section["efficiency"] > padding["batches_of_8_padded_to_longest"]["efficiency"] > \
        padding["pad_each_row_to_pack_length"]["efficiency"]
    stats = json.loads((jobs["packed"] / "audit" / "stats.json").read_text())
    assert stats["packing"] == section
    assert 'id="packing"' in (jobs["packed"] / "audit" / "report.html").read_text()
    assert packed["columns"][:7] == ["input_ids", "labels", "position_ids", "seq_lengths", "length",
                                     "num_loss_tokens", "num_sequences"]


def test_packed_folders_load_and_collate_to_fixed_shapes(jobs):
    import torch

    from transforms.runtime import Collator, ShardDataset

    dataset = ShardDataset(str(jobs["packed"]), verify=True)
    assert dataset.columns == ("input_ids", "labels", "seq_lengths")
    several = [i for i in range(len(dataset)) if len(dataset[i]["seq_lengths"]) > 1][:4]
    batch = Collator.from_manifest(str(jobs["packed"]))([dataset[i] for i in several])
    assert batch["input_ids"].shape == (4, PACK) and batch["attention_mask"].shape == (4, 1, PACK, PACK)
    first, second = dataset[several[0]]["seq_lengths"][:2]
    assert batch["position_ids"][0, :first + second].tolist() == [*range(first), *range(second)]
    mask = batch["attention_mask"][0, 0]
    assert mask[first, first - 1] == torch.finfo(torch.float32).min and mask[first, first] == 0  # own block
    assert mask[first - 1, 0] == 0 and mask[0, 1] == torch.finfo(torch.float32).min  # causal inside


def test_audit_command_agrees_with_the_packed_job(jobs, capsys):
    from pipeline.audit import main

    assert main([str(jobs["packed"]), "--check"]) == 0, capsys.readouterr().err


@pytest.mark.slow
def test_packed_shards_are_identical_across_engines_workers_and_batch_sizes(inputs, tmp_path):
    flags = [*inputs, "--pack-length", str(PACK), "--num-shards", "3"]
    assert default_command([*flags, "--output", str(tmp_path / "w1"), "--workers", "1"]) == 0
    reference = tree_digest(tmp_path / "w1")
    assert sum(1 for k in reference if k.startswith("data/")) == 3
    assert default_command([*flags, "--output", str(tmp_path / "w2"), "--workers", "2", "--batch-size", "7"]) == 0
    assert tree_digest(tmp_path / "w2") == reference
    assert run_job([*flags, "--output", str(tmp_path / "beam"), "--batch-size", "33",
                    "--runner=FnApiRunner", "--direct_running_mode=in_memory"]) == 0
    assert tree_digest(tmp_path / "beam") == reference


@pytest.mark.slow  # importing trl takes about 11 s
def test_packing_efficiency_is_at_least_trl_bfd_on_the_same_rows(inputs, jobs, tmp_path):
    from datasets import Dataset
    from trl import pack_dataset

    assert default_command([*inputs, "--output", str(tmp_path / "one"), "--pack-length", str(PACK),
                            "--num-shards", "1"]) == 0
    ours = sf.load_manifest(str(tmp_path / "one"))["packing"]
    unpacked = [ids for table in shard_tables(jobs["rows"]) for ids in table["input_ids"].to_pylist()]
    trl = pack_dataset(Dataset.from_dict({"input_ids": unpacked}), PACK, strategy="bfd",
                       map_kwargs={"batch_size": len(unpacked)})
    trl_tokens = sum(len(ids) for ids in trl["input_ids"])
    assert trl_tokens == ours["tokens"]  # nothing truncated by TRL: the rows already fit
    trl_efficiency = trl_tokens / (len(trl) * PACK)
    assert ours["efficiency"] >= round(trl_efficiency, 6)
    assert ours["packs"] <= len(trl)
    # per shard (the default here: 3 shards) loses at most the last partial pack of each shard
    three = sf.load_manifest(str(jobs["packed"]))["packing"]
    assert three["packs"] <= ours["packs"] + 2
    assert np.isclose(three["tokens"], ours["tokens"])
