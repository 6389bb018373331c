"""``python -m pipeline.audit`` and ``python -m pipeline.inspect`` open a dataset's files by the paths its
manifest lists: neither may follow one outside the dataset folder (``..``, an absolute path, or a
symbolic link pointing out), for shards and rejected files alike, nor read a file twice."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from chatshards_testing import run_job
from transforms import shard_format as sf


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("paths")
    records = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
               for i in range(4)]
    (base / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"messages": 3}\n')
    assert run_job(["--input", str(base / "in.jsonl"), "--output", str(base / "ds"), "--num-shards", "2"]) == 0
    return base / "ds"


def variant(dataset, tmp_path, change):
    root = tmp_path / "copy"
    shutil.copytree(dataset, root)
    manifest = json.loads((root / sf.MANIFEST_NAME).read_text())
    change(manifest, root)
    (root / sf.MANIFEST_NAME).write_text(json.dumps(manifest))
    return root


def outside_file(tmp_path, source) -> str:
    target = tmp_path / "elsewhere" / source.name
    target.parent.mkdir()
    shutil.copy(source, target)  # a valid file, but not the dataset's
    return str(target)


def shard_link_out(manifest, root):
    first = root / manifest["shards"][0]["path"]
    os.symlink(outside_file(root.parent, first), root / "data" / "link.arrow")
    manifest["shards"][0]["path"] = "data/link.arrow"


def rejected_link_out(manifest, root):
    first = root / manifest["rejected_files"][0]["path"]
    os.symlink(outside_file(root.parent, first), root / "rejected" / "link.jsonl")
    manifest["rejected_files"][0]["path"] = "rejected/link.jsonl"


def rejected_dotdot(manifest, root):
    manifest["rejected_files"][0]["path"] = "../../elsewhere.jsonl"


def shard_twice_through_a_link(manifest, root):
    os.symlink(root / manifest["shards"][0]["path"], root / "data" / "again.arrow")
    manifest["shards"][1]["path"] = "data/again.arrow"
    manifest["shards"][1].update({k: manifest["shards"][0][k] for k in ("rows", "bytes", "sha256", "tokens")})
    manifest["counts"]["written"] = 2 * manifest["shards"][0]["rows"]


@pytest.mark.parametrize("change,message", [
    (shard_link_out, "shard 'data/link.arrow' resolves to"),
    (rejected_link_out, "rejected file 'rejected/link.jsonl' resolves to"),
    (rejected_dotdot, "'../../elsewhere.jsonl' leaves the dataset folder"),
    (shard_twice_through_a_link, "are the same file"),
], ids=["shard-link-out", "rejected-link-out", "rejected-dotdot", "shard-twice"])
@pytest.mark.parametrize("tool", ["audit", "inspect"])
def test_audit_and_inspect_refuse_manifest_paths_leading_out(dataset, tmp_path, capsys, change, message, tool):
    from pipeline.audit import main as audit
    from pipeline.inspect import main as inspect

    root = variant(dataset, tmp_path, change)
    before = sorted(p.name for p in (root / "audit").iterdir())
    code = audit([str(root), "--quiet"]) if tool == "audit" else inspect([str(root), "--n", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"chatshards {tool}: error:" in err and message in err and "Traceback" not in err
    assert sorted(p.name for p in (root / "audit").iterdir()) == before  # nothing written


def test_links_inside_the_folder_still_work(dataset, tmp_path, capsys):
    from pipeline.audit import main as audit
    from pipeline.inspect import main as inspect

    def inside_link(manifest, root):
        os.rename(root / manifest["shards"][0]["path"], root / "data" / "real.arrow")
        os.symlink("real.arrow", root / manifest["shards"][0]["path"])

    root = variant(dataset, tmp_path, inside_link)
    assert audit([str(root), "--check", "--quiet"]) == 0, capsys.readouterr().err
    assert inspect([str(root), "--n", "1"]) == 0, capsys.readouterr().err
