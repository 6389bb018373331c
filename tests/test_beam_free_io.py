"""The job's file layer on local paths works without Beam, and does what Beam's ``FileSystems`` did.

* a fresh process imports the file-layer modules, runs them on local temp paths (matching, atomic writes,
  listing, deleting, claiming an output folder, spilling a batch, parsing a job's command line) and never
  loads ``apache_beam``;
* :mod:`pipeline.io.globs` gives exactly what ``FileSystems.match`` gives for local patterns (same paths,
  spelling, order, sizes; the same regular expressions for any pattern text);
* each :mod:`pipeline.io.files` helper does on local paths what Beam's ``LocalFileSystem`` does.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.io import files
from pipeline.io.globs import StorageError, glob_regex, match, match_local, match_patterns
from pipeline.io.input_files import compression_of, storage_error_text
from pipeline.launch.checks import list_input_sizes
from pipeline.launch.cli import ConfigError
from transforms import shard_format as sf

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# no Beam in the process

NO_BEAM_SCRIPT = r'''
import gzip, json, os, sys
work = sys.argv[1]
import pipeline.io.files as files
import pipeline.io.globs as globs
import pipeline.launch.output_folder as output_folder
import pipeline.io.input_files as input_files
import pipeline.io.remote as remote
import pipeline.io.chunks as chunks
import pipeline.io.spill as spill
import pipeline.launch.cli as cli
import pipeline.launch.checks as checks
import pipeline.steps.manifest as manifest_step
from transforms.reading import RawRecord

inputs = os.path.join(work, "in")
os.makedirs(os.path.join(inputs, "sub"))
for name in ("a.jsonl", "b.jsonl", "sub/c.jsonl"):
    with open(os.path.join(inputs, name), "w") as handle:
        handle.write('{"messages": []}\n')
with gzip.open(os.path.join(inputs, "d.jsonl.gz"), "wb") as handle:
    handle.write(b'{"messages": []}\n')

sizes = checks.list_input_sizes([inputs + "/*.jsonl", inputs + "/**.gz"])
assert sorted(os.path.relpath(p, inputs) for p in sizes) == ["a.jsonl", "b.jsonl", "d.jsonl.gz"], sizes
assert input_files.expand_inputs([inputs + "/**"]) == sorted(p.path for p in globs.match(inputs + "/**"))
assert len(input_files.expand_inputs([inputs + "/**"])) == 4
with input_files.open_input(os.path.join(inputs, "d.jsonl.gz")) as stream:
    assert stream.read() == b'{"messages": []}\n'
assert input_files.launch_problem(os.path.join(inputs, "sub")).startswith("--input")
try:
    checks.list_input_sizes([inputs + "/*.parquet"])
except cli.ConfigError as exc:
    assert "matches no file" in str(exc)
else:
    raise AssertionError("no ConfigError")

out = os.path.join(work, "out")
output_folder.check_output_target(out)
output_folder.check_inputs_outside_output(out, [inputs + "/*.jsonl"], sorted(sizes))
try:
    output_folder.check_inputs_outside_output(out, [out + "/*"], [])
except cli.ConfigError:
    pass
else:
    raise AssertionError("an input glob matching the output was not refused")
lock = output_folder.OutputLock(out).acquire()
output_folder.prepare_output(out, overwrite=False, input_files=sorted(sizes))
assert output_folder.has_marker(out)

tmp = files.tmp_root(out)
target = files.join(out, "data", "shard-00000-of-00001.arrow")
files.write_atomically(target, b"first", tmp_root=tmp)
files.write_atomically(target, b"second", tmp_root=tmp)
assert files.read_bytes(target) == b"second"
with files.atomic_writer(files.join(out, "manifest.json"), tmp_root=tmp) as sink:
    sink.write(json.dumps({"format": "chatshards"}).encode())
assert files.list_tree(files.join(out, "data")) == [target]

folder = chunks.store_folder(out, chunks.SPILL)
batch = [RawRecord("x.jsonl", i, {"n": i}, raw="{}") for i in range(5)]
refs = list(spill.spill_batches([batch, batch[:2]], folder=folder))
assert [spill.read_spilled(ref) for ref in refs] == [batch, batch[:2]]
assert len(files.list_tree(folder)) == 1

manifest_step.check_folder_holds_exactly(out, ["data/shard-00000-of-00001.arrow"], [])
files.delete_tree(tmp)
assert not files.path_present(tmp)
try:
    output_folder.prepare_output(out, overwrite=False)
except output_folder.OutputExists:
    pass
else:
    raise AssertionError("a dataset was not refused without --overwrite")
output_folder.prepare_output(out, overwrite=True)
assert not files.exists(target) and not files.exists(files.join(out, "manifest.json"))
lock.release()

template = os.path.join(work, "t.jinja")
with open(template, "w") as handle:
    handle.write("{{ messages }}")
assert remote.read_text(template) == "{{ messages }}"

job = cli.parse_args(["--input", inputs + "/*.jsonl", "--output", out, "--max-length", "64", "--overwrite"])
assert job.output == out and job.beam_args == ()
beam = sorted(name for name in sys.modules if name == "apache_beam" or name.startswith("apache_beam."))
assert not beam, beam
print("no beam")
'''


def test_file_layer_runs_on_local_paths_without_importing_beam(tmp_path):
    result = subprocess.run([sys.executable, "-c", NO_BEAM_SCRIPT, str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("no beam")


# ---------------------------------------------------------------------------------------------
# matching: the same as FileSystems.match

TREE = {
    "a.jsonl": 10, "b.jsonl": 20, "ab.json": 3, "ba.json": 4, "c.txt": 5, ".hidden.jsonl": 6, "x1": 1, "x2": 2,
    "d/e.jsonl": 7, "d/f.json": 8, "d/.g.json": 9, "d/deep/h.json": 11, "d/deep/deeper/i.jsonl": 12,
    "d e/space.jsonl": 13, "br[1]/k.jsonl": 14, "empty/.keep": 0,
}


@pytest.fixture()
def tree(tmp_path, monkeypatch):
    """A temp tree (files of known sizes, a folder symlink, a broken symlink); cwd is its parent."""
    root = tmp_path / "t"
    for name, size in TREE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    (root / "linked").symlink_to(root / "d", target_is_directory=True)
    (root / "broken.jsonl").symlink_to(root / "missing.jsonl")
    (root / "nothing").mkdir()
    monkeypatch.chdir(tmp_path)
    return root


def beam_match(pattern: str) -> list[tuple[str, int]]:
    return [(m.path, m.size_in_bytes) for m in FileSystems.match([pattern])[0].metadata_list]


def local_match(pattern: str) -> list[tuple[str, int]]:
    return [(info.path, info.size) for info in match_local(pattern)]


PATTERNS = [
    "*.jsonl", "**", "**.json", "d/**/*.json", "d/**", "d/*", "?.jsonl", "x?", "[ab]*", "[!a]*", "[ab].jsonl",
    "[!a]b.json", "d/", "d", "a.jsonl", "missing.jsonl", "missing/*", "d/deep/*/*.jsonl", ".*", "*",
    "d e/*.jsonl", "br[1]/*", "br[[]1]/*", "**/.*", "*/", "empty/*", "nothing/*", "linked/*", "broken.jsonl",
    "*.JSONL", "**/h.json", "d/**.json", "[]]*", "[!]]*", "[a-b]*", "x[12]", "a.jsonl/", "d\\",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_local_matching_equals_beam_relative_and_absolute(tree, pattern):
    for spelled in (f"t/{pattern}", f"./t/{pattern}", f"{tree}/{pattern}", pattern):
        assert local_match(spelled) == beam_match(spelled), spelled


def test_bare_relative_glob_matches_nothing_as_in_beam(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert local_match("*.jsonl") == beam_match("*.jsonl") == []  # Beam lists the folder "" : nothing
    assert local_match("a.jsonl") == beam_match("a.jsonl") == [("a.jsonl", 10)]
    assert local_match("d/*.jsonl") == beam_match("d/*.jsonl") == [("d/e.jsonl", 7)]


_PIECES = st.sampled_from(["a", "b", "d", "deep", ".", "/", "*", "**", "?", "[ab]", "[!a]", "[", "]", "!", "json",
                           "jsonl", "x", "1", "e", "-", "^", "\\"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(_PIECES, max_size=8))
def test_generated_patterns_match_like_beam(tree, pieces):
    pattern = f"{tree}/" + "".join(pieces)
    try:
        expected = beam_match(pattern)
    except BeamIOError as exc:  # e.g. a class "[b-a]": the same failure, the same one-line text
        with pytest.raises(StorageError) as raised:
            local_match(pattern)
        assert storage_error_text(raised.value) == storage_error_text(exc)
        return
    assert local_match(pattern) == expected


@settings(max_examples=2000, deadline=None)
@given(pattern=st.text(alphabet=st.sampled_from("ab*?[]!^-\\/.x{}()$|+é"), max_size=16) | st.text(max_size=12))
def test_glob_regex_is_beams_translate_pattern(pattern):
    assert glob_regex(pattern) == FileSystem.translate_pattern(pattern)


def test_remote_patterns_still_go_through_beam(tmp_path):
    with pytest.raises(ValueError, match="Unable to get filesystem"):
        match("nosuchscheme://bucket/*.jsonl")
    local = tmp_path / "a.jsonl"
    local.write_text("{}\n")
    assert [[(i.path, i.size) for i in found] for found in match_patterns([str(local)])] == [[(str(local), 3)]]


def test_list_input_sizes_errors_like_before(tree):
    with pytest.raises(ConfigError, match=r"--input 't/\*\.parquet' matches no file"):
        list_input_sizes(["t/*.jsonl", "t/*.parquet"])
    with pytest.raises(BeamIOError) as beam_error:
        FileSystems.match(["t/[b-a]*"])
    with pytest.raises(ConfigError) as ours:
        list_input_sizes(["t/[b-a]*"])
    assert str(ours.value) == f"--input cannot be listed: {storage_error_text(beam_error.value)}"
    sizes = list_input_sizes(["t/*.jsonl", "t/d/**", "t/a.jsonl"])
    expected = {}
    for result in FileSystems.match(["t/*.jsonl", "t/d/**", "t/a.jsonl"]):
        expected.update((m.path, m.size_in_bytes) for m in result.metadata_list)
    assert list(sizes.items()) == list(expected.items())


@pytest.mark.parametrize("name", ["a.gz", "a.GZ", "a.jsonl.bz2", "a.deflate", "a.zst", "a.ZSTD", "a.xz",
                                  "a.lzma", "a.jsonl", "a.zip", "gz", "a.tgz", "a.gz.jsonl", "", "a.Bz2"])
def test_compression_by_name_is_beams(name):
    beam = CompressionTypes.detect_compression_type(name)
    assert compression_of(name) == (None if beam == CompressionTypes.UNCOMPRESSED else beam)


# ---------------------------------------------------------------------------------------------
# files.py helpers against LocalFileSystem, on the same temp tree

def test_join_is_os_path_join():
    for parts in (("a", "b"), ("/a/", "b", "c.json"), ("a", "/abs"), ("", "x"), ("a",)):
        assert files.join(*parts) == FileSystems.join(*parts) == os.path.join(*parts)


def test_create_makes_missing_folders_like_beam(tmp_path):
    ours, beams = tmp_path / "ours/x/y/f.bin", tmp_path / "beam/x/y/f.bin"
    with files.create(str(ours)) as handle:
        handle.write(b"data.gz is not compressed")
    with FileSystems.create(str(beams), compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(b"data.gz is not compressed")
    assert ours.read_bytes() == beams.read_bytes()
    gz = tmp_path / "f.gz"  # no compression whatever the name
    with files.create(str(gz)) as handle:
        handle.write(b"raw")
    assert gz.read_bytes() == b"raw" and files.read_bytes(str(gz)) == b"raw"


def test_exists_on_file_folder_missing(tree):
    for path in ("t/a.jsonl", "t/d", "t/d/", "t/missing", str(tree / "d/deep"), "t/broken.jsonl", "t/linked", ""):
        assert files.exists(path) == FileSystems.exists(path), path


def test_rename_over_an_existing_file(tmp_path):
    for who, rename in (("ours", files.rename), ("beam", lambda a, b: FileSystems.rename([a], [b]))):
        source, target = tmp_path / f"{who}.src", tmp_path / f"{who}.dst"
        source.write_bytes(b"new")
        target.write_bytes(b"old")
        rename(str(source), str(target))
        assert target.read_bytes() == b"new" and not source.exists()
    with pytest.raises(StorageError) as ours:
        files.rename(str(tmp_path / "gone"), str(tmp_path / "x"))
    with pytest.raises(BeamIOError) as beams:
        FileSystems.rename([str(tmp_path / "gone")], [str(tmp_path / "x")])
    assert _details(ours.value) == _details(beams.value)


def _details(error) -> list[tuple]:
    """``(path, cause text)`` of a storage error (Beam re-raises a local ``OSError`` as a plain ``OSError``
    around it; here the cause keeps its own type, e.g. ``FileNotFoundError``, with the same text)."""
    return [(path, str(cause)) for path, cause in error.exception_details.items()]


def test_delete_folder_file_and_missing(tmp_path):
    for who, delete in (("ours", files.delete), ("beam", FileSystems.delete)):
        base = tmp_path / who
        (base / "f/g").mkdir(parents=True)
        (base / "f/g/h.txt").write_text("x")
        (base / "file.txt").write_text("x")
        delete([str(base / "f"), str(base / "file.txt")])
        assert sorted(os.listdir(base)) == []
    with pytest.raises(StorageError) as ours:
        files.delete([str(tmp_path / "missing")])
    with pytest.raises(BeamIOError) as beams:
        FileSystems.delete([str(tmp_path / "missing")])
    assert _details(ours.value) == _details(beams.value)
    assert "No files found to delete" in str(ours.value)
    with pytest.raises(TypeError):
        files.delete(str(tmp_path / "x"))


def test_delete_takes_paths_literally(tmp_path):
    """Beam matches a path to delete as a glob; a local path here is only ever itself."""
    (tmp_path / "a1").write_text("keep")
    (tmp_path / "a[1]").write_text("delete")
    files.delete([str(tmp_path / "a[1]")])
    assert sorted(os.listdir(tmp_path)) == ["a1"]


def test_list_tree_equals_beams_listing(tree):
    for folder in ("t", "t/", "t/d", "./t/d", str(tree), "t/missing", "t/a.jsonl", "t/nothing", "t/linked"):
        try:
            beam = sorted(m.path for m in FileSystems.match([folder.rstrip("/") + "/**"])[0].metadata_list)
        except BeamIOError:
            beam = []
        assert files.list_tree(folder) == beam, folder


def test_publish_delete_tree_and_ensure_dir(tmp_path):
    out = tmp_path / "out"
    target = str(out / "deep/er/file.json")
    files.write_atomically(target, b"1", tmp_root=str(out / ".tmp"))
    files.write_atomically(target, b"22", tmp_root=str(out / ".tmp"))
    assert Path(target).read_bytes() == b"22" and os.listdir(out / ".tmp") == []
    folder_in_the_way = out / "data.json"
    (folder_in_the_way / "x").mkdir(parents=True)
    files.write_atomically(str(folder_in_the_way), b"{}", tmp_root=str(out / ".tmp"))
    assert folder_in_the_way.read_bytes() == b"{}"
    files.ensure_dir(str(out / "a/b/c"))
    files.ensure_dir(str(out / "a/b/c"))
    assert (out / "a/b/c").is_dir()
    assert files.path_present(str(out / "a")) and not files.path_present(str(out / "none"))
    files.delete_tree(str(out / "deep"))
    files.delete_tree(str(out / "none"))
    files.delete_tree(str(out / "data.json"))
    assert sorted(os.listdir(out)) == [".tmp", "a"]


def test_storage_errors_name_what_can_be_raised():
    assert StorageError in files.storage_errors() and BeamIOError in files.storage_errors()
    error = StorageError("Delete operation failed", {"p": FileNotFoundError("x")})
    assert storage_error_text(error) == "p: FileNotFoundError: x"


def test_manifest_check_reads_local_json(tmp_path):
    from pipeline.launch.output_folder import _manifest_is_ours

    (tmp_path / "manifest.json").write_text(json.dumps({"format": sf.FORMAT_NAME}))
    assert _manifest_is_ours(str(tmp_path))
    (tmp_path / "manifest.json").write_bytes(gzip.compress(b"{}"))
    assert not _manifest_is_ours(str(tmp_path))


def test_list_tree_takes_the_folder_literally(tree):
    """Beam lists ``folder/**`` as a glob (a folder named ``br[1]`` would list ``br1``); here it is the folder."""
    assert files.list_tree(str(tree / "br[1]")) == [str(tree / "br[1]" / "k.jsonl")]
    assert files.path_present(str(tree / "br[1]"))
    files.delete_tree(str(tree / "br[1]"))
    assert not (tree / "br[1]").exists() and (tree / "a.jsonl").exists()
