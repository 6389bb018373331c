"""The audit branch of the job on real data, checked against counts computed independently
(inputs read with the reader, shards with pyarrow, rejected files with json), plus the two commands."""
from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from chatshards_testing import run_job, sample
from transforms import shard_format as sf
from transforms.reading import iter_raw_records_from_path

INPUTS = [
    "alpaca/llamafactory_alpaca_en_demo.json",
    "sharegpt/fastchat_dummy_conversation.json",
    "openai/openai_cookbook_toy_chat_fine_tuning.jsonl",
    "openai/llamafactory_v1_sft_demo.jsonl",
    "tool_calling/llamafactory_glaive_toolcall_en_demo.json",
    "tool_calling/openai_cookbook_drone_training_first3.jsonl",
    "edge_cases/axolotl_conversation.missingturns.json",
    "edge_cases/openai_cookbook_01-testing-example_multiline.jsonl",
    "edge_cases/qwen3vl_single_images_trailing_comma.json",
    "edge_cases/xtuner_openai_sft_bare_lists.jsonl",
]
MAX_LENGTH = 128
DEFAULT_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
IM_END = 151645


def input_args(relatives):
    args = []
    for relative in relatives:
        args += ["--input", str(sample(relative))]
    return args


def read_tables(out: Path) -> pa.Table:
    manifest = json.loads((out / "manifest.json").read_text())
    tables = [pa.ipc.open_stream(pa.memory_map(str(out / e["path"]))).read_all() for e in manifest["shards"]]
    return pa.concat_tables(tables)


def read_rejected(out: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((out / "rejected").glob("*.jsonl")) for line in f.read_text().splitlines()]


def nearest_rank(values, p):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit_job") / "out"
    assert run_job([*input_args(INPUTS), "--output", str(out), "--max-length", str(MAX_LENGTH),
                    "--num-shards", "2"]) == 0
    stats = json.loads((out / "audit" / "stats.json").read_text())
    return out, stats, read_tables(out), read_rejected(out)


def test_counts_by_file_format_and_reason_match_independent_counts(job):
    out, stats, table, rejected = job
    manifest = json.loads((out / "manifest.json").read_text())
    read_by_source = {str(sample(r)): sum(1 for _ in iter_raw_records_from_path(str(sample(r)))) for r in INPUTS}
    rows_by_source = Counter(table["source"].to_pylist())
    rejected_by_source = Counter(r["source"] for r in rejected)
    assert set(stats["by_source"]) == set(read_by_source)
    for source, n in read_by_source.items():
        entry = stats["by_source"][source]
        assert entry["read"] == n, source
        assert entry["written"] == rows_by_source[source] and entry["rejected"] == rejected_by_source[source]
        assert entry["rejected_by_reason"] == dict(Counter(r["reason"] for r in rejected if r["source"] == source))
    assert stats["counts"]["read"] == sum(read_by_source.values()) == manifest["counts"]["read"]
    assert stats["counts"]["written"] == table.num_rows and stats["counts"]["rejected"] == len(rejected)
    assert stats["rejections"]["by_reason"] == dict(Counter(r["reason"] for r in rejected)) \
        == manifest["rejected_by_reason"]
    # the malformed files are accounted for
    by_file = {Path(s).name: e for s, e in stats["by_source"].items()}
    assert by_file["axolotl_conversation.missingturns.json"]["rejected_by_reason"] == {"empty_turn": 1}
    assert by_file["qwen3vl_single_images_trailing_comma.json"]["rejected_by_reason"] == {"invalid_content": 3}
    xtuner = by_file["xtuner_openai_sft_bare_lists.jsonl"]
    assert xtuner["formats"] == {"openai": xtuner["read"] - xtuner["rejected"]} and xtuner["read"] >= 30
    written_formats = Counter(table["format"].to_pylist())
    assert {f: v["written"] for f, v in stats["by_format"].items() if v["written"]} == dict(written_formats)
    assert sum(v["rejected"] for v in stats["by_format"].values()) == len(rejected)
    assert stats["by_format"]["alpaca"]["written"] == written_formats["alpaca"] >= 25
    assert stats["counts"]["turns"] == sum(table["num_turns"].to_pylist())
    assert stats["counts"]["trained_turns"] == sum(table["num_trained_turns"].to_pylist())


def test_distributions_match_numpy_over_the_shards(job):
    _, stats, table, _ = job
    lengths = table["length"].to_pylist()
    trained = table["num_loss_tokens"].to_pylist()
    columns = {
        "total_tokens": lengths,
        "prompt_tokens": table["prompt_tokens"].to_pylist(),
        "trained_tokens": trained,
        "turns": table["num_turns"].to_pylist(),
        "trained_turns": table["num_trained_turns"].to_pylist(),
        "images": [0] * table.num_rows,
        "image_tokens": [0] * table.num_rows,
    }
    for name, values in columns.items():
        hist = stats["distributions"][name]
        assert (hist["count"], hist["sum"], hist["min"], hist["max"]) == \
            (len(values), sum(values), min(values), max(values)), name
        assert hist["mean"] == pytest.approx(sum(values) / len(values), abs=1e-6)
        assert sum(b[2] for b in hist["buckets"]) == len(values)
        for p in (50, 90, 95, 99):
            true = nearest_rank(values, p)
            assert true <= hist[f"p{p}"] <= true + true / 32, (name, p)
            if true < 64:
                assert hist[f"p{p}"] == true
    fractions = [t / n for t, n in zip(trained, lengths)]
    frac = stats["distributions"]["trained_fraction"]
    assert frac["min"] == pytest.approx(min(fractions), abs=1e-6)
    assert frac["max"] == pytest.approx(max(fractions), abs=1e-6)
    assert frac["mean"] == pytest.approx(np.mean(fractions), abs=1e-6)
    for p in (50, 90, 99):
        true = nearest_rank(fractions, p)
        assert true - 1e-6 <= frac[f"p{p}"] <= true + 0.01 + 1e-6
    assert stats["totals"]["tokens"] == sum(lengths) and stats["totals"]["trained_tokens"] == sum(trained)


def test_truncation_duplicates_and_template_checks(job, qwen_tokenizer):
    _, stats, table, rejected = job
    trunc = stats["truncation"]
    truncated = [t for t, flag in zip(table["truncated_tokens"].to_pylist(), table["truncated"].to_pylist()) if flag]
    assert trunc["rows_truncated"] == len(truncated) >= 30
    assert trunc["tokens_removed"] == sum(truncated)
    assert trunc["tokens_removed_per_truncated_row"]["max"] == max(truncated)
    lost = [r for r in rejected if r["reason"] == "no_loss_tokens" and r["detail"].startswith("truncation")]
    assert trunc["rejected_no_loss_after_truncation"] == len(lost) > 0
    assert max(table["length"].to_pylist()) == MAX_LENGTH

    hashes = Counter(table["conversation_hash"].to_pylist())
    dup = stats["duplicates"]
    assert dup["rows_in_duplicate_groups"] == sum(n for n in hashes.values() if n > 1)
    assert dup["duplicate_groups"] == sum(1 for n in hashes.values() if n > 1) > 0
    assert dup["redundant_rows"] == table.num_rows - len(hashes)
    assert dup["largest_groups"][0]["rows"] == max(hashes.values())
    assert dup["dedup"] is False and dup["rejected_duplicates"] == 0

    ids = table["input_ids"].to_pylist()
    labels = table["labels"].to_pylist()
    tmpl = stats["template"]
    starts_default = sum(qwen_tokenizer.decode(row[:40], skip_special_tokens=False).startswith(DEFAULT_SYSTEM)
                         for row in ids)
    assert tmpl["rows_with_default_system_prompt"] == starts_default > 0
    last_is_stop = sum([label for label in lab if label != -100][-1] == IM_END for lab in labels)
    assert tmpl["rows_last_trained_token_is_stop"] == last_is_stop
    assert tmpl["rows_last_trained_token_not_stop"] == table.num_rows - last_is_stop
    assert tmpl["rows_double_bos"] == 0 and tmpl["rows_starting_with_bos"] == 0  # Qwen has no BOS
    assert tmpl["injects_default_system_prompt"] is True and tmpl["stop_tokens_trained"] == ["<|im_end|>"]


def test_manifest_audit_section_summarises_stats(job):
    out, stats, _, _ = job
    manifest = json.loads((out / "manifest.json").read_text())
    audit = manifest["audit"]
    assert audit["stats_path"] == "audit/stats.json" and (out / audit["report_path"]).is_file()
    for key in ("read", "written", "rejected", "turns", "trained_turns"):
        assert audit["counts"][key] == stats["counts"][key]
    assert audit["percentiles"]["total_tokens"]["p90"] == stats["distributions"]["total_tokens"]["p90"]
    assert audit["template_probe"] == stats["template"]["probe"]
    assert stats["computed_by"] == "job"


def test_rejection_examples_and_samples_are_chosen_deterministically(job):
    out, stats, table, rejected = job
    for reason, example in stats["rejections"]["examples"].items():
        first = min((r for r in rejected if r["reason"] == reason),
                    key=lambda r: sf.row_sort_key(r["source"], r["index"]))
        assert (example["source"], example["index"], example["detail"]) == (
            first["source"], first["index"], first["detail"][:500])
    assert set(stats["rejections"]["examples"]) == set(stats["rejections"]["by_reason"])
    keys = sorted(sf.row_sort_key(s, i) for s, i in zip(table["source"].to_pylist(), table["index"].to_pylist()))
    sample_keys = {sf.row_sort_key(s["source"], s["index"]) for s in stats["samples"]}
    assert keys[0] in sample_keys and 1 <= len(stats["samples"]) <= 5
    page = (out / "audit" / "report.html").read_text()
    for reason in stats["rejections"]["by_reason"]:
        assert f'<span class="reason">{reason}</span>' in page


def test_audit_command_recomputes_the_same_stats(job, tmp_path, capsys):
    from pipeline.audit import main as audit_main

    out, stats, _, _ = job
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "audit")
    assert audit_main([str(copy)]) == 0
    recomputed = json.loads((copy / "audit" / "stats.json").read_text())
    assert recomputed["computed_by"] == "pipeline.audit"
    assert {k: v for k, v in recomputed.items() if k != "computed_by"} == \
        {k: v for k, v in stats.items() if k != "computed_by"}
    assert (copy / "audit" / "report.html").read_text().count('class="sample"') == len(stats["samples"])
    printed = capsys.readouterr().out
    assert f"records read {stats['counts']['read']:,}" in printed and "wrote" in printed
    assert audit_main([str(out), "--check"]) == 0
    # a rejected line lost after the run: --check notices (the manifest's counts no longer match)
    rejected_file = sorted((copy / "rejected").glob("*.jsonl"))[0]
    lines = rejected_file.read_text().splitlines(keepends=True)
    rejected_file.write_text("".join(lines[1:]))
    assert audit_main([str(copy), "--check"]) == 1
    assert "differs" in capsys.readouterr().err


def test_audit_command_on_a_run_made_without_the_audit(tmp_path):
    """Shards made without the stats branch (--no-audit): the command gives the numbers the job would have
    given."""
    from pipeline.audit import main as audit_main

    inputs = input_args(["openai/openai_cookbook_toy_chat_fine_tuning.jsonl",
                         "edge_cases/xtuner_openai_sft_bare_lists.jsonl",
                         "edge_cases/axolotl_conversation.missingturns.json"])
    assert run_job([*inputs, "--output", str(tmp_path / "plain"), "--max-length", "96", "--no-audit"]) == 0
    assert not (tmp_path / "plain" / "audit").exists()
    assert "audit" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert run_job([*inputs, "--output", str(tmp_path / "audited"), "--max-length", "96"]) == 0
    assert audit_main([str(tmp_path / "plain"), "--quiet"]) == 0
    a = json.loads((tmp_path / "plain" / "audit" / "stats.json").read_text())
    b = json.loads((tmp_path / "audited" / "audit" / "stats.json").read_text())
    assert a.pop("computed_by") == "pipeline.audit" and b.pop("computed_by") == "job"
    assert a == b


def test_dedup_counts_duplicate_rejections(tmp_path):
    inputs = input_args(["alpaca/llamafactory_alpaca_en_demo.json", "openai/llamafactory_v1_sft_demo.jsonl",
                         "alpaca/llamafactory_identity.json"])
    assert run_job([*inputs, "--output", str(tmp_path / "plain")]) == 0
    assert run_job([*inputs, "--output", str(tmp_path / "dedup"), "--dedup"]) == 0
    plain = json.loads((tmp_path / "plain" / "audit" / "stats.json").read_text())["duplicates"]
    dedup = json.loads((tmp_path / "dedup" / "audit" / "stats.json").read_text())["duplicates"]
    hashes = Counter(read_tables(tmp_path / "plain")["conversation_hash"].to_pylist())
    redundant = sum(hashes.values()) - len(hashes)
    assert plain["redundant_rows"] == redundant >= 15  # 14 in alpaca_en_demo, 1 in v1_sft_demo, more across files
    rejected_dups = sum(r["reason"] == "duplicate" for r in read_rejected(tmp_path / "dedup"))
    assert dedup["dedup"] is True and dedup["rejected_duplicates"] == rejected_dups == redundant
    assert dedup["rows_in_duplicate_groups"] == 0


@pytest.mark.slow
def test_stats_identical_across_runner_modes_and_shard_counts(tmp_path):
    args = input_args(["sharegpt/fastchat_dummy_conversation.json",
                       "edge_cases/openai_cookbook_01-testing-example_multiline.jsonl",
                       "edge_cases/axolotl_conversation.missingturns.json",
                       "openai/openai_cookbook_toy_chat_fine_tuning.jsonl"])
    outputs = []
    for mode, shards in (("in_memory", "1"), ("multi_processing", "3")):
        out = tmp_path / mode
        extra = ["--runner=FnApiRunner", f"--direct_running_mode={mode}", "--num-shards", shards, "--max-length", "200"]
        if mode == "multi_processing":
            extra.append("--direct_num_workers=2")
        assert run_job([*args, "--output", str(out), *extra]) == 0
        outputs.append(out)
    for name in ("stats.json", "report.html"):
        assert (outputs[0] / "audit" / name).read_bytes() == (outputs[1] / "audit" / name).read_bytes(), name


# ---------------------------------------------------------------------------------------------------
# python -m pipeline.inspect


def test_inspect_marks_trained_tokens_with_brackets(job, capsys, qwen_tokenizer):
    from pipeline.inspect import main as inspect_main

    out, _, table, _ = job
    source = str(sample("openai/openai_cookbook_toy_chat_fine_tuning.jsonl"))
    assert inspect_main([str(out), "--source", "toy_chat", "--index", "0", "--color", "never"]) == 0
    printed = capsys.readouterr().out
    assert f"{source} record 0" in printed and "\x1b[" not in printed
    rows = [r for r in table.to_pylist() if r["source"] == source and r["index"] == 0]
    ids, labels = np.array(rows[0]["input_ids"]), np.array(rows[0]["labels"])
    trained_text = qwen_tokenizer.decode(ids[labels != -100].tolist(), skip_special_tokens=False)
    assert "[" + trained_text + "]" in printed  # a single assistant turn: one bracketed run
    prompt_text = qwen_tokenizer.decode(ids[labels == -100].tolist(), skip_special_tokens=False)
    assert prompt_text in printed.replace("[" + trained_text + "]", "")


def test_inspect_color_shards_and_n(job, capsys):
    from pipeline.inspect import main as inspect_main
    from pipeline.inspect import use_color

    out, _, _, _ = job
    assert inspect_main([str(out), "--n", "3", "--color", "always", "--shard", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("── [") == 3 and "data/shard-00001-of-00002.arrow" in printed
    assert "data/shard-00000-of-00002.arrow" not in printed and "\x1b[1;32m" in printed

    class Tty:
        def isatty(self):
            return True

    assert use_color("auto", Tty()) is (not os.environ.get("NO_COLOR"))
    assert use_color("auto", object()) is False and use_color("always", object()) is True
    assert inspect_main([str(out), "--shard", "7"]) == 2
    assert inspect_main([str(out / "nothing")]) == 2


def test_image_counts_from_vision_rows(tmp_path, capsys):
    """Vision rows carry num_images / num_image_tokens: the distributions use them."""
    try:
        from test_vision_fixtures import qwen_dir
    except ImportError:
        pytest.skip("tests/test_vision_fixtures.py (the vision extension) is not available")
    from pipeline.audit import main as audit_main
    from pipeline.inspect import main as inspect_main

    folder = sample("vlm/llamafactory/data")
    out = tmp_path / "out"
    assert run_job(["--processor", qwen_dir(), "--input", str(folder / "v1_multimodal_demo.jsonl"),
                    "--image-root", str(folder.parent), "--output", str(out)]) == 0
    stats = json.loads((out / "audit" / "stats.json").read_text())
    table = read_tables(out)
    images, image_tokens = table["num_images"].to_pylist(), table["num_image_tokens"].to_pylist()
    assert stats["distributions"]["images"]["sum"] == sum(images) == stats["totals"]["images"] > 0
    assert stats["distributions"]["images"]["max"] == max(images)
    assert stats["distributions"]["image_tokens"]["sum"] == sum(image_tokens) > 0
    pad = 151655  # <|image_pad|>
    assert sum(image_tokens) == sum(sum(1 for i in row if i == pad) for row in table["input_ids"].to_pylist())
    assert audit_main([str(out), "--check", "--quiet"]) == 0
    assert inspect_main([str(out), "--n", "1", "--color", "never"]) == 0
    printed = capsys.readouterr().out
    assert "<|vision_start|><|image_pad|>×" in printed  # placeholders collapsed with a count
