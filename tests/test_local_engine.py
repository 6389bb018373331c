"""The local engine (pipeline.engines.local.engine): the default command without Beam, in one process or in forked
worker processes, writes the bytes the Beam graph writes; a failing or dying worker fails the job without a
manifest; the template time budget still works in a forked worker; Beam is not imported."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatshards_testing import MIXED_REAL_INPUTS, REPO, quick_first, run_job, sample
from transforms import errors
from transforms import shard_format as sf

INPUTS = MIXED_REAL_INPUTS
BEAM = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
NEVER_ENDS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
CHATML = ("{% for m in messages %}{% if m.content == 'slow' %}" + NEVER_ENDS + "{% endif %}"
          "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tree_digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def default_command(args: list[str]) -> int:
    """``python -m pipeline`` as a user types it (no Beam flags): the local engine."""
    from pipeline.launch.main import main

    return main(list(args))


def chat(content: str) -> dict:
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": f"re: {content}"}]}


def jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def real_args():
    return [arg for relative in INPUTS for arg in ("--input", str(sample(relative)))]


@pytest.mark.parametrize("extra", quick_first([["--num-shards", "3", "--max-length", "2048"],
                                               ["--dedup", "--truncation", "turns", "--max-length", "256"],
                                               ["--no-audit", "--loss", "last"]]),
                         ids=["shards", "dedup-turns", "no-audit"])
def test_the_local_engine_writes_the_beam_graphs_bytes_in_one_process_and_in_workers(tmp_path, real_args, extra):
    duplicated = tmp_path / "again.jsonl"  # exact duplicates of a real file, for --dedup
    duplicated.write_bytes(sample(INPUTS[1]).read_bytes())
    args = [*real_args, "--input", str(duplicated), *extra]
    assert run_job([*args, "--output", str(tmp_path / "beam"), *BEAM]) == 0
    reference = tree_digest(tmp_path / "beam")
    assert "manifest.json" in reference and any(k.startswith("rejected/") for k in reference)
    for workers in (1, 2):
        out = tmp_path / f"local-{workers}"
        assert default_command([*args, "--output", str(out), "--workers", str(workers)]) == 0
        assert tree_digest(out) == reference, workers
        assert not (out / ".tmp").exists()
    if "--dedup" in extra:
        manifest = sf.load_manifest(str(tmp_path / "local-2"))
        assert manifest["rejected_by_reason"].get(errors.DUPLICATE, 0) > 0


def test_the_default_command_chooses_the_local_engine_only_where_it_can_run(tmp_path, monkeypatch):
    from pipeline.launch.cli import ConfigError, parse_args
    from pipeline.launch.engine_choice import BEAM as BEAM_ENGINE
    from pipeline.launch.engine_choice import ENGINE_ENV, LOCAL, chosen_engine
    from pipeline.launch.plan import JobPlan

    class Plan:  # the two fields chosen_engine reads
        def __init__(self, files):
            self.files = files

    data = jsonl(tmp_path / "a.jsonl", [chat("hi")])
    local = parse_args(["--input", data, "--output", str(tmp_path / "o")])
    assert chosen_engine(local, Plan((data,))) == LOCAL
    assert chosen_engine(local, Plan(None)) == BEAM_ENGINE  # --no-validate-inputs: matched when the job runs
    assert chosen_engine(parse_args(["--input", data, "--output", "gs://bucket/o"]), Plan((data,))) == BEAM_ENGINE
    assert chosen_engine(local, Plan(("gs://bucket/a.jsonl",))) == BEAM_ENGINE
    assert chosen_engine(parse_args(["--input", data, "--output", "o", "--direct_num_workers=2"]),
                         Plan((data,))) == BEAM_ENGINE
    monkeypatch.setenv(ENGINE_ENV, "beam")
    assert chosen_engine(local, Plan((data,))) == BEAM_ENGINE
    monkeypatch.setenv(ENGINE_ENV, "spark")
    with pytest.raises(ConfigError):
        chosen_engine(local, Plan((data,)))
    assert JobPlan.__dataclass_fields__["files"]  # the field the fake stands for


@pytest.mark.parametrize("flags", [["--workers", "0"], ["--workers", "2", "--runner=FnApiRunner"]])
def test_bad_worker_counts_are_configuration_errors(tmp_path, capsys, flags):
    data = jsonl(tmp_path / "a.jsonl", [chat("hi")])
    assert default_command(["--input", data, "--output", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("chatshards: error: --workers") and len(err.splitlines()) == 1


@pytest.mark.parametrize("how", quick_first(["raises", "dies"]))
def test_a_failing_worker_fails_the_job_without_a_manifest(tmp_path, monkeypatch, capsys, how):
    import pipeline.engines.local.engine as engine

    def broken(self, batch):
        if how == "dies":
            os._exit(3)
        raise ValueError("a bug in the row builder")

    monkeypatch.setattr(engine.RowBuilderStage, "add", broken)  # inherited by the forked workers
    data = jsonl(tmp_path / "a.jsonl", [chat(f"hi {i}") for i in range(50)])
    out = tmp_path / "o"
    assert default_command(["--input", data, "--output", str(out), "--workers", "2", "--batch-size", "4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("chatshards: error: the job failed: "), err
    assert ("ValueError: a bug in the row builder" if how == "raises" else "exited with status 3") in err[0]
    assert not (out / sf.MANIFEST_NAME).exists() and not (out / ".tmp").exists()
    assert sorted(p.name for p in out.iterdir()) == [".chatshards-output"]  # only the marker is left
    # the lock was released: a rerun with --overwrite may use the folder
    monkeypatch.undo()
    assert default_command(["--input", data, "--output", str(out), "--workers", "2", "--overwrite"]) == 0
    assert sf.load_manifest(str(out))["counts"]["written"] == 50


def test_the_template_time_budget_holds_in_forked_workers(tmp_path):
    """The parent's template watchdog thread does not exist in a forked worker: it is started anew there."""
    template = tmp_path / "slow.jinja"
    template.write_text(CHATML, encoding="utf-8")
    records = [chat(f"hi {i}") for i in range(20)] + [chat("slow")] + [chat(f"bye {i}") for i in range(20)]
    data = jsonl(tmp_path / "a.jsonl", records)
    out = tmp_path / "o"
    assert default_command(["--input", data, "--output", str(out), "--chat-template", str(template),
                            "--template-timeout", "1", "--workers", "2", "--batch-size", "4"]) == 0
    manifest = sf.load_manifest(str(out))
    assert manifest["counts"] == {"read": 41, "written": 40, "rejected": 1, "rows": 40}
    assert manifest["rejected_by_reason"] == {errors.TEMPLATE_LIMIT: 1}


def test_the_default_command_never_imports_beam(tmp_path):
    data = jsonl(tmp_path / "a.jsonl", [chat(f"hi {i}") for i in range(10)])
    code = ("import sys; from pipeline.launch.main import main; "
            f"rc = main(['--input', {data!r}, '--output', {str(tmp_path / 'o')!r}]); "
            "print('BEAM' if 'apache_beam' in sys.modules else 'NO-BEAM', rc)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.stdout.strip().splitlines()[-1] == "NO-BEAM 0", result.stdout + result.stderr


def test_numpy_dtypes_of_list_columns_match_arrow_without_pandas():
    import numpy as np
    import pyarrow as pa

    from transforms.shard_format import numpy_dtype

    for arrow_type in (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
                       pa.uint64(), pa.float16(), pa.float32(), pa.float64()):
        assert numpy_dtype(arrow_type) == np.dtype(arrow_type.to_pandas_dtype()), arrow_type


def test_shard_tables_are_built_from_buffers_with_pa_arrays_bytes():
    """table_from_rows builds text columns from buffers (no pandas import); the table and its IPC bytes equal
    what pa.array gives for the same values."""
    import numpy as np
    import pyarrow as pa

    rows = []
    for i in range(37):
        ids = np.arange(i % 5 + 1, dtype=np.int32)
        rows.append({"input_ids": ids, "labels": np.where(ids % 2 == 0, ids, -100).astype(np.int32),
                     "length": len(ids), "num_loss_tokens": int((ids % 2 == 0).sum()), "truncated": i % 3 == 0,
                     "source": f"src-{i % 4}-é", "index": i, "record_id": "r" * (i % 7), "format": "openai",
                     "num_turns": 2, "num_trained_turns": 1, "prompt_tokens": 1, "truncated_tokens": 0,
                     "conversation_hash": "h", "turn": -1, "reasoning_tokens": 0, "literal_control_tokens": 0,
                     "row_of_record": 0, "split_extra_tokens": 0})
    schema = sf.arrow_schema(padded=False)
    table = sf.table_from_rows(rows, schema)
    table.validate(full=True)
    reference = pa.Table.from_arrays(
        [pa.array([[int(x) for x in row[f.name]] if pa.types.is_list(f.type) else row[f.name] for row in rows],
                  type=f.type) for f in schema], schema=schema)
    assert table.equals(reference)
    assert sf.ipc_stream_bytes(table) == sf.ipc_stream_bytes(reference)
