"""Issue 22: preference labels as exact as SFT's, on the published templates of ``trl/chat_templates/``.

For every pair (single-turn, system, multi-turn, reasoning completions where the template renders reasoning),
with each family's template and a tokenizer with its control tokens, the written row is checked against
``apply_chat_template`` (transformers) and the tokenizer, independently of the job's code:

* ``prompt_ids + chosen_ids`` (and ``+ rejected_ids``) is the tokenized rendering of the whole chosen (rejected)
  conversation, cut after the end-of-turn token that closes its last turn (the SFT end rule: whitespace or an
  end-of-conversation suffix the template writes after it are not part of the completion);
* ``prompt_ids`` is the tokenized generation prompt; where the template renders the turn differently from what
  follows its generation prompt, the prompt-mismatch rule applies and the row counts it
  (``prompt_mismatch_turns``), or DeepSeek-R1's rule (the prompt opens ``<think>\\n``) gives the completion
  ``reasoning\\n</think>\\n\\n`` + the rendered answer.

Default run: one family per template style; ``CHATSHARDS_FULL_MATRIX=1`` (or ``-m slow``) every TRL family.
"""
from __future__ import annotations

import os

import pytest

import template_families as tf
from transforms.config import TokenizeOptions
from transforms.formats import FormatOptions
from transforms.reading import RawRecord
from transforms.rows import RowBuilder
from transforms.tasks.preference import PreferenceOptions

pytestmark = pytest.mark.skipif(tf.template_dirs().get("trl") is None, reason="trl (templates) is not installed")

CORE = ("llama3", "qwen2_5", "qwen3", "deepseek_r1_distill", "qwen3_5_nothink", "phi3")
TRL_FAMILIES = [f for f in tf.ALL_FAMILIES if f.source.startswith("trl:")]
FULL = os.environ.get("CHATSHARDS_FULL_MATRIX") == "1"


def family_tokenizer(family: tf.Family):
    """The family's control tokens on the bundled Qwen2 vocabulary, in memory (what ``family_tokenizer`` saves)."""
    return tf.family_tokenizer_in_memory(family)


def msg(role, content, reasoning=None):
    out = {"role": role, "content": content}
    if reasoning:
        out["reasoning_content"] = reasoning
    return out


def pairs_for(family: tf.Family) -> list[dict]:
    system = [msg("system", "You answer in one sentence.")] if family.system else []
    pairs = [
        {"prompt": [msg("user", "What is the capital of France?")],
         "chosen": [msg("assistant", "The capital of France is Paris.")],
         "rejected": [msg("assistant", "It is Lyon, I believe.")]},
        {"prompt": system + [msg("user", "Name a prime number below ten.")],
         "chosen": [msg("assistant", "Seven is one.")], "rejected": [msg("assistant", "Nine.")]},
        {"prompt": [msg("user", "Hi there!"), msg("assistant", "Hello! How can I help?"),
                    msg("user", "Tell me a colour of the sky.")],
         "chosen": [msg("assistant", "Blue, on a clear day.")], "rejected": [msg("assistant", "Green, always.")]},
    ]
    if family.reasoning or family.reasoning_prompt:
        pairs.append({"prompt": [msg("user", "What is 12 times 12?")],
                      "chosen": [msg("assistant", "It is 144.", "Twelve twelves: 120 plus 24 is 144.")],
                      "rejected": [msg("assistant", "It is 124.", "Twelve times ten is 120, plus four.")]})
    return pairs


def built_rows(tokenizer, records):
    builder = RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(), tokenize_options=TokenizeOptions(),
                         task="preference", task_options=PreferenceOptions())
    return builder.build_records([RawRecord(source="pairs.jsonl", index=k, value=r) for k, r in enumerate(records)])


def cut_after_end_of_turn(text: str, family: tf.Family) -> str:
    ends = [text.rfind(t) + len(t) for t in family.end_of_turn if t in text]
    assert ends, f"no end-of-turn token in {text[-80:]!r}"
    return text[:max(ends)]


def check_prompt(row, prompt_ids: list[int], family) -> None:
    """``prompt_ids`` is the tokenized generation prompt, or (``boundary_moved``) that less its last token, which
    the tokenizer merges with the completion's first characters."""
    got = list(row["prompt_ids"])
    if row["boundary_moved"]:
        assert got == prompt_ids[:len(got)] and len(got) == len(prompt_ids) - 1, family.name
    else:
        assert got == prompt_ids, family.name


def check_family(family: tf.Family) -> dict[str, int]:
    tokenizer = family_tokenizer(family)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    records = pairs_for(family)
    results = built_rows(tokenizer, records)
    seen = {"exact": 0, "mismatch": 0, "r1": 0, "rejected": 0}
    for (kind, row), record in zip(results, records):
        if kind != "row":  # rejected: for the reason SFT rejects the chosen conversation with
            seen["rejected"] += 1
            sft = RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(), tokenize_options=TokenizeOptions())
            (item,) = sft.build_records([RawRecord(source="sft.jsonl", index=0,
                                                   value={"messages": record["prompt"] + record["chosen"]})])
            assert item[0] == "rejected" and item[1]["reason"] == row["reason"], (family.name, row, item)
            continue
        prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
        for side in ("chosen", "rejected"):
            ids = list(row["prompt_ids"]) + list(row[f"{side}_ids"])
            full = tokenizer.apply_chat_template(record["prompt"] + record[side], tokenize=False)
            if full.startswith(prompt):
                expected = prompt + cut_after_end_of_turn(full[len(prompt):], family)
                assert ids == encode(expected), (family.name, side, tokenizer.decode(ids)[-120:], expected[-120:])
                check_prompt(row, encode(prompt), family)
                seen["exact"] += 1
            elif prompt.endswith("<think>\n") and family.reasoning_prompt and int(row["prompt_mismatch_turns"]) == 0:
                # DeepSeek-R1's rule: the model writes its reasoning after the opened block, then the answer
                turn = record[side][-1]
                check_prompt(row, encode(prompt), family)
                text = tokenizer.decode(ids)[len(prompt):]
                assert text.startswith(f"{turn.get('reasoning_content', '')}\n</think>\n\n"), (family.name, text)
                assert text.rstrip().endswith(turn["content"] + family.end_of_turn[0]) or \
                    any(text.endswith(t) for t in family.end_of_turn), (family.name, text)
                seen["r1"] += 1
            else:  # the prompt-mismatch rule: trained from where the generation prompt and the rendering part
                assert int(row["prompt_mismatch_turns"]) == 2, (family.name, side)
                shared = encode(tokenizer.decode(row["prompt_ids"]))
                assert prompt.startswith(tokenizer.decode(row["prompt_ids"])) and shared == list(row["prompt_ids"])
                expected = cut_after_end_of_turn(full, family)
                assert ids == encode(expected), (family.name, side)
                seen["mismatch"] += 1
    return seen


@pytest.mark.parametrize("name", CORE)
def test_preference_labels_on_trl_templates(name):
    seen = check_family(tf.BY_NAME[name])
    assert seen["exact"] + seen["mismatch"] + seen["r1"] >= 6, seen
    if name == "qwen3_5_nothink":
        assert seen["mismatch"] == 2, seen  # its reasoning pair: the generation prompt holds an empty think block
    if name == "deepseek_r1_distill":
        assert seen["r1"] >= 2, seen


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in TRL_FAMILIES if f.name not in CORE], ids=lambda f: f.name)
def test_preference_labels_on_every_trl_family(family):
    seen = check_family(family)
    assert seen["exact"] + seen["mismatch"] + seen["r1"] >= 4, seen
