"""Job config files (``python -m pipeline --config job.yaml``, pipeline/launch/config_file.py): the same JobArgs as the
flags, flags overriding the file, YAML and JSON alike, and every mistake one line on stderr with exit status 2 (never
a traceback, whatever the file holds)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.launch.cli import ConfigError, parse_args
from pipeline.launch.config_file import DATASET_KEYS, parse_command_line
from pipeline.launch.main import main

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "mixture"
ALPACA = str(DATA / "llamafactory_identity_24.json")
SHAREGPT = str(DATA / "fastchat_dummy_conversation_24.json")


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_config_without_datasets_gives_the_jobargs_of_the_same_flags(tmp_path):
    config = write(tmp_path, f"""
input: {ALPACA}
output: {tmp_path}/out
max-length: 256          # dashes or underscores
truncation: turns
field_map: {{instruction: instruction}}
role_map: "bot=assistant"
chat_template_kwargs: {{enable_thinking: false}}
dedup: true
num_shards: 3
""")
    from_file = parse_command_line(["--config", config])
    from_flags = parse_args(["--input", ALPACA, "--output", f"{tmp_path}/out", "--max-length", "256",
                             "--truncation", "turns", "--field-map", "instruction=instruction", "--role-map",
                             "bot=assistant", "--chat-template-kwargs", '{"enable_thinking": false}', "--dedup",
                             "--num-shards", "3"])
    assert dataclasses.replace(from_file, config_file=None) == from_flags
    assert from_file.config_file["path"] == config
    assert from_file.config_file["resolved"]["max_length"] == 256 and "output" not in from_file.config_file["resolved"]


def test_flags_beside_the_file_override_it_and_json_reads_like_yaml(tmp_path):
    body = {"output": f"{tmp_path}/out", "max_length": 512, "seed": 3, "datasets": [
        {"name": "alpaca", "files": ALPACA, "format": "alpaca", "weight": 2},
        {"name": "chat", "files": [SHAREGPT], "role_map": {"human": "user", "gpt": "assistant"}, "weight": 1,
         "system_prompt": "Be brief."}]}
    from_yaml = parse_command_line(["--config", write(tmp_path, yaml.safe_dump(body)), "--max-length", "64",
                                    "--system-prompt", "Be kind."])
    from_json = parse_command_line(["--config", write(tmp_path, json.dumps(body, indent=2), "job.json"),
                                    "--max-length", "64", "--system-prompt", "Be kind."])
    assert dataclasses.replace(from_yaml, config_file=None) == dataclasses.replace(from_json, config_file=None)
    assert from_yaml.tokenize_options.max_length == 64
    alpaca, chat = from_yaml.mixture.datasets
    assert alpaca.task.format_options.system_prompt == "Be kind."  # the flag's, inherited
    assert chat.task.format_options.system_prompt == "Be brief."  # the entry's own wins
    assert chat.task.format_options.role_map == {"human": "user", "gpt": "assistant"}
    assert from_yaml.inputs == (ALPACA, SHAREGPT) and from_yaml.mixture.seed == 3
    resolved = from_yaml.config_file["resolved"]
    assert resolved["max_length"] == 64 and resolved["datasets"][0]["system_prompt"] == "Be kind."


DATASETS = f"""datasets:
  - name: alpaca
    files: {ALPACA}
"""

# (file text, expected fragments of the one error line); each is a mistake people make
MISTAKES = {
    "typo-in-a-key": ("max_lenght: 512\n" + DATASETS, ["job.yaml:1:", "unknown key 'max_lenght'",
                                                       "did you mean 'max_length'"]),
    "typo-in-a-dataset-key": (DATASETS + "    field_mpa: {a: b}\n", ["job.yaml:4:", "field_mpa", "'field_map'"]),
    "job-key-inside-a-dataset": (DATASETS + "    max_length: 4\n", ["job.yaml:4:", "datasets[0]", "'max_length'",
                                                                    "top level"]),
    "dataset-key-at-the-top": ("weight: 2\n" + DATASETS, ["job.yaml:1:", "'weight' belongs in a datasets entry"]),
    "negative-weight": (DATASETS + "    weight: -1\n", ["job.yaml:4:", "datasets[0].weight", "> 0", "-1"]),
    "a-string-where-a-list-belongs": (f"datasets: {ALPACA}\n", ["job.yaml:1:", "datasets must be a list"]),
    "datasets-as-a-mapping": ("datasets:\n  alpaca:\n    files: x.json\n", ["datasets must be a list", "mapping"]),
    "two-datasets-with-one-name": (DATASETS + f"  - name: alpaca\n    files: {SHAREGPT}\n",
                                   ["job.yaml:4:", "'alpaca' is already used by datasets[0]"]),
    "a-dataset-without-files": ("datasets:\n  - name: alpaca\n    weight: 1\n",
                                ["job.yaml:2:", "(alpaca) has no files"]),
    "a-dataset-without-a-name": (f"datasets:\n  - files: {ALPACA}\n", ["job.yaml:2:", "has no name"]),
    "an-empty-files-list": ("datasets:\n  - name: a\n    files: []\n", ["job.yaml:3:", "empty list"]),
    "text-for-a-number": ("max_length: 2k\n" + DATASETS, ["job.yaml:1:", "max_length must be an integer",
                                                          "'2k'"]),
    "text-for-a-switch": ("dedup: 'yes'\n" + DATASETS, ["job.yaml:1:", "dedup is a switch"]),
    "a-misspelled-choice": (DATASETS + "    format: alpacca\n", ["job.yaml:4:", "did you mean 'alpaca'"]),
    "yaml-reads-1e-3-as-text": (DATASETS + "    weight: 1e-3\n", ["job.yaml:4:", "must be a number",
                                                                  "plain number"]),
    "weight-and-epochs": (DATASETS + "    weight: 1\n    epochs: 2\n",
                          ["job.yaml:4:", "weight, or max_records/epochs"]),
    "weights-for-some-datasets-only": (DATASETS + f"    weight: 1\n  - name: chat\n    files: {SHAREGPT}\n",
                                       ["chat without a weight"]),
    "a-key-given-twice": ("max_length: 1\nmax_length: 2\n" + DATASETS, ["job.yaml:2:", "given twice",
                                                                          "lines 1 and 2"]),
    "dash-and-underscore-twice": ("max_length: 1\nmax-length: 2\n" + DATASETS, ["job.yaml:2:", "same key"]),
    "broken-yaml": ("datasets: [\n  - name: a\n", ["not valid YAML", "line"]),
    "not-a-mapping": ("- a\n- b\n", ["must be a mapping of settings"]),
    "seed-without-datasets": (f"input: {ALPACA}\nseed: 3\n", ["job.yaml:2:", "'seed'", "needs a datasets list"]),
    "role-map-to-a-number": (DATASETS + "    role_map: {human: 3}\n", ["job.yaml:4:", "role_map", "names"]),
    "input-and-datasets": (f"input: {ALPACA}\n" + DATASETS, ["job.yaml:1:", "not also as input"]),
    "a-task-that-cannot-mix": (DATASETS + "    task: text\n", ["job.yaml:4:", "differs from the job's task"]),
    "a-reserved-template-variable": (DATASETS + "    chat_template_kwargs: {messages: []}\n",
                                     ["job.yaml:4:", "may not set messages"]),
    "an-unknown-top-level-beam-option": ("runner: DataflowRunner\n" + DATASETS, ["unknown key 'runner'",
                                                                                 "command line"]),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_bad_config_is_one_line_and_exit_status_2(tmp_path, capsys, mistake):
    text, fragments = MISTAKES[mistake]
    config = write(tmp_path, text)
    assert main(["--config", config, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("chatshards: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "out").exists()


def test_a_json_mistake_names_its_line_too(tmp_path, capsys):
    text = '{\n  "output": "o",\n  "datasets": [\n    {"name": "a", "files": "x", "wieght": 1}\n  ]\n}\n'
    config = write(tmp_path, text, "job.json")
    assert main(["--config", config]) == 2
    err = capsys.readouterr().err
    assert "job.json:4:" in err and "'wieght'" in err and "did you mean 'weight'" in err


@pytest.mark.parametrize("argv_tail, fragment", [
    (["--input", ALPACA], "--input cannot be added"),
    (["--no-validate-inputs"], "drop no_validate_inputs"),
    (["--max-lenght", "3"], "unknown flag --max-lenght"),
])
def test_flags_that_clash_with_the_file_are_refused(tmp_path, capsys, argv_tail, fragment):
    config = write(tmp_path, DATASETS)
    assert main(["--config", config, "--output", str(tmp_path / "o"), *argv_tail]) == 2
    assert fragment in capsys.readouterr().err


def test_a_missing_file_and_a_glob_that_matches_nothing_name_what_is_wrong(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    config = write(tmp_path, DATASETS + f"  - name: chat\n    files: {tmp_path}/missing-*.json\n")
    assert main(["--config", config, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "datasets[1] (chat)" in err and "matches no file" in err and len(err.strip().splitlines()) == 1


def test_a_file_in_two_datasets_is_refused(tmp_path, capsys):
    config = write(tmp_path, DATASETS + f"  - name: again\n    files: {DATA}/llamafactory_identity_*.json\n")
    assert main(["--config", config, "--output", str(tmp_path / "o")]) == 2
    assert "is also a file of dataset alpaca" in capsys.readouterr().err


KEYS = ["output", "max_length", "max-length", "datasets", "name", "files", "weight", "epochs", "max_records",
        "seed", "format", "field_map", "role_map", "system_prompt", "chat_template_kwargs", "task", "dedup",
        "stopping_strategy", "total_records", "input", "truncation", "loss", "workers", "batch_size"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["alpaca", "sharegpt", "auto", "a=b", "first_exhausted",
                                                           ALPACA, "-1", "{}", "[x]"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS + list(DATASET_KEYS)), st.text(max_size=6), st.integers(0, 3)),
                    inner, max_size=5)), max_leaves=20)
documents = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=6).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    st.text(max_size=200),
    st.lists(st.sampled_from(["datasets:", "  - name: a", "    files: x", "  -", ":", "  weight: [", "&a [*a]",
                              "max_length: !!python/object:os.system x", "? [a, b]\n: c", "\t- x", "'", "{"]),
             max_size=8).map("\n".join),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=documents)
def test_any_file_is_a_config_error_or_a_config_never_a_traceback(tmp_path, text):
    config = write(tmp_path, text)
    try:
        job = parse_command_line(["--config", config, "--output", str(tmp_path / "out")])
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip() and "Traceback" not in message
    else:
        assert job.output and job.inputs


def test_the_flex_template_takes_the_config_from_object_storage(tmp_path, monkeypatch):
    import importlib.util

    from object_store_testing import PREFIX, fresh_store, upload

    store = fresh_store(tmp_path, monkeypatch)
    root = next(store)
    upload(root, f"{PREFIX}bucket/job.yaml", (DATASETS + "    weight: 1\n").encode())
    spec = importlib.util.spec_from_file_location("chatshards_deploy_launcher_config", REPO / "deploy" / "launcher.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    argv = launcher.flex_args_to_cli([f"--config={PREFIX}bucket/job.yaml", "--output=gs://b/out", "--dedup=true",
                                      "--preview=false"])
    assert argv == [f"--config={PREFIX}bucket/job.yaml", "--output=gs://b/out", "--dedup", "--runner=DataflowRunner"]
    job = parse_command_line(argv)
    assert job.dedup and job.mixture.datasets[0].name == "alpaca" and job.mixture.datasets[0].weight == 1
    assert job.config_file["path"] == f"{PREFIX}bucket/job.yaml" and "--runner=DataflowRunner" in job.beam_args
    next(store, None)


def test_the_reference_lists_every_key_with_its_default():
    from pipeline.launch.cli import build_parser
    from pipeline.launch.config_file import MIXTURE_KEYS, flag_actions

    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `")}
    keys = set(flag_actions(build_parser())) | set(MIXTURE_KEYS) | set(DATASET_KEYS)
    assert keys <= rows, sorted(keys - rows)


def test_preview_works_without_a_config_file_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--input", SHAREGPT, "--output", str(out), "--role-map", "human=user,gpt=assistant",
                 "--preview"]) == 0
    printed = capsys.readouterr().out
    assert "dataset inputs: 1 file(s)" in printed and "records: 24" in printed and "formats sharegpt=24" in printed
    assert "[I am Vicuna" in printed and not out.exists()
