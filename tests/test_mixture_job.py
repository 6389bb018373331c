"""Jobs with a datasets list (``--config``): a real mixture of Alpaca, ShareGPT and tool-call records, each with its own
mapping and system prompt. Every row names its dataset, per-dataset counts reconcile, the realised shares match the
weights within the rounding bound, repeats get their own sort keys, and the shards are byte-identical across engines,
worker counts and runs. Also: the worked example of docs/config.md, --preview, per-dataset template variables, the
fingerprint (unused keys leave it alone), and the real files of ../shared/data."""
from __future__ import annotations

import collections
import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from chatshards_testing import RUNNER_ARGS, shared
from pipeline.launch.main import main
from transforms import shard_format as sf

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "mixture"
BEAM = [*RUNNER_ARGS, "--direct_running_mode=in_memory"]


def tree_digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def shard_rows(out: Path) -> list[dict]:
    manifest = sf.load_manifest(str(out))
    rows = []
    for entry in manifest["shards"]:
        with pa.memory_map(str(out / entry["path"])) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def rejections(out: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((out / "rejected").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


def openai_tool_records() -> list[dict]:
    """OpenAI fine-tuning records with tools and tool calls (written here: tests/data holds no such public file)."""
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                             "parameters": {"type": "object", "properties": {
                                                 "city": {"type": "string"}}, "required": ["city"]}}}
    records = []
    for i, city in enumerate(["Paris", "Lima", "Oslo", "Pune", "Kyiv", "Rome", "Doha", "Baku"]):
        call = {"id": f"call_{i}", "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}
        records.append({"messages": [
            {"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps({"temp_c": 10 + i})},
            {"role": "assistant", "content": f"It is {10 + i} degrees in {city}."}], "tools": [tool]})
    return records


def dialog_records() -> list[dict]:
    """Messages under ``dialog`` with ``speaker``/``text`` fields (a domain set's own layout)."""
    return [{"dialog": [{"speaker": "customer", "text": f"Is order {i} shipped?"},
                        {"speaker": "agent", "text": f"Order {i} left the warehouse today."}]} for i in range(6)]


SYSTEM = {"identity": "SYS-IDENTITY.", "vicuna": "SYS-VICUNA.", "glaive": "SYS-GLAIVE.", "weather": "SYS-WEATHER.",
          "orders": "SYS-ORDERS."}


@pytest.fixture(scope="module")
def mixture_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("mixture-data")
    weather, orders = folder / "weather.jsonl", folder / "orders.json"
    weather.write_text("".join(json.dumps(r) + "\n" for r in openai_tool_records()), encoding="utf-8")
    orders.write_text(json.dumps(dialog_records()), encoding="utf-8")
    return {"identity": str(DATA / "llamafactory_identity_24.json"),
            "vicuna": str(DATA / "fastchat_dummy_conversation_24.json"),
            "glaive": str(DATA / "llamafactory_glaive_toolcall_en_12.json"),
            "weather": str(weather), "orders": str(orders)}


def mixture_config(files: dict[str, str], **top) -> dict:
    datasets = [
        {"name": "identity", "files": files["identity"], "format": "alpaca", "weight": 1},
        {"name": "vicuna", "files": [files["vicuna"]], "role_map": {"human": "user", "gpt": "assistant"}, "weight": 2},
        {"name": "glaive", "files": files["glaive"], "weight": 1},
        {"name": "weather", "files": files["weather"], "format": "openai", "weight": 1},
        {"name": "orders", "files": files["orders"], "field_map": "messages=dialog,role=speaker,content=text",
         "role_map": {"customer": "user", "agent": "assistant"}, "weight": 0.5},
    ]
    for entry in datasets:
        entry["system_prompt"] = SYSTEM[entry["name"]]
    return {"max_length": 384, "seed": 11, "stopping_strategy": "all_exhausted", "datasets": datasets, **top}


def run_config(tmp_path: Path, config: dict, out: Path, *extra: str) -> int:
    """Write ``config`` to ``tmp_path/job.yaml`` (one path: the manifest records it) and run it into ``out``."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return main(["--config", str(path), "--output", str(out), *extra])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, mixture_files):
    tmp = tmp_path_factory.mktemp("mixed")
    out = tmp / "local-1"
    assert run_config(tmp, mixture_config(mixture_files), out, "--workers", "1") == 0
    return tmp, out


def test_every_row_names_its_dataset_and_carries_its_datasets_options(mixed, mixture_files, qwen_tokenizer):
    _, out = mixed
    rows = shard_rows(out)
    assert {row["dataset"] for row in rows} == set(SYSTEM)
    for row in rows:
        assert row["source"] == mixture_files[row["dataset"]]
        text = qwen_tokenizer.decode(row["input_ids"])
        assert SYSTEM[row["dataset"]] in text  # its own system prompt (no other dataset's)
        assert all(other not in text for name, other in SYSTEM.items() if name != row["dataset"])
    formats = {row["dataset"]: row["format"] for row in rows}
    assert formats["identity"] == "alpaca" and formats["vicuna"] == "sharegpt" and formats["weather"] == "openai"
    assert all(item["dataset"] in SYSTEM for item in rejections(out))


def test_per_dataset_counts_reconcile_and_the_shares_match_the_weights(mixed):
    _, out = mixed
    manifest = sf.load_manifest(str(out))
    counts, mixture = manifest["counts"], manifest["mixture"]
    assert counts["read"] - counts["mixture_skipped"] + counts["mixture_repeats"] == \
        counts["written"] + counts["rejected"]
    stats = json.loads((out / "audit" / "stats.json").read_text())
    rows = shard_rows(out)
    written = collections.Counter(row["dataset"] for row in rows if row["row_of_record"] == 0)
    rejected = collections.Counter(item["dataset"] for item in rejections(out))
    weights = {d["name"]: d["weight"] for d in mixture["datasets"]}
    total_target = sum(d["target"] for d in mixture["datasets"])
    for entry in mixture["datasets"]:
        name = entry["name"]
        audit = stats["by_dataset"][name]
        # every example the mixture made of the dataset is a written record or a rejection, and the audit agrees
        assert written[name] + rejected[name] == entry["target"] == audit["taken"]
        assert audit["written"] == written[name] and audit["rejected"] == rejected[name]
        # the bound: each target is round(p * T), so a share is off by at most (1/2 + p * n/2) / sum(targets)
        asked = weights[name] / sum(weights.values())
        assert abs(entry["target"] / total_target - asked) <= len(weights) / total_target
        assert audit["share_asked"] == pytest.approx(asked, abs=1e-6)
    # all_exhausted: the dataset with the most records for its weight (identity: 24 / (1/5.5) = 132) is taken whole,
    # the others repeated up to their share of 132: vicuna 48, glaive 24, weather 24, orders 12
    by_name = {d["name"]: d for d in mixture["datasets"]}
    assert {n: (d["read"], d["kept"], d["target"]) for n, d in by_name.items()} == {
        "identity": (24, 24, 24), "vicuna": (24, 24, 48), "glaive": (12, 12, 24), "weather": (8, 8, 24),
        "orders": (6, 6, 12)}
    assert counts["mixture_skipped"] == 0 and counts["mixture_repeats"] == 132 - 74


def test_repeats_are_distinct_rows_and_rejected_repeats_are_counted_once_per_copy(tmp_path, mixture_files):
    config = mixture_config(mixture_files)
    for entry in config["datasets"]:
        entry.pop("weight")
    config["datasets"][0]["max_records"] = 10   # identity: a seeded subsample of 10
    config["datasets"][2]["epochs"] = 2.5       # glaive: every record twice, half of them three times
    config["datasets"][3]["epochs"] = 3
    config.pop("stopping_strategy")
    out = tmp_path / "epochs"
    assert run_config(tmp_path, config, out, "--workers", "2") == 0
    manifest = sf.load_manifest(str(out))
    by_name = {d["name"]: d for d in manifest["mixture"]["datasets"]}
    assert (by_name["identity"]["kept"], by_name["identity"]["target"]) == (10, 10)
    assert by_name["glaive"]["target"] == 30 and by_name["weather"]["target"] == 24
    rows = shard_rows(out)
    firsts = collections.Counter((row["source"], row["index"]) for row in rows if row["row_of_record"] == 0)
    copies = collections.Counter(firsts.values())
    assert max(firsts[k] for k in firsts if k[0] == mixture_files["weather"]) == 3
    assert set(copies) <= {1, 2, 3}
    rejected = rejections(out)
    for item in rejected:  # a rejected repeat is one line per copy
        assert item.get("copy", 0) < {"glaive": 3, "weather": 3}.get(item["dataset"], 1)
    written = collections.Counter(row["dataset"] for row in rows if row["row_of_record"] == 0)
    lost = collections.Counter(item["dataset"] for item in rejected)
    assert all(written[n] + lost[n] == d["target"] for n, d in by_name.items())


@pytest.mark.slow
def test_the_mixture_is_byte_identical_on_both_engines_any_worker_count_and_every_run(mixed, mixture_files):
    tmp, reference_out = mixed
    reference = tree_digest(reference_out)
    config = mixture_config(mixture_files)
    for name, extra in (("local-2", ["--workers", "2"]), ("again-1", ["--workers", "1"]), ("beam", BEAM),
                        ("beam-2", [*RUNNER_ARGS, "--direct_running_mode=multi_processing",
                                    "--direct_num_workers=2"])):
        out = tmp / name
        assert run_config(tmp, config, out, *extra) == 0, name
        assert tree_digest(out) == reference, name


def test_a_config_that_changes_only_unused_keys_keeps_the_fingerprint(tmp_path, mixture_files, qwen_tokenizer,
                                                                      monkeypatch):
    import pipeline.launch.plan as plan_module
    from pipeline.launch.checks import match_datasets
    from pipeline.launch.config_file import parse_command_line
    from pipeline.launch.plan import make_plan

    description = plan_module.tokenizer_description(qwen_tokenizer)  # hashing the vocabulary takes a second
    monkeypatch.setattr(plan_module, "tokenizer_description", lambda tokenizer: description)

    def fingerprint(config: dict, *extra: str) -> str:
        path = tmp_path / "f.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        job, sizes = match_datasets(parse_command_line(["--config", str(path), "--output", str(tmp_path / "o"),
                                                        *extra]))
        return make_plan(job, qwen_tokenizer, template_report=None, files=sorted(sizes)) \
            .manifest_base["config_fingerprint"]

    counted = mixture_config(mixture_files)  # weights: the seed decides rows
    plain = mixture_config(mixture_files)
    for entry in plain["datasets"]:
        entry.pop("weight")
    plain.pop("stopping_strategy")
    base, weighted = fingerprint(plain), fingerprint(counted)
    unused = [dict(plain, seed=99), dict(plain, workers=2, batch_size=7, num_shards=3, no_audit=True),
              dict(plain, system_prompt="unused: every dataset sets its own")]
    assert all(fingerprint(config) == base for config in unused)
    assert fingerprint(plain, "--workers", "3") == base
    changed = [dict(counted, seed=12), dict(counted, stopping_strategy="first_exhausted"), dict(plain, max_length=100),
               dict(plain, format="sharegpt")]  # inherited by the datasets without their own format
    renamed = json.loads(json.dumps(plain))
    renamed["datasets"][1]["name"] = "sharegpt"
    prompt = json.loads(json.dumps(plain))
    prompt["datasets"][0]["system_prompt"] = "Another prompt."
    share = json.loads(json.dumps(plain))
    share["datasets"][2]["epochs"] = 2
    fingerprints = [fingerprint(config) for config in (*changed, renamed, prompt, share)]
    assert len({base, weighted, *fingerprints}) == 2 + len(fingerprints)


def test_each_dataset_has_its_own_template_variables_under_the_records_own(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'system' %}[{{ greeting }}] {% endif %}"
        "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

    def chat(text, **extra):
        return {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": text},
                             {"role": "assistant", "content": "ok"}], **extra}
    for name, records in (("a", [chat("one"), chat("two", chat_template_kwargs={"greeting": "RECORD"})]),
                          ("b", [chat("three")])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"chat_template": str(template), "chat_template_kwargs": {"greeting": "JOB"}, "datasets": [
        {"name": "a", "files": str(tmp_path / "a.jsonl"), "chat_template_kwargs": {"greeting": "DATASET"}},
        {"name": "b", "files": str(tmp_path / "b.jsonl")}]}
    out = tmp_path / "out"
    assert run_config(tmp_path, config, out) == 0
    from transforms.tokenizer_loading import bundled_tokenizer

    tokenizer = bundled_tokenizer()
    seen = {tokenizer.decode(row["input_ids"]).split("[")[1].split("]")[0] for row in shard_rows(out)}
    assert seen == {"DATASET", "RECORD", "JOB"}


def test_the_worked_example_of_the_docs_runs_and_previews(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # its paths are relative to the repository root, as the docs run it
    example = "examples/mixture.yaml"
    assert main(["--config", example, "--output", str(tmp_path / "preview"), "--preview"]) == 0
    printed = capsys.readouterr().out
    assert not (tmp_path / "preview").exists()
    for expected in ("dataset shop", "dataset faq", "dataset howto",
                     "formats sharegpt=2 · rejected no_assistant_turn=1", "formats alpaca=3",
                     "records: 8 read -> 8 taken, 8 examples",
                     "weight 2 (50.0% of the mixture)", "4 examples (1 repeats)", "You write short, precise answers.",
                     "[", "trained tokens are inside [...]"):
        assert expected in printed, expected
    out = tmp_path / "out"
    assert main(["--config", example, "--output", str(out)]) == 0
    manifest = sf.load_manifest(str(out))
    assert {d["name"]: d["target"] for d in manifest["mixture"]["datasets"]} == {"shop": 8, "faq": 4, "howto": 4}
    assert manifest["config_file"]["resolved"]["datasets"][1]["format"] == "sharegpt"
    assert [f.name for f in pa.ipc.open_stream(pa.memory_map(str(out / manifest["shards"][0]["path"]))).schema][-1] \
        == "dataset"


def test_the_default_command_has_no_dataset_column(tmp_path):
    out = tmp_path / "plain"
    assert main(["--input", str(DATA / "llamafactory_identity_24.json"), "--output", str(out), "--no-audit"]) == 0
    manifest = sf.load_manifest(str(out))
    assert "dataset" not in manifest["columns"] and "mixture" not in manifest and "config_file" not in manifest
    assert "mixture_skipped" not in manifest["counts"]


@pytest.mark.slow
def test_a_real_mixture_from_the_shared_data_is_deterministic_and_reconciles(tmp_path):
    files = {"alpaca": shared("alpaca/llamafactory_alpaca_en_demo.json"),
             "sharegpt": shared("sharegpt/fastchat_dummy_conversation.json"),
             "openai_tools": shared("tool_calling/openai_cookbook_drone_training_first5.jsonl"),
             "glaive_tools": shared("tool_calling/llamafactory_glaive_toolcall_en_demo.json")}
    config = {"max_length": 2048, "seed": 2024, "dedup": True, "total_records": 900, "datasets": [
        {"name": "alpaca", "files": str(files["alpaca"]), "format": "alpaca", "weight": 4,
         "system_prompt": "You follow instructions."},
        {"name": "sharegpt", "files": str(files["sharegpt"]), "role_map": {"human": "user", "gpt": "assistant"},
         "weight": 2, "system_prompt": "You are Vicuna."},
        {"name": "openai_tools", "files": str(files["openai_tools"]), "format": "openai", "weight": 1},
        {"name": "glaive_tools", "files": str(files["glaive_tools"]), "weight": 2,
         "system_prompt": "You call functions."}]}
    outs = {}
    for name, extra in (("local-1", ["--workers", "1"]), ("local-2", ["--workers", "2"]), ("beam", BEAM)):
        outs[name] = tmp_path / name
        assert run_config(tmp_path, config, outs[name], *extra) == 0
    digests = {name: tree_digest(out) for name, out in outs.items()}
    assert digests["local-1"] == digests["local-2"] == digests["beam"]
    manifest = sf.load_manifest(str(outs["local-1"]))
    by_name = {d["name"]: d for d in manifest["mixture"]["datasets"]}
    assert sum(d["target"] for d in by_name.values()) == 900  # total_records: 400 + 200 + 100 + 200
    assert by_name["openai_tools"]["target"] == 100 and by_name["openai_tools"]["kept"] == 5  # 5 records, 20 times
    stats = json.loads((outs["local-1"] / "audit" / "stats.json").read_text())
    rows = shard_rows(outs["local-1"])
    assert {row["dataset"] for row in rows} == set(by_name)
    for name, path in files.items():
        assert all(row["source"] == str(path) for row in rows if row["dataset"] == name)
        audit = stats["by_dataset"][name]
        # with --dedup a duplicate is rejected once, before the mixture decides: the other examples are the
        # target's, less the copies the duplicates would have had
        duplicates = audit["rejected_by_reason"].get("duplicate", 0)
        if duplicates:
            assert audit["taken"] - duplicates < by_name[name]["target"]
        else:
            assert audit["taken"] == by_name[name]["target"]
    counts = manifest["counts"]
    assert counts["read"] - counts["mixture_skipped"] + counts["mixture_repeats"] == \
        counts["written"] + counts["rejected"]
    assert os.path.exists(outs["local-1"] / "audit" / "report.html")
    assert "By dataset" in (outs["local-1"] / "audit" / "report.html").read_text()


def test_datasets_of_another_task_mix_too_and_group_texts_refuses_repeats(tmp_path, capsys):
    config = {"task": "text", "max_length": 64, "seed": 1, "datasets": [
        {"name": "c4", "files": str(REPO / "tests" / "data" / "llamafactory_c4_demo_16.jsonl"), "max_records": 10},
        {"name": "wiki", "files": str(REPO / "tests" / "data" / "llamafactory_wiki_demo_3.txt"), "epochs": 2}]}
    outs = [tmp_path / "one", tmp_path / "two"]
    for out, workers in zip(outs, ("1", "2")):
        assert run_config(tmp_path, config, out, "--workers", workers) == 0
    assert tree_digest(outs[0]) == tree_digest(outs[1])
    rows = shard_rows(outs[0])
    assert collections.Counter(row["dataset"] for row in rows) == {"c4": 10, "wiki": 6}
    assert sf.load_manifest(str(outs[0]))["columns"][-1] == "dataset"
    capsys.readouterr()
    grouped = {key: value for key, value in config.items() if key != "max_length"}
    assert run_config(tmp_path, dict(grouped, group_texts=32), tmp_path / "grouped") == 2
    assert "cannot be combined with --group-texts" in capsys.readouterr().err


def test_the_audit_command_recomputes_the_per_dataset_figures(mixed, capsys):
    from pipeline.audit import main as audit_main

    _, out = mixed
    job_stats = json.loads((out / "audit" / "stats.json").read_text())
    assert audit_main([str(out)]) == 0
    err = capsys.readouterr()
    assert "manifest says" not in err.out + err.err
    recomputed = json.loads((out / "audit" / "stats.json").read_text())
    assert recomputed["by_dataset"] == job_stats["by_dataset"]
