"""Failures: retried bundles change nothing, a killed run leaves no dataset, re-runs never mix runs."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chatshards_testing import REPO, run_job, sample
from transforms import shard_format as sf

INPUTS = [
    "sharegpt/fastchat_dummy_conversation.json",
    "openai/openai_cookbook_toy_chat_fine_tuning.jsonl",
    "edge_cases/axolotl_conversation.missingturns.json",
    "edge_cases/qwen3vl_single_images_trailing_comma.json",
]


def input_args() -> list[str]:
    return [arg for relative in INPUTS for arg in ("--input", str(sample(relative)))]


def tree_digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


class TransientError(RuntimeError):
    """An injected, retryable failure (a preempted worker, a flaky disk, ...)."""


def first_attempt(markers: Path, key: str) -> bool:
    """True exactly once per ``key`` across threads and processes (an O_EXCL marker file)."""
    try:
        os.close(os.open(markers / hashlib.sha256(key.encode()).hexdigest(), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "out"
    assert run_job([*input_args(), "--output", str(out), "--num-shards", "3", "--runner=FnApiRunner"]) == 0
    return tree_digest(out)


def test_transient_failures_are_retried_without_duplicates_or_losses(tmp_path, monkeypatch, clean_run):
    """BuildRows fails on the first attempt of two batches (after emitting their rows) and
    WriteShards fails on its first attempt after writing the shard file; the runner retries those
    bundles and the output is byte-identical to a clean run: no row is lost or duplicated."""
    from pipeline.engines.beam.build import BuildRowsFn
    from pipeline.engines.beam.sink import WriteShardFn

    markers = tmp_path / "attempts"
    markers.mkdir()
    failures = {"tokenize": 0, "write": 0}
    tokenize, write = BuildRowsFn.process, WriteShardFn.process

    def flaky_tokenize(self, batch, selection=None):
        raw = batch[0][0]
        key = f"tokenize:{raw.source}:{raw.index}:{len(batch)}"
        # the first attempts of the first two batches (a bundle may hold several batches, and the runner
        # gives up after 4 attempts of one bundle)
        fail = failures["tokenize"] < 2 and first_attempt(markers, key)
        yield from tokenize(self, batch, selection)  # the rows of this batch are emitted ...
        if fail:  # ... then the bundle fails: the runner must discard them and retry
            failures["tokenize"] += 1
            raise TransientError(f"injected failure in the BuildRows bundle starting at {raw.index}")

    def flaky_write(self, element, num_shards):
        outputs = list(write(self, element, num_shards))  # the shard file is written (renamed into data/)
        if first_attempt(markers, f"write:{element[0]}"):
            failures["write"] += 1
            raise TransientError(f"injected failure after writing shard {element[0]}")
        yield from outputs

    monkeypatch.setattr(BuildRowsFn, "process", flaky_tokenize)
    monkeypatch.setattr(WriteShardFn, "process", flaky_write)
    out = tmp_path / "out"
    # BundleBasedDirectRunner retries a failed bundle (up to 4 attempts), like Dataflow does;
    # the FnApiRunner fails the job on the first error.
    assert run_job([*input_args(), "--output", str(out), "--num-shards", "3",
                    "--runner=BundleBasedDirectRunner"]) == 0
    assert failures["tokenize"] == 2 and failures["write"] == 3, failures
    assert tree_digest(out) == clean_run
    manifest = sf.load_manifest(str(out))
    rows = manifest["counts"]["written"]
    assert rows == sum(entry["rows"] for entry in manifest["shards"])
    assert manifest["counts"]["read"] == rows + manifest["counts"]["rejected"]


def test_a_failure_that_persists_fails_the_job_and_commits_nothing(tmp_path, monkeypatch, capsys):
    from pipeline.engines.beam.sink import WriteShardFn

    def always_fails(self, element, num_shards):
        raise TransientError("disk is gone")

    monkeypatch.setattr(WriteShardFn, "process", always_fails)
    out = tmp_path / "out"
    assert run_job([*input_args(), "--output", str(out), "--runner=BundleBasedDirectRunner"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("chatshards: error: the job failed: ") and "disk is gone" in err[-1], err
    assert not (out / sf.MANIFEST_NAME).exists()
    assert not (out / sf.DATA_DIR).exists() and not (out / ".tmp").exists()  # the run's partial files removed


# -- a run killed with SIGKILL ------------------------------------------------------------------------

DRIVER = textwrap.dedent('''
    """Runs the job; after the first shard is written, stalls forever (so it can be killed mid-write)."""
    import sys
    import time

    from pipeline.engines.beam import sink
    from pipeline.launch.main import main

    original = sink.WriteShardFn.process
    written = []

    def write_then_stall(self, element, num_shards):
        yield from original(self, element, num_shards)
        written.append(element[0])
        if len(written) == 1:
            time.sleep(3600)

    sink.WriteShardFn.process = write_then_stall
    sys.exit(main(sys.argv[1:]))
''')


def start_and_kill_after_first_shard(tmp_path: Path, args: list[str]) -> None:
    driver = tmp_path / "stalling_driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    out = Path(args[args.index("--output") + 1])
    pattern = f"shard-*-of-{int(args[args.index('--num-shards') + 1]):05d}.arrow"  # a shard of *this* run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, str(driver), *args, "--runner=FnApiRunner",
                                "--direct_running_mode=in_memory"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not list((out / sf.DATA_DIR).glob(pattern)):
            if process.poll() is not None:
                raise AssertionError(f"the job ended before writing a shard: {process.stderr.read()[-3000:]!r}")
            if time.monotonic() > deadline:
                raise AssertionError("no shard appeared within 300 s")
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def assert_not_a_dataset(out: Path) -> None:
    assert not (out / sf.MANIFEST_NAME).exists()
    with pytest.raises(sf.ManifestError, match="not a finished chatshards dataset"):
        sf.load_manifest(str(out))
    from transforms.runtime import ShardDataset

    with pytest.raises(sf.ManifestError):
        ShardDataset(str(out))


@pytest.mark.slow
def test_a_killed_run_leaves_no_manifest_and_a_rerun_replaces_it(tmp_path, capsys, clean_run):
    out = tmp_path / "out"
    args = [*input_args(), "--output", str(out), "--num-shards", "3"]
    start_and_kill_after_first_shard(tmp_path, args)
    assert list((out / sf.DATA_DIR).glob("shard-*.arrow")), "the kill came before any shard was written"
    assert_not_a_dataset(out)

    assert run_job(args) == 2  # a partial run is refused without --overwrite ...
    err = capsys.readouterr().err
    assert "partial run" in err and "--overwrite" in err
    assert run_job([*args, "--overwrite"]) == 0  # ... and replaced with it: no trace of the killed run
    assert tree_digest(out) == clean_run


@pytest.mark.slow
def test_overwrite_never_mixes_shards_of_two_runs(tmp_path, capsys):
    out = tmp_path / "out"
    first = [*input_args(), "--output", str(out), "--num-shards", "3"]
    assert run_job(first) == 0
    old = set(tree_digest(out))
    assert run_job(first) == 2 and "--overwrite" in capsys.readouterr().err  # refused, untouched
    assert set(tree_digest(out)) == old

    # an --overwrite run killed half-way: the old dataset is gone (its manifest first), nothing mixes
    second = [*input_args(), "--output", str(out), "--num-shards", "2", "--overwrite"]
    start_and_kill_after_first_shard(tmp_path, second)
    assert_not_a_dataset(out)
    shards = sorted(p.name for p in (out / sf.DATA_DIR).glob("*"))
    assert shards and all(name.endswith("-of-00002.arrow") for name in shards), shards

    # the finished --overwrite run equals a run into an empty folder, file for file
    assert run_job(second) == 0
    fresh = tmp_path / "fresh"
    assert run_job([*input_args(), "--output", str(fresh), "--num-shards", "2"]) == 0
    assert tree_digest(out) == tree_digest(fresh)
    manifest = json.loads((out / sf.MANIFEST_NAME).read_text())
    assert sorted(str(p.relative_to(out)) for p in (out / sf.DATA_DIR).iterdir()) == sorted(
        entry["path"] for entry in manifest["shards"])
