"""Scaling out locally: identical bytes in every runner mode, and one big file spread across workers."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from chatshards_testing import MIXED_REAL_INPUTS, REPO, run_job, sample

pytestmark = pytest.mark.slow  # every Beam runner mode, several processes each
INPUTS = MIXED_REAL_INPUTS


def tree_digest(out: Path) -> dict[str, str]:
    """sha256 of every file of an output folder: shards, rejected records, audit files, manifest."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def no_prism(tmp_path: Path) -> str:
    """DirectRunner tries Prism first (a download); a missing local binary makes it fall back at once."""
    return f"--prism_location={tmp_path / 'no-prism-binary'}"


MODES = [
    ("FnApiRunner", "in_memory", 1),
    ("FnApiRunner", "multi_threading", 2),
    ("FnApiRunner", "multi_processing", 2),
    ("DirectRunner", "in_memory", 1),
    ("DirectRunner", "multi_threading", 2),
    ("DirectRunner", "multi_processing", 2),
]


@pytest.fixture(scope="module")
def mode_outputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("modes")
    args = [arg for relative in INPUTS for arg in ("--input", str(sample(relative)))]
    args += ["--num-shards", "3", "--max-length", "2048"]
    digests = {}
    for runner, mode, workers in MODES:
        out = base / f"{runner}-{mode}"
        extra = [f"--runner={runner}", f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
        if runner == "DirectRunner":
            extra.append(no_prism(base))
        assert run_job([*args, "--output", str(out), *extra]) == 0, (runner, mode)
        digests[(runner, mode)] = tree_digest(out)
    return digests


@pytest.mark.parametrize("runner,mode,workers", MODES[1:], ids=[f"{r}-{m}" for r, m, _ in MODES[1:]])
def test_every_runner_mode_writes_identical_bytes(mode_outputs, runner, mode, workers):
    reference = mode_outputs[("FnApiRunner", "in_memory")]
    assert "manifest.json" in reference
    assert sorted(k for k in reference if k.startswith("data/")) == [
        f"data/shard-{i:05d}-of-00003.arrow" for i in range(3)]
    assert any(k.startswith("rejected/") for k in reference)
    assert mode_outputs[(runner, mode)] == reference


# -- one large input file is tokenized by several worker processes ------------------------------------

SPY = textwrap.dedent('''
    """Test-only BuildRows DoFn: records which process tokenized which record (one file per pid)."""
    import os

    from pipeline.engines.beam.build import BuildRowsFn


    class SpyBuildRowsFn(BuildRowsFn):
        def process(self, batch, selection=None):
            path = os.path.join(os.environ["CHATSHARDS_SPY_DIR"], f"tokenized-by-{os.getpid()}.tsv")
            with open(path, "a", encoding="utf-8") as handle:
                for raw, _ in batch:
                    handle.write(f"{raw.source}\\t{raw.index}\\n")
            yield from super().process(batch, selection)
''')


def write_big_file(path: Path, records: int) -> None:
    """``records`` real records (repeated) as one JSON Lines file."""
    lines = [line for line in sample("openai/llamafactory_v1_sft_demo.jsonl").read_text().splitlines() if line.strip()]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(records):
            handle.write(lines[i % len(lines)] + "\n")


@pytest.fixture()
def spy(tmp_path, monkeypatch):
    """Swap the BuildRows DoFn for the spy in the graph; worker processes import it via PYTHONPATH."""
    module_dir = tmp_path / "spy_module"
    module_dir.mkdir()
    (module_dir / "chatshards_tokenize_spy.py").write_text(SPY, encoding="utf-8")
    monkeypatch.syspath_prepend(str(module_dir))
    import chatshards_tokenize_spy

    import pipeline.engines.beam.graph

    monkeypatch.setattr(pipeline.engines.beam.graph, "BuildRowsFn", chatshards_tokenize_spy.SpyBuildRowsFn)
    records_dir = tmp_path / "spy_records"
    records_dir.mkdir()
    monkeypatch.setenv("CHATSHARDS_SPY_DIR", str(records_dir))
    python_path = [str(module_dir), str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in python_path if p))

    def tokenized_by() -> dict[str, Counter]:
        """``pid -> Counter(source file)`` of the records each process tokenized."""
        result = {}
        for path in records_dir.glob("tokenized-by-*.tsv"):
            pid = path.stem.rsplit("-", 1)[1]
            result[pid] = Counter(line.split("\t")[0] for line in path.read_text().splitlines())
        return result

    return tokenized_by


N_BIG = 3000


def run_multi_processing(tmp_path, big: Path, name: str):
    return run_job(["--input", str(big), "--output", str(tmp_path / name), "--num-shards", "2",
                    "--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])


def test_one_large_file_is_tokenized_by_several_workers(tmp_path, spy):
    big = tmp_path / "one-big-file.jsonl"
    write_big_file(big, N_BIG)
    assert run_multi_processing(tmp_path, big, "out") == 0
    by_pid = spy()
    assert sum(c[str(big)] for c in by_pid.values()) == N_BIG  # every record tokenized exactly once
    assert os.getpid() not in {int(pid) for pid in by_pid}  # by worker processes, not the launcher
    workers = {pid: counts[str(big)] for pid, counts in by_pid.items() if counts[str(big)]}
    assert len(workers) >= 2, f"records of one file were tokenized by a single process: {workers}"
    assert min(workers.values()) >= N_BIG // 10, workers  # a real share each, not a stray batch
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["written"] == N_BIG


def test_without_the_reshuffle_one_file_stays_on_one_worker(tmp_path, spy, monkeypatch):
    """Control for the test above: the spread comes from ``SpreadRecords``, not from the runner."""
    import pipeline.engines.beam.graph
    from pipeline.engines.beam.sources import ReadRawRecords

    monkeypatch.setattr(pipeline.engines.beam.graph, "ReadRawRecords",
                        functools.partial(ReadRawRecords, spread_records=False))
    big = tmp_path / "one-big-file.jsonl"
    write_big_file(big, N_BIG)
    assert run_multi_processing(tmp_path, big, "out") == 0
    workers = {pid: c[str(big)] for pid, c in spy().items() if c[str(big)]}
    assert len(workers) == 1 and sum(workers.values()) == N_BIG, workers


# -- the default command (no --runner) chooses its mode from the input size ----------------------------

def run_default_command(args: list[str]) -> int:
    """``python -m pipeline`` exactly as a user types it: no runner flags at all."""
    from pipeline.launch.main import main

    return main(list(args))


@pytest.mark.parametrize("threshold,expected", [("1", "multi_processing"), (str(1 << 40), "in_memory")])
def test_default_command_chooses_its_mode_from_the_input_size(monkeypatch, threshold, expected):
    from pipeline.engines.beam.run import beam_args, default_running_mode
    from pipeline.launch.cli import parse_args

    monkeypatch.setenv("CHATSHARDS_PARALLEL_BYTES", threshold)
    inputs = [str(sample(relative)) for relative in INPUTS]
    mode, workers = default_running_mode(inputs)
    assert mode == expected
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: the default command always runs in one process")
    assert workers == (os.cpu_count() if expected == "multi_processing" else 1)
    args = beam_args(parse_args([a for i in inputs for a in ("--input", i)] + ["--output", "/tmp/unused"]))
    assert f"--direct_running_mode={expected}" in args and "--runner=FnApiRunner" in args
    # the user's choice is kept: an explicit mode or worker count is never overridden
    given = parse_args(["--input", inputs[0], "--output", "/tmp/unused", "--direct_num_workers=3"])
    assert "--direct_running_mode=in_memory" in beam_args(given)


def test_default_command_on_every_core_writes_the_in_memory_bytes(mode_outputs, tmp_path, monkeypatch, capsys):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: the default command always runs in one process")
    from pipeline.engines.beam.run import _choose_running_mode

    monkeypatch.setenv("CHATSHARDS_PARALLEL_BYTES", "1")  # these inputs count as large
    _choose_running_mode.cache_clear()  # decided (and said) once per process and input
    args = [arg for relative in INPUTS for arg in ("--input", str(sample(relative)))]
    out = tmp_path / "default"
    assert run_default_command([*args, "--num-shards", "3", "--max-length", "2048", "--output", str(out)]) == 0
    assert "worker processes (every core)" in capsys.readouterr().err
    assert tree_digest(out) == mode_outputs[("FnApiRunner", "in_memory")]
