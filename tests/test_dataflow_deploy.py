"""deploy/: the worker image, the Flex Template metadata and launcher agree with setup.py and the CLI."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys

from chatshards_testing import REPO

DEPLOY = REPO / "deploy"


def setup_constant(name: str) -> str:
    """A module-level string constant of setup.py, read with ``ast`` (setup.py is never executed)."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {name} constant")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in logical]


def test_image_is_the_beam_sdk_image_of_the_pinned_version():
    beam_version = setup_constant("BEAM_VERSION")
    froms = [args for op, args in dockerfile_instructions() if op == "FROM"]
    assert len(froms) == 2, froms  # the template-launcher stage, then the worker image (the last stage)
    image, _, tag = froms[-1].split()[0].partition(":")
    assert image == "apache/beam_python3.11_sdk"
    assert tag == beam_version, f"deploy/Dockerfile uses Beam {tag}, setup.py pins {beam_version}"
    setup_text = (REPO / "setup.py").read_text(encoding="utf-8")
    assert re.search(r"apache-beam\[gcp\]==(\{BEAM_VERSION\}|" + re.escape(beam_version) + ")", setup_text)
    import apache_beam

    assert apache_beam.__version__ == beam_version  # the launcher here builds graphs with the same Beam


def test_image_installs_the_dataflow_extra_and_serves_as_flex_template_launcher():
    instructions = dockerfile_instructions()
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert re.search(r"pip install [^&]*\"?\.\[dataflow\]\"?", runs), runs  # apache-beam[gcp] and the job's libraries
    assert "torch" not in runs and ".[train]" not in runs and ".[dev]" not in runs and ".[hf]" not in runs
    copies = [args for op, args in instructions if op == "COPY"]
    # Docker does not expand variables in `COPY --from=`: the launcher image must be a named stage
    stages = {args.split()[-1]: args.split()[0] for op, args in instructions
              if op == "FROM" and len(args.split()) == 3 and args.split()[1].upper() == "AS"}
    sources = [c.split()[0].removeprefix("--from=") for c in copies if c.startswith("--from=")]
    assert sources and all("$" not in source for source in sources), sources
    assert any(stages.get(source, "").startswith("gcr.io/dataflow-templates-base/python311-template-launcher-base:")
               and "/opt/google/dataflow/python_template_launcher" in c
               for source, c in zip(sources, [c for c in copies if c.startswith("--from=")]))
    env = " ".join(args for op, args in instructions if op == "ENV")
    match = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)", env)
    assert match and match.group(1).endswith("deploy/launcher.py")
    assert any(c.split()[0] == "deploy/launcher.py" for c in copies)
    for package in ("pipeline/", "transforms/", "setup.py"):
        assert any(package in c.split() for c in copies), package
    entrypoint = [args for op, args in instructions if op == "ENTRYPOINT"]
    assert entrypoint and "/opt/apache/beam/boot" in entrypoint[-1]


def load_launcher():
    """deploy/launcher.py as a module (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("chatshards_deploy_launcher", DEPLOY / "launcher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parser_flags() -> dict[str, object]:
    from pipeline.launch.cli import build_parser

    flags = {}
    for action in build_parser()._actions:
        if action.dest == "help":
            continue
        underscored = [o for o in action.option_strings if "-" not in o[2:]]
        assert underscored, f"{action.option_strings}: cli.py must accept the underscore form"
        flags[underscored[0][2:]] = action
    return flags


def test_flex_template_metadata_lists_every_cli_flag():
    metadata = json.loads((DEPLOY / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["name"] and metadata["description"]
    parameters = {p["name"]: p for p in metadata["parameters"]}
    assert len(parameters) == len(metadata["parameters"]), "duplicate parameter names"
    flags = parser_flags()
    assert set(parameters) == set(flags), (
        "deploy/metadata.json is stale: run python deploy/make_metadata.py "
        f"(missing {sorted(set(flags) - set(parameters))}, extra {sorted(set(parameters) - set(flags))})"
    )
    for name, action in flags.items():
        entry = parameters[name]
        assert entry["isOptional"] is (not action.required), name
        assert entry["label"] and entry["helpText"], name
        for regex in entry.get("regexes", []):
            re.compile(regex)
        if action.choices:
            assert all(re.fullmatch(entry["regexes"][0], str(c)) for c in action.choices), name
    # and the file is exactly what the generator writes from the parser (help texts included)
    result = subprocess.run([sys.executable, str(DEPLOY / "make_metadata.py"), "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_every_parameter_is_accepted_by_the_cli_in_underscore_form():
    """``--name=value`` for every metadata parameter parses (the Flex launcher passes that form)."""
    from pipeline.launch.cli import build_parser

    samples = {"input": "gs://b/in/*.jsonl", "output": "gs://b/out"}
    argv = []
    for entry in json.loads((DEPLOY / "metadata.json").read_text(encoding="utf-8"))["parameters"]:
        name = entry["name"]
        action = parser_flags()[name]
        if action.nargs == 0:
            value = "true"
        elif action.choices:
            value = str(list(action.choices)[-1])
        elif action.type in (int, float):
            value = "8"
        else:
            value = samples.get(name, "x")
        argv.append(f"--{name}={value}")
    args = load_launcher().flex_args_to_cli(argv)
    known, unknown = build_parser().parse_known_args(args)
    assert unknown == ["--runner=DataflowRunner"]
    for name, action in parser_flags().items():
        assert getattr(known, action.dest) not in (None, False), name


def test_launcher_translates_flex_template_arguments():
    deploy_launcher = load_launcher()
    args = deploy_launcher.flex_args_to_cli([
        "--input=gs://b/a/*.jsonl, gs://b/b/*.json", "--output=gs://b/out", "--overwrite=true",
        "--dedup=false", "--no_validate_inputs=True", "--max_length=2048", "--project=p",
        "--sdk_container_image=img:1",
    ])
    assert args == ["--input=gs://b/a/*.jsonl", "--input=gs://b/b/*.json", "--output=gs://b/out", "--overwrite",
                    "--no_validate_inputs", "--max_length=2048", "--project=p", "--sdk_container_image=img:1",
                    "--runner=DataflowRunner"]
    assert deploy_launcher.flex_args_to_cli(["--runner=FnApiRunner", "--output=o", "--input=i"])[-1] == "--input=i"


def test_launcher_submits_without_waiting(monkeypatch, capsys):
    """The launcher returns as soon as the runner accepted the job: ``wait_until_finish`` is never called."""
    deploy_launcher = load_launcher()
    import pipeline.launch.main as job_main

    calls = {}

    class FakeResult:
        def wait_until_finish(self):
            raise AssertionError("the Flex Template launcher must not wait for the job")

    def fake_run(job, *, wait=True):
        calls["job"], calls["wait"] = job, wait
        result = FakeResult()
        if wait:
            result.wait_until_finish()
        return result, False  # (Beam result, dry run), as pipeline.engines.beam.run.run_on_beam returns

    monkeypatch.setattr(job_main, "run", fake_run)
    assert deploy_launcher.main(["--input=gs://b/in/*.jsonl", "--output=gs://b/out", "--overwrite=true",
                                 "--project=p", "--region=us-central1"]) == 0
    assert calls["wait"] is False and calls["job"].overwrite is True and calls["job"].inputs == ("gs://b/in/*.jsonl",)
    assert "--runner=DataflowRunner" in calls["job"].beam_args
    assert "submitted" in capsys.readouterr().out


def test_deploy_readme_covers_build_template_run_and_prerequisites():
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for needle in ("docker build -f deploy/Dockerfile", "gcloud dataflow flex-template build",
                   "gcloud dataflow flex-template run", "--metadata-file deploy/metadata.json",
                   "sdk_container_image", "roles/dataflow.worker", "roles/storage.objectAdmin",
                   "--setup_file", "gs://", "--tokenizer", "--overwrite", "TOKENIZERS_PARALLELISM"):
        assert needle in text, needle
