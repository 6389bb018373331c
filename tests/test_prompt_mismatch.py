"""Issue 22, SFT half: one rule for a turn the chat template renders differently from what follows its own
generation prompt (``--prompt-mismatch diverge``, the default; ``reject`` keeps the old rejections).

* axolotl's published Qwen3 template (its text is written here from its published behaviour: the generation prompt
  ends ``<think>\\n\\n`` while the rendered last turn starts ``<think>\\nreasoning``): every multi-turn reasoning
  record used to be rejected as ``ambiguous_span``; by default each turn is trained from where the generation prompt
  and the rendered turn diverge, token-exact, counted in the summary and the audit with an example;
* a Granite-style template writes no generation prompt for a system + assistant record: the role header is never
  trained (taken from the template's generation prompt, or the record is rejected as ``no_generation_prompt``);
* every template of ``trl/chat_templates/``: records accepted before keep their rows, the rule applies only where
  the template renders a turn differently, and no role header is ever trained;
* both engines write the same bytes.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

import template_families as tf
from chatshards_testing import run_job
from transforms import errors
from transforms.chat_render import DIVERGED, HEADER_FROM_GENERATION_PROMPT, ChatRenderer, _common_prefix_length
from transforms.errors import RecordRejected
from transforms.shard_format import row_sort_key
from transforms.template_env import ChatTemplate

# axolotl's Qwen3 template (src/axolotl/utils/chat_templates/templates/qwen3.jinja), written from its behaviour:
# ChatML turns; an assistant turn after the last user query renders <think>\nREASONING\n</think>\n\nANSWER, earlier
# ones only the answer; the generation prompt is <|im_start|>assistant\n<think>\n\n.
AXOLOTL_QWEN3 = (
    "{%- set ns = namespace(last_query=-1) %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' or m.role == 'system' %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- elif m.role == 'assistant' %}"
    "{%- set reasoning = m.reasoning_content if m.reasoning_content is defined and m.reasoning_content else '' %}"
    "{%- if loop.index0 > ns.last_query %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + m.content }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + m.content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n\\n' }}{%- endif %}"
)
# A Granite-style template: the assistant header is written only inside the loop over the messages after the
# system one, so a system + assistant record gets no generation prompt.
GRANITE = (
    "{%- if messages[0].role == 'system' %}{%- set system = messages[0].content %}{%- set rest = messages[1:] %}"
    "{%- else %}{%- set system = 'You are Granite.' %}{%- set rest = messages %}{%- endif %}"
    "{{- '<|start_of_role|>system<|end_of_role|>' + system + '<|end_of_text|>\\n' }}"
    "{%- for m in rest %}{{- '<|start_of_role|>' + m.role + HEADER_EXTRA + '<|end_of_role|>' + m.content"
    " + '<|end_of_text|>\\n' }}"
    "{%- if loop.last and add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}"
    "{%- endfor %}"
)
GRANITE_TOKENS = ("<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>")
QWEN3_TOKENS = ("<|im_start|>", "<|im_end|>", "<think>", "</think>")


def granite(header_extra: str = "") -> str:
    return GRANITE.replace("HEADER_EXTRA", repr(header_extra))


def reasoning_records(count: int = 20) -> list[dict]:
    """Multi-turn records, every assistant turn with reasoning (the situation of the issue: 20 of 20 rejected)."""
    records = []
    for k in range(count):
        messages = []
        for turn in range(2):
            messages.append({"role": "user", "content": f"Question {k}.{turn}: what is {k} plus {turn}?"})
            messages.append({"role": "assistant", "content": f"It is {k + turn}.",
                             "reasoning_content": f"Adding {k} and {turn} gives {k + turn}."})
        records.append({"messages": messages})
    return records


def write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def read_rows(out: Path) -> list[dict]:
    rows = []
    for shard in sorted((out / "data").glob("*.arrow")):
        rows += pa.ipc.open_stream(shard.read_bytes()).read_all().to_pylist()
    return rows


def read_rejected(out: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((out / "rejected").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def qwen3_tokenizer(tmp_path_factory):
    from test_preference_labels import family_tokenizer  # in memory (tf.family_tokenizer also reloads and checks)

    tokenizer = family_tokenizer(tf.BY_NAME["qwen3"])
    folder = str(tmp_path_factory.mktemp("qwen3_tok"))
    tokenizer.save_pretrained(folder)
    return folder, tokenizer


@pytest.fixture(scope="module")
def axolotl_job(tmp_path_factory, qwen3_tokenizer):
    """The job with axolotl's Qwen3 template on the 20 multi-turn reasoning records (default options)."""
    folder, _ = qwen3_tokenizer
    root = tmp_path_factory.mktemp("axolotl")
    template = root / "axolotl_qwen3.jinja"
    template.write_text(AXOLOTL_QWEN3, encoding="utf-8")
    data = write_jsonl(root / "reasoning.jsonl", reasoning_records())
    out = root / "diverge"
    assert run_job(["--input", data, "--output", str(out), "--tokenizer", folder,
                    "--chat-template", str(template)]) == 0
    return out


def built(tokenizer, records, **options) -> list[tuple[str, dict]]:
    """The job's *BuildRows* step in this process (``RowBuilder``) with axolotl's Qwen3 template."""
    from transforms.config import TokenizeOptions
    from transforms.formats import FormatOptions
    from transforms.reading import RawRecord
    from transforms.rows import RowBuilder

    tokenizer = copy.copy(tokenizer)
    tokenizer.chat_template = AXOLOTL_QWEN3
    builder = RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(),
                         tokenize_options=TokenizeOptions(**options))
    return builder.build_records([RawRecord(source="r.jsonl", index=k, value=r) for k, r in enumerate(records)])


def test_axolotl_qwen3_records_were_all_ambiguous_and_are_now_trained_from_the_divergence(axolotl_job, qwen3_tokenizer):
    _, tokenizer = qwen3_tokenizer
    strict = built(tokenizer, reasoning_records(), prompt_mismatch="reject")  # today's behaviour, behind the option
    assert [kind for kind, _ in strict] == ["rejected"] * 20
    assert {item["reason"] for _, item in strict} == {errors.AMBIGUOUS_SPAN}
    rows = read_rows(axolotl_job)
    assert not read_rejected(axolotl_job)
    assert len(rows) == 40  # earlier reasoning is dropped: one row per supervised turn
    from transforms.runtime import ShardDataset

    assert len(ShardDataset(str(axolotl_job))) == 40  # a dataset of split records loads (20 records, 40 rows)
    in_process = [item for kind, item in built(tokenizer, reasoning_records())]
    assert [list(r["input_ids"]) for r in in_process] == [r["input_ids"] for r in sorted(
        rows, key=lambda r: (r["index"], r["turn"]))]
    records = reasoning_records()
    for row in rows:
        messages = records[row["index"]]["messages"][:row["turn"] + 1]
        turn = messages[-1]
        # the row is the template's own rendering of the turn (no trailing newline after <|im_end|>) ...
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, chat_template=AXOLOTL_QWEN3)
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True,
                                               chat_template=AXOLOTL_QWEN3)
        assert prompt.endswith("<think>\n\n") and not rendered.startswith(prompt)
        expected_ids = tokenizer(rendered.rstrip("\n"), add_special_tokens=False)["input_ids"]
        assert row["input_ids"] == expected_ids
        # ... trained from the first token after what the generation prompt and the rendering share
        shared = _common_prefix_length(prompt, rendered)
        assert rendered[:shared].endswith("<think>\n")
        first = next(k for k, label in enumerate(row["labels"]) if label != -100)
        assert tokenizer.decode(row["input_ids"][:first]) == rendered[:shared]
        assert all(label != -100 for label in row["labels"][first:])
        trained = tokenizer.decode(row["input_ids"][first:])
        assert trained == f"{turn['reasoning_content']}\n</think>\n\n{turn['content']}<|im_end|>"
        assert "<|im_start|>" not in trained


def test_the_audit_and_the_summary_count_the_records_with_an_example(axolotl_job, qwen3_tokenizer, capsys):
    out = axolotl_job
    stats = json.loads((out / "audit" / "stats.json").read_text())
    section = stats["prompt_mismatch"]
    assert (section["records"], section["rows"], section["turns"]) == (20, 40, 40)
    assert section["by_kind"] == {DIVERGED: 40} and section["mode"] == "diverge"
    example = section["example"]  # the first in stable order (the smallest row sort key)
    first = min(read_rows(out), key=lambda row: row_sort_key(row["source"], row["index"]))
    assert (example["index"], example["kind"]) == (first["index"], DIVERGED) and example["turn"] in (1, 3)
    assert example["shared"].endswith("<think>\n") and example["generation_prompt"] == "\n"
    assert example["rendered"].startswith(f"Adding {first['index']} and ")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["audit"]["prompt_mismatch"] == section
    assert manifest["config"]["tokenize"]["prompt_mismatch"] == "diverge"
    report = (out / "audit" / "report.html").read_text()
    assert "rendered differently from their generation prompt" in report and "20 / 40" in report
    # the command's summary line, and a recomputed audit that keeps the job's figures (the shards lack them)
    from pipeline.audit import main as audit_main
    from pipeline.launch.cli import parse_args
    from pipeline.launch.main import _print_summary

    _print_summary(parse_args(["--input", "x", "--output", str(out)]), 1.0, manifest)
    printed = capsys.readouterr().out
    assert "prompt mismatch: 20 record(s), 40 turn(s)" in printed
    assert f"reasoning.jsonl record {first['index']} turn {example['turn']}" in printed
    recomputed = out.parent / "recomputed"
    assert audit_main([str(out), "--audit-dir", str(recomputed), "--quiet"]) == 0
    assert json.loads((recomputed / "stats.json").read_text())["prompt_mismatch"] == section


def test_a_granite_style_record_without_a_generation_prompt_never_trains_the_role_header(tmp_path):
    renderer = ChatRenderer(chat_template=granite(), template_variables={}, control_tokens=GRANITE_TOKENS)
    assert renderer.profile.generation_prompt == "<|start_of_role|>assistant<|end_of_role|>"
    record = [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hello."}]
    (row,) = renderer.render_rows(record)
    assert [row.text[s:e] for s, e in row.trained_spans] == ["Hello.<|end_of_text|>"]
    assert row.text[:row.trained_spans[0][0]].endswith("<|start_of_role|>assistant<|end_of_role|>")
    (mismatch,) = row.prompt_mismatches
    assert mismatch.kind == HEADER_FROM_GENERATION_PROMPT and mismatch.turn == 1
    # a conversation that has a generation prompt is not affected
    plain = [record[0], {"role": "user", "content": "Hi"}, record[1]]
    (row,) = renderer.render_rows(plain)
    assert not row.prompt_mismatches and [row.text[s:e] for s, e in row.trained_spans] == ["Hello.<|end_of_text|>"]
    # --prompt-mismatch reject, and a header the generation prompt does not match: rejected, never trained
    strict = ChatRenderer(chat_template=granite(), template_variables={}, control_tokens=GRANITE_TOKENS,
                          prompt_mismatch="reject")
    with pytest.raises(RecordRejected) as raised:
        strict.render_rows(record)
    assert raised.value.reason == errors.NO_GENERATION_PROMPT
    other = ChatRenderer(chat_template=granite(" {}"), template_variables={}, control_tokens=GRANITE_TOKENS)
    with pytest.raises(RecordRejected) as raised:
        other.render_rows(record)
    assert raised.value.reason == errors.NO_GENERATION_PROMPT and "role header" in raised.value.detail


# ------------------------------------------------------------------------------------------------------------
# every template of trl/chat_templates/
# ------------------------------------------------------------------------------------------------------------
_CONTROL = re.compile(r"<\|[^|<>\s]{1,40}\|>|<｜[^｜]{1,40}｜>|\[/?[A-Z_]{2,30}\]|</?(?:think|tool_call|tool_response|"
                      r"start_of_turn|end_of_turn|bos|eos|s)>|<\|[a-z_\"]{1,20}>|<[a-z_\"]{1,20}\|>")
_BOS = ("<|begin_of_text|>", "<bos>", "<｜begin▁of▁sentence｜>", "<|startoftext|>", "<s>")
_EOS = ("<|im_end|>", "<|eot_id|>", "<eos>", "<｜end▁of▁sentence｜>", "<|endoftext|>", "<|return|>", "</s>")


def _user(text):
    return {"role": "user", "content": text}


def _assistant(text, reasoning=None):
    return {"role": "assistant", "content": text, **({"reasoning_content": reasoning} if reasoning else {})}


TRL_RECORDS = {
    "single": [_user("What is 2+2?"), _assistant("It is 4.")],
    "system": [{"role": "system", "content": "Be brief."}, _user("What is 2+2?"), _assistant("It is 4.")],
    "multi": [_user("Hi there"), _assistant("Hello!"), _user("What is 2+2?"), _assistant("It is 4.")],
    "reasoning": [_user("Hi there"), _assistant("Hello!", "Greet back."), _user("What is 2+2?"),
                  _assistant("It is 4.", "Add two and two.")],
    "system_assistant": [{"role": "system", "content": "Be brief."}, _assistant("It is 4.")],
    "assistant_first": [_assistant("Hello, how can I help?"), _user("What is 2+2?"), _assistant("It is 4.")],
}


def _trl_templates():
    folder = tf.template_dirs().get("trl")
    return sorted(folder.glob("*.jinja")) if folder else []


def _renderers(text: str) -> tuple[ChatRenderer, ChatRenderer]:
    """The template's renderers under ``--prompt-mismatch diverge`` and ``reject`` (one parse, one probe)."""
    variables = {"bos_token": next((t for t in _BOS if t in text), ""),
                 "eos_token": next((t for t in _EOS if t in text), "")}
    tokens = sorted(set(_CONTROL.findall(text)), key=lambda t: (-len(t), t))
    template = ChatTemplate(text)
    rule = ChatRenderer(chat_template=template, template_variables=variables, control_tokens=tokens)
    return rule, ChatRenderer(chat_template=template, template_variables=variables, control_tokens=tokens,
                              prompt_mismatch="reject", profile=rule.profile)


def _rows_or_reason(renderer, messages):
    try:
        return renderer.render_rows(messages)
    except RecordRejected as exc:
        return exc.reason


def _turn_of(rows, messages, i: int) -> tuple[str, str]:
    """(the row text before message ``i``'s trained turn, the turn) from a record's rows."""
    for row in rows:
        if row.turn == i:
            start, end = row.turn_spans[0]
            return row.text[:start], row.text[start:end]
        if row.turn == -1:
            start, end = row.turn_spans[[k for k, m in enumerate(messages) if m["role"] == "assistant"].index(i)]
            return row.text[:start], row.text[start:end]
    raise AssertionError(f"no row holds message {i}")


@pytest.mark.skipif(not _trl_templates(), reason="trl (a test dependency with the templates) is not installed")
def test_the_rule_on_every_trl_template():
    seen = {DIVERGED: set(), HEADER_FROM_GENERATION_PROMPT: set()}
    for path in _trl_templates():
        text = path.read_text(encoding="utf-8")
        rule, strict = _renderers(text)
        header = rule.profile.generation_prompt
        for name, messages in TRL_RECORDS.items():
            got, before = _rows_or_reason(rule, messages), _rows_or_reason(strict, messages)
            where = f"{path.name} {name}"
            if isinstance(got, str):  # rejected under the rule: rejected for the same reason without it
                assert got == before, where
                continue
            mismatches = [m for row in got for m in row.prompt_mismatches]
            if not mismatches:  # nothing rendered differently: the rows of --prompt-mismatch reject
                assert got == before, where
                continue
            assert before in (errors.AMBIGUOUS_SPAN, errors.NO_GENERATION_PROMPT), where
            for row in got:
                for start, end in row.trained_spans:
                    trained = row.text[start:end]
                    assert trained and (not header or header not in trained), where  # a role header is never trained
            for mismatch in mismatches:
                seen[mismatch.kind].add(path.name)
                i = mismatch.turn
                context, turn = _turn_of(got, messages, i)
                upto = rule.render_text(messages[:i + 1])
                assert upto.startswith(context + turn), where  # the row is the template's rendering of the turn
                if mismatch.kind == DIVERGED:
                    prompt = rule.render_text(messages[:i], add_generation_prompt=True)
                    # trained from the first character the generation prompt and the rendered turn do not share
                    assert prompt.startswith(context) and not prompt.startswith(context + turn[:1]), where
                else:
                    assert context.endswith(header), where
    assert seen[DIVERGED] >= {"qwen3_5_nothink.jinja", "qwen3_5_nothink_training.jinja"}, seen
    assert {"qwen3.jinja", "llama3_1.jinja", "qwen2_5.jinja"} <= seen[HEADER_FROM_GENERATION_PROMPT], seen


def test_a_template_that_departs_inside_the_role_header_is_still_rejected():
    # the rendered turn and the generation prompt part before the end of the header line: never a guess
    template = ("{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
                "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant_turn\\n' }}{%- endif %}")
    renderer = ChatRenderer(chat_template=template, template_variables={}, control_tokens=QWEN3_TOKENS)
    with pytest.raises(RecordRejected) as raised:
        renderer.render_rows([_user("Hi"), _assistant("Hello")])
    assert raised.value.reason == errors.AMBIGUOUS_SPAN and "role header" in raised.value.detail


def test_both_engines_write_the_same_bytes_with_prompt_mismatch_records(tmp_path, qwen3_tokenizer):
    from test_local_engine import BEAM, default_command, tree_digest

    folder, _ = qwen3_tokenizer
    template = tmp_path / "axolotl_qwen3.jinja"
    template.write_text(AXOLOTL_QWEN3, encoding="utf-8")
    records = reasoning_records(6) + [{"messages": [_user("plain"), _assistant("reply")]}]
    data = write_jsonl(tmp_path / "mixed.jsonl", records)
    args = ["--input", data, "--tokenizer", folder, "--chat-template", str(template), "--num-shards", "2"]
    assert run_job([*args, "--output", str(tmp_path / "beam"), *BEAM]) == 0
    assert default_command([*args, "--output", str(tmp_path / "local"), "--workers", "2"]) == 0
    assert tree_digest(tmp_path / "local") == tree_digest(tmp_path / "beam")
    stats = json.loads((tmp_path / "local" / "audit" / "stats.json").read_text())
    assert stats["prompt_mismatch"]["records"] == 6


def test_the_option_is_checked_at_launch(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"messages": [_user("a"), _assistant("b")]}])
    assert run_job(["--input", data, "--output", str(tmp_path / "o"), "--prompt-mismatch", "guess"]) == 2
    assert "--prompt-mismatch" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_option_is_part_of_the_config_fingerprint():
    from transforms.config import JobConfig, TokenizeOptions

    def fingerprint(**options):
        return JobConfig(format={}, tokenize=TokenizeOptions(**options), tokenizer={}).fingerprint()

    assert TokenizeOptions().prompt_mismatch == "diverge"
    assert fingerprint() == fingerprint(prompt_mismatch="diverge") != fingerprint(prompt_mismatch="reject")
    with pytest.raises(ValueError, match="--prompt-mismatch"):
        TokenizeOptions(prompt_mismatch="guess")
