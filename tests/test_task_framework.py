"""The task framework (``--task``, transforms/tasks/base.py and spec.py): flags and options checked at launch,
the config fingerprint and manifest ``task`` section only for tasks other than chat (the chat job is
unchanged: tests/golden), the tokenizer-free TaskSpec, and every task's output byte-identical on the local
engine (1 and 2 workers) and the Beam graph."""
from __future__ import annotations

import pickle

import pytest
from task_testing import BEAM, C4, WIKI_TXT, WMT16, XSUM, bert_folder, manifest, run, tree_digest


def parse(argv):
    from pipeline.launch.cli import parse_args

    return parse_args(["--input", "x.jsonl", "--output", "out", *argv])


def test_chat_is_the_default_task_and_its_options_are_unchanged():
    job = parse([])
    assert job.task == "chat" and job.task_options is None


@pytest.mark.parametrize("argv,message", [
    (["--group-texts", "8"], "--group-texts applies to --task text"),
    (["--task", "text", "--loss", "all"], "--loss: chat options"),
    (["--task", "text", "--chat-template", "t.jinja"], "--chat-template: chat options"),
    (["--task", "text", "--pad-to", "max_length", "--max-length", "8"], "--pad-to"),
    (["--task", "text", "--group-texts", "1"], "--group-texts must be an integer >= 2"),
    (["--task", "text", "--group-texts", "8", "--max-length", "8"], "do not combine it with --max-length"),
    (["--task", "text", "--truncation", "turns", "--max-length", "8"], "--truncation must be one of"),
    (["--task", "text", "--field-map", "messages=text"], "unknown field 'messages'"),
], ids=["other-task-flag", "chat-flag", "chat-template", "pad-to", "block-size", "group-and-max", "turns",
        "field-map"])
def test_configuration_errors_are_one_line_before_any_work(argv, message):
    from pipeline.launch.cli import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse(argv)


def test_task_options_come_from_the_task_flags_and_validate():
    from transforms.tasks.text import TextOptions

    job = parse(["--task", "text", "--group-texts", "64", "--group-remainder", "drop", "--no-eos",
                 "--field-map", "text=body"])
    assert job.task == "text"
    assert job.task_options == TextOptions(group_texts=64, group_remainder="drop", add_eos=False,
                                           field_map={"text": "body"})
    assert job.task_options.to_json()["field_map"] == {"text": "body"}


def test_the_flex_template_metadata_lists_the_task_flags():
    import json

    from chatshards_testing import REPO

    names = {p["name"] for p in json.loads((REPO / "deploy" / "metadata.json").read_text())["parameters"]}
    assert {"task", "group_texts", "group_remainder", "text_file_unit", "no_eos", "source_lang", "target_lang",
            "source_prefix", "max_source_length", "max_target_length", "decoder_start_token_id",
            "whole_word_mask"} <= names


def test_the_task_spec_is_small_picklable_and_chat_by_default():
    from transforms.formats import FormatOptions
    from transforms.tasks.spec import TaskSpec, as_task_spec
    from transforms.tasks.text import TextOptions

    chat = as_task_spec(FormatOptions(format="alpaca"))
    assert chat.is_chat and chat.format_options.format == "alpaca" and chat.options is None
    text = TaskSpec(name="text", options=TextOptions(group_texts=8))
    again = pickle.loads(pickle.dumps(text))
    assert again == text and again.task_class is text.task_class and len(pickle.dumps(text)) < 2000
    assert text.parse({"text": "hi"}) == "hi"
    assert text.content_key({"text": "a  b"}) == text.content_key({"text": "a b "})
    with pytest.raises(ValueError, match="unknown task"):
        TaskSpec(name="nope")
    with pytest.raises(ValueError, match="takes TextOptions"):
        TaskSpec(name="text", options=object())


def test_fingerprint_and_manifest_task_section_only_for_other_tasks(tmp_path):
    from transforms.config import JobConfig, TokenizeOptions

    chat = JobConfig(format={}, tokenize=TokenizeOptions(), tokenizer={})
    assert "task" not in chat.to_json()
    a = JobConfig(format={}, tokenize=TokenizeOptions(), tokenizer={}, task={"name": "text", "options": {"x": 1}})
    b = JobConfig(format={}, tokenize=TokenizeOptions(), tokenizer={}, task={"name": "text", "options": {"x": 2}})
    assert len({chat.fingerprint(), a.fingerprint(), b.fingerprint()}) == 3
    outs = []
    for block in ("32", "64"):
        out = tmp_path / block
        assert run(["--task", "text", "--input", str(C4), "--output", str(out), "--group-texts", block,
                    "--workers", "1", "--no-audit"]) == 0
        outs.append(manifest(out))
    assert outs[0]["config_fingerprint"] != outs[1]["config_fingerprint"]
    section = outs[0]["task"]
    assert section["name"] == "text" and section["options"]["group_texts"] == 32
    assert section["columns"] == ["input_ids"] and "documents" in section["shard_columns"]
    assert outs[0]["config"]["task"] == {"name": "text", "options": section["options"]}
    assert "template_check" not in outs[0]


# every task's job on real records, with options that exercise grouping, rejections and --dedup
ENGINE_CASES = {
    "text-grouped": ["--task", "text", "--input", str(C4), "--input", str(WIKI_TXT), "--group-texts", "64",
                     "--group-remainder", "drop", "--batch-size", "5", "--dedup", "--num-shards", "3"],
    "text-rows": ["--task", "text", "--input", str(C4), "--max-length", "100", "--truncation", "left"],
    "seq2seq": ["--task", "seq2seq", "--input", str(XSUM), "--input", str(WMT16), "--source-lang", "en",
                "--target-lang", "ro", "--field-map", "source=document,target=summary", "--max-source-length", "64",
                "--max-target-length", "16", "--source-prefix", "summarize: ", "--dedup", "--num-shards", "2"],
    "mlm-grouped": ["--task", "mlm", "--input", str(C4), "--input", str(WIKI_TXT), "--tokenizer", "BERT",
                    "--group-texts", "96", "--batch-size", "7", "--whole-word-mask", "--dedup", "--num-shards", "2"],
    "mlm-rows": ["--task", "mlm", "--input", str(C4), "--tokenizer", "BERT", "--max-length", "64"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(ENGINE_CASES))
def test_every_task_writes_the_same_bytes_on_both_engines_and_any_worker_count(tmp_path, case):
    args = [bert_folder() if arg == "BERT" else arg for arg in ENGINE_CASES[case]]
    assert run([*args, "--output", str(tmp_path / "beam"), *BEAM]) == 0
    reference = tree_digest(tmp_path / "beam")
    assert "manifest.json" in reference and any(k.startswith("data/") for k in reference)
    for workers in (1, 2):
        out = tmp_path / f"local-{workers}"
        assert run([*args, "--output", str(out), "--workers", str(workers)]) == 0
        assert tree_digest(out) == reference, workers


@pytest.mark.slow
@pytest.mark.parametrize("case", ["text", "seq2seq", "mlm"])
def test_the_audit_command_recomputes_the_jobs_stats_and_inspect_shows_rows(tmp_path, capsys, case):
    import json
    import shutil

    from pipeline.audit import main as audit_main
    from pipeline.inspect import main as inspect_main

    args = {"text": ["--task", "text", "--input", str(C4), "--group-texts", "128", "--group-remainder", "drop",
                     "--batch-size", "5"],
            "seq2seq": ["--task", "seq2seq", "--input", str(XSUM), "--field-map", "source=document,target=summary",
                        "--max-source-length", "64"],
            "mlm": ["--task", "mlm", "--input", str(WIKI_TXT), "--tokenizer", "BERT", "--max-length", "128",
                    "--whole-word-mask"]}[case]
    args = [bert_folder() if arg == "BERT" else arg for arg in args]
    out = tmp_path / "out"
    assert run([*args, "--output", str(out), "--workers", "1"]) == 0
    stats = json.loads((out / "audit" / "stats.json").read_text())
    assert stats["task"]["name"] == case and manifest(out)["audit"]["task"] == stats["task"]["summary"]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "audit")
    assert audit_main([str(copy)]) == 0 and audit_main([str(out), "--check"]) == 0
    recomputed = json.loads((copy / "audit" / "stats.json").read_text())
    assert {k: v for k, v in recomputed.items() if k != "computed_by"} == \
        {k: v for k, v in stats.items() if k != "computed_by"}
    capsys.readouterr()
    assert inspect_main([str(out), "--n", "1", "--color", "never", "--ids"]) == 0
    shown = capsys.readouterr().out
    assert f"· {case} ·" in shown and "input_ids: [" in shown
