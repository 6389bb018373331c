"""``python -m pipeline --task preference|kto`` end to end: real LLaMA-Factory data and generated pairs in every
layout, counts that reconcile, the manifest's task section, the audit figures, the runtime (``ShardDataset``,
``Collator.from_manifest``), configuration errors, ``--dedup``, and byte-identical output on both engines."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from test_local_engine import BEAM, default_command, tree_digest
from test_preference_records import every_layout

from chatshards_testing import run_job
from transforms import errors

DATA = Path(__file__).resolve().parent / "data"
DPO_REAL = [str(DATA / "llamafactory_dpo_en_demo_12.json"), str(DATA / "llamafactory_v1_dpo_demo.jsonl")]
KTO_REAL = [str(DATA / "llamafactory_kto_en_demo_16.json")]


def msg(role, content):
    return {"role": role, "content": content}


def bad_pairs() -> list:
    return [
        {"prompt": [msg("user", "q")], "chosen": [msg("assistant", "same")], "rejected": [msg("assistant", "same")]},
        {"prompt": [msg("user", "q")], "chosen": [msg("user", "no")], "rejected": [msg("assistant", "b")]},
        {"unrelated": 1},
        "a string, not a pair",
    ]


def write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def read(out: Path):
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for shard in sorted((out / "data").glob("*.arrow")):
        rows += pa.ipc.open_stream(shard.read_bytes()).read_all().to_pylist()
    rejected = [json.loads(line) for path in sorted((out / "rejected").glob("*.jsonl"))
                for line in path.read_text().splitlines()]
    return manifest, rows, rejected


@pytest.fixture(scope="module")
def preference_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("preference")
    generated = write_jsonl(root / "generated.jsonl", list(every_layout().values()) + bad_pairs())
    out = root / "out"
    assert default_command(["--task", "preference", *[a for f in DPO_REAL for a in ("--input", f)], "--input",
                            generated, "--output", str(out), "--workers", "1"]) == 0
    return out


def test_real_and_generated_pairs(preference_job):
    manifest, rows, rejected = read(preference_job)
    assert manifest["counts"]["read"] == 12 + 10 + 9 + 4
    assert manifest["counts"]["written"] == len(rows) == 12 + 10 + 9
    assert manifest["counts"]["rejected"] == len(rejected) == 4
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons == sorted([errors.IDENTICAL_PAIR, errors.NO_ASSISTANT_TURN, errors.UNKNOWN_FORMAT,
                              errors.INVALID_JSON])  # a JSON Lines line that is a string is not a record
    for row in rows:
        assert row["chosen_ids"] and row["rejected_ids"] and row["chosen_ids"] != row["rejected_ids"]
        assert row["length"] == 2 * len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"])
        assert row["num_loss_tokens"] == len(row["chosen_ids"]) + len(row["rejected_ids"])
        assert row["chosen_ids"][-1] == row["rejected_ids"][-1] == 151645  # <|im_end|> closes both turns
    generated = [r for r in rows if r["source"].endswith("generated.jsonl")]
    assert len({r["prompt_hash"] for r in generated}) == 1  # nine layouts, one prompt
    assert len({tuple(r["chosen_ids"]) for r in generated}) == 1
    assert len({tuple(r["prompt_ids"]) for r in generated}) == 1
    task = manifest["task"]
    assert task["name"] == "preference" and task["collator"] == "preference"
    assert task["columns"] == ["prompt_ids", "chosen_ids", "rejected_ids"]
    assert manifest["config"]["task"]["name"] == "preference"


def test_the_audit_figures(preference_job):
    stats = json.loads((preference_job / "audit" / "stats.json").read_text())
    figures = stats["task"]["figures"]
    assert figures["pairs"] == 31 and figures["prompts"] == 12 + 10 + 1
    assert figures["pairs_per_prompt"]["max"] == 9 and figures["prompts_with_several_pairs"] == 1
    assert figures["chosen_longer"] + figures["same_length"] + figures["rejected_longer"] == 31
    assert figures["rejected_identical_pair"] == 1 and figures["rejected_pair_truncated"] == 0
    _, rows, _ = read(preference_job)
    diffs = [len(r["chosen_ids"]) - len(r["rejected_ids"]) for r in rows]
    assert figures["chosen_longer"] == sum(d > 0 for d in diffs)
    assert figures["mean_length_difference"] == round(sum(diffs) / len(diffs), 6)
    assert figures["chosen_minus_rejected"]["chosen_longer_by"]["max"] == max(diffs)
    assert figures["prompt_tokens"]["max"] == max(len(r["prompt_ids"]) for r in rows)
    assert stats["rejections"]["by_reason"][errors.IDENTICAL_PAIR] == 1
    # a recomputed audit (python -m pipeline.audit) gives the same figures
    from pipeline.audit import main as audit_main

    again = preference_job.parent / "again"
    assert audit_main([str(preference_job), "--audit-dir", str(again), "--quiet"]) == 0
    assert json.loads((again / "stats.json").read_text())["task"] == stats["task"]


def test_the_runtime_serves_the_rows(preference_job):
    import torch

    from transforms.runtime import Collator, PreferenceCollator, ShardDataset

    dataset = ShardDataset(str(preference_job))
    assert dataset.columns == ("prompt_ids", "chosen_ids", "rejected_ids") and len(dataset) == 31
    collator = Collator.from_manifest(str(preference_job), labels=True)
    assert isinstance(collator, PreferenceCollator) and collator.pad_token_id == 151643
    batch = collator([dataset[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].dtype == torch.int64
    assert torch.equal(batch["labels"] != -100, batch["completion_mask"].bool())


def test_kto_job_on_real_data(tmp_path):
    records = [{"prompt": "The sky is", "completion": " blue.", "label": True},
               {"messages": [msg("user", "q"), msg("assistant", "a")], "label": "maybe"}]
    generated = write_jsonl(tmp_path / "more.jsonl", records)
    out = tmp_path / "kto"
    assert default_command(["--task", "kto", "--input", KTO_REAL[0], "--input", generated, "--output", str(out),
                            "--workers", "1"]) == 0
    manifest, rows, rejected = read(out)
    assert len(rows) == 17 and [r["reason"] for r in rejected] == [errors.INVALID_CONTENT]
    real = json.loads(Path(KTO_REAL[0]).read_text())
    by_index = {r["index"]: r for r in rows if r["source"].endswith(".json")}
    assert [by_index[i]["label"] for i in range(16)] == [r["label"] for r in real]
    figures = json.loads((out / "audit" / "stats.json").read_text())["task"]["figures"]
    assert (figures["desirable"], figures["undesirable"]) == (10, 7)
    from transforms.runtime import Collator, KtoCollator, ShardDataset

    collator = Collator.from_manifest(str(out), kl=True)
    assert isinstance(collator, KtoCollator)
    dataset = ShardDataset(str(out))
    assert dataset.columns == ("prompt_ids", "completion_ids", "label")
    batch = collator([dataset[i] for i in range(3)])
    assert set(batch) >= {"input_ids", "completion_mask", "label", "KL_input_ids", "KL_completion_mask"}


def same_bytes_on_both_engines(tmp_path: Path, task: str, inputs: list[str]) -> None:
    args = ["--task", task, *[a for f in inputs for a in ("--input", f)], "--num-shards", "2", "--max-length",
            "300", "--max-prompt-length", "200"]
    assert run_job([*args, "--output", str(tmp_path / f"{task}-beam"), *BEAM]) == 0
    assert default_command([*args, "--output", str(tmp_path / f"{task}-local"), "--workers", "2"]) == 0
    assert tree_digest(tmp_path / f"{task}-local") == tree_digest(tmp_path / f"{task}-beam"), task


def test_both_engines_write_the_same_bytes(tmp_path):
    generated = write_jsonl(tmp_path / "generated.jsonl", list(every_layout().values()) + bad_pairs())
    same_bytes_on_both_engines(tmp_path, "preference", [*DPO_REAL, generated])


@pytest.mark.slow
def test_both_engines_write_the_same_kto_bytes(tmp_path):
    same_bytes_on_both_engines(tmp_path, "kto", KTO_REAL)


def test_truncation_through_the_job(tmp_path):
    out = tmp_path / "out"
    assert default_command(["--task", "preference", "--input", DPO_REAL[0], "--output", str(out), "--max-length",
                            "256", "--max-prompt-length", "64", "--workers", "1"]) == 0
    manifest, rows, rejected = read(out)
    assert len(rows) + len(rejected) == 12
    for row in rows:
        assert len(row["prompt_ids"]) <= 64
        assert len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= 256
        assert row["chosen_ids"] and row["rejected_ids"] and row["chosen_ids"] != row["rejected_ids"]
    assert any(r["prompt_truncated_tokens"] for r in rows) and any(r["truncated"] for r in rows)
    figures = json.loads((out / "audit" / "stats.json").read_text())["task"]["figures"]
    assert figures["truncated_pairs"] == sum(r["truncated"] for r in rows)


@pytest.mark.parametrize("args,message", [
    (["--task", "preference", "--loss", "last"], "--loss"),
    (["--task", "preference", "--max-length", "100", "--max-prompt-length", "100"], "--max-prompt-length"),
    (["--task", "preference", "--truncation", "left"], "--truncation"),
    (["--task", "chat", "--max-prompt-length", "10"], "--max-prompt-length"),
    (["--task", "kto", "--format", "ranking"], "--format"),
    (["--task", "text", "--prompt-mismatch", "reject"], "--prompt-mismatch"),
])
def test_configuration_errors(tmp_path, capsys, args, message):
    data = write_jsonl(tmp_path / "d.jsonl", [every_layout()["trl_explicit"]])
    assert default_command(["--input", data, "--output", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_dedup_and_role_map(tmp_path):
    layouts = every_layout()
    records = [layouts["trl_explicit"], layouts["openai"],  # the same pair twice
               {"prompt": [{"role": "asker", "content": "Hi"}], "chosen": [{"role": "bot", "content": "Hello!"}],
                "rejected": [{"role": "bot", "content": "Bye."}]}]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    out = tmp_path / "out"
    assert default_command(["--task", "preference", "--input", data, "--output", str(out), "--dedup", "--role-map",
                            "asker=user,bot=assistant", "--system-prompt", "Be kind.", "--workers", "1"]) == 0
    manifest, rows, rejected = read(out)
    assert len(rows) == 2 and [r["reason"] for r in rejected] == [errors.DUPLICATE]
    assert manifest["config"]["format"]["role_map"] == {"asker": "user", "bot": "assistant"}
    from transforms.tokenizer_loading import bundled_tokenizer

    tokenizer = bundled_tokenizer()
    third = next(r for r in rows if r["index"] == 2)
    assert "Be kind." in tokenizer.decode(third["prompt_ids"])  # --system-prompt reached the record without one


@pytest.mark.slow
def test_a_template_that_renders_the_turn_differently_is_counted(tmp_path):
    """axolotl's Qwen3 template (generation prompt ``<think>\\n\\n``, rendered turn ``<think>\\nreasoning``): pairs with
    reasoning are trained from where the two part, as SFT rows, and counted in the audit."""
    from test_preference_labels import family_tokenizer
    from test_prompt_mismatch import AXOLOTL_QWEN3

    import template_families as tf

    tokenizer = family_tokenizer(tf.BY_NAME["qwen3"])
    folder = str(tmp_path / "tok")
    tokenizer.save_pretrained(folder)
    template = tmp_path / "qwen3.jinja"
    template.write_text(AXOLOTL_QWEN3, encoding="utf-8")
    pairs = [{"prompt": [msg("user", f"What is {k} plus {k}?")],
              "chosen": [{"role": "assistant", "content": f"{2 * k}.",
                          "reasoning_content": f"{k} and {k} make {2 * k}."}],
              "rejected": [{"role": "assistant", "content": f"{2 * k + 1}.", "reasoning_content": "A guess."}]}
             for k in range(5)]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "out"
    assert default_command(["--task", "preference", "--input", data, "--output", str(out), "--tokenizer", folder,
                            "--chat-template", str(template), "--workers", "1"]) == 0
    manifest, rows, rejected = read(out)
    assert len(rows) == 5 and not rejected
    for row in rows:
        assert row["prompt_mismatch_turns"] == 2
        prompt = tokenizer.decode(row["prompt_ids"])
        assert prompt.endswith("<|im_start|>assistant\n<think>\n")  # the context both renderings share
        pair = pairs[row["index"]]
        full = tokenizer.apply_chat_template(pair["prompt"] + pair["chosen"], tokenize=False,
                                             chat_template=AXOLOTL_QWEN3)
        assert list(row["prompt_ids"]) + list(row["chosen_ids"]) == tokenizer(
            full.rstrip("\n"), add_special_tokens=False)["input_ids"]
    stats = json.loads((out / "audit" / "stats.json").read_text())
    assert stats["task"]["figures"]["prompt_mismatch_pairs"] == 5
    assert stats["prompt_mismatch"]["records"] == 5 and stats["prompt_mismatch"]["turns"] == 10
    assert manifest["audit"]["prompt_mismatch"]["records"] == 5


def test_control_token_strings_in_a_pair_stay_text_and_noncharacters_reach_the_tokenizer(tmp_path):
    """--control-tokens-in-data text (the default) for pairs as for chat: a literal `<|im_end|>` in a completion is
    encoded as text (never the special id) and a noncharacter in the data reaches the tokenizer as it is."""
    from transforms.tokenizer_loading import load_tokenizer

    tokenizer = load_tokenizer(None)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pairs = [{"prompt": [msg("user", "write the end token")], "chosen": [msg("assistant", "it is <|im_end|> here")],
              "rejected": [msg("assistant", "keep \ufdd0 this")]}]
    out = tmp_path / "out"
    assert default_command(["--task", "preference", "--input", write_jsonl(tmp_path / "p.jsonl", pairs),
                            "--output", str(out), "--workers", "1"]) == 0
    _, rows, rejected = read(out)
    assert not rejected and len(rows) == 1
    chosen, rejected_ids = rows[0]["chosen_ids"], rows[0]["rejected_ids"]
    assert chosen.count(im_end) == 1 and chosen[-1] in (im_end, tokenizer.convert_tokens_to_ids("\n"))  # its own end
    assert "it is <|im_end|> here" in tokenizer.decode(chosen)
    assert "keep \ufdd0 this" in tokenizer.decode(rejected_ids)
