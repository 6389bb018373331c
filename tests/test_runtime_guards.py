"""ShardDataset under hostile conditions (issue 11, item 8): thousands of shards under a low
``ulimit -n``, file-descriptor exhaustion, manifests whose shard paths leave the dataset folder,
duplicated shard entries."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from transforms import shard_format as sf
from transforms.runtime import ManifestError, ShardDataset
from transforms.runtime.dataset import default_max_open_shards
from transforms.runtime.synthetic import write_synthetic_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANY_SHARDS = 3000


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    lengths = 3 + np.arange(MANY_SHARDS) % 5
    write_synthetic_dataset(root, lengths=lengths, num_shards=MANY_SHARDS)
    return str(root)


def run_limited(code: str, *, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (this worktree's code) and return the finished process."""
    prelude = textwrap.dedent("""
        import errno, os, resource, sys
        import numpy as np
        from transforms.runtime import ManifestError, ShardDataset

        def open_fds():
            return len(os.listdir('/proc/self/fd'))

        def lower_nofile(soft):
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
@pytest.mark.parametrize("soft_limit", ["1024", "open_fds() + 4"])
def test_thousands_of_shards_under_low_ulimit(many_shards, soft_limit):
    """3,000 shards with ``ulimit -n 1024`` (and with only 4 descriptors to spare): every access
    works, nothing is reported corrupted, no descriptor stays open."""
    out = run_limited(f"""
        root = {many_shards!r}
        lower_nofile({soft_limit})
        before = open_fds()
        ds = ShardDataset(root)
        lengths = ds.lengths
        assert len(lengths) == {MANY_SHARDS}, len(lengths)
        for i in range(len(ds)):
            assert len(ds[i]['input_ids']) == lengths[i]
        assert sum(len(v) for v in ds.flat_values('labels')) == int(lengths.sum())
        ShardDataset(root, verify=True)
        assert len(ds._open) == {MANY_SHARDS}  # every shard mapped, yet:
        assert open_fds() <= before + 1, (before, open_fds())
        print('ok', resource.getrlimit(resource.RLIMIT_NOFILE)[0], open_fds() - before)
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok"), out.stdout


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_descriptor_exhaustion_is_not_reported_as_corruption(many_shards):
    """With every descriptor taken by other code, opening a shard raises OSError(EMFILE) saying the
    dataset is not damaged; once descriptors are free again the same object reads everything."""
    out = run_limited(f"""
        ds = ShardDataset({many_shards!r})
        lower_nofile(open_fds() + 16)
        hogs = []
        try:
            while True:
                hogs.append(open(os.devnull))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        try:
            ds.lengths
        except ManifestError as exc:
            sys.exit('reported as corrupted: ' + str(exc))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
            assert 'not damaged' in str(exc) and 'ulimit -n' in str(exc), str(exc)
            print('refused:', exc)
        else:
            sys.exit('no error while every descriptor was taken')
        for handle in hogs:
            handle.close()
        assert len(ds.lengths) == {MANY_SHARDS}
        print('ok')
    """)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok"), out.stdout


def test_default_bound_on_mapped_shards(tmp_path):
    assert 1 <= default_max_open_shards() <= 4096
    write_synthetic_dataset(tmp_path, num_rows=40, num_shards=8)
    ds = ShardDataset(tmp_path)
    assert ds.max_open_shards == default_max_open_shards()
    small = ShardDataset(tmp_path, max_open_shards=3)
    for i in range(len(small)):
        np.testing.assert_array_equal(small[i]["input_ids"], ds[i]["input_ids"])
        assert len(small._open) <= 3
    for bad in (0, -1, True):
        with pytest.raises(ValueError):
            ShardDataset(tmp_path, max_open_shards=bad)


# -- manifests that point outside the dataset folder, or list a shard twice --------------------

def edit_manifest(root, change) -> None:
    path = os.path.join(root, sf.MANIFEST_NAME)
    with open(path) as handle:
        manifest = json.load(handle)
    change(manifest)
    with open(path, "wb") as handle:
        handle.write(sf.manifest_bytes(manifest))


@pytest.fixture
def dataset(tmp_path):
    """A 2-shard dataset at tmp/ds and a valid shard file lying outside it at tmp/outside/."""
    root = tmp_path / "ds"
    write_synthetic_dataset(root, num_rows=20, num_shards=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(root / "data" / "shard-00001-of-00002.arrow", outside / "stolen.arrow")
    return str(root)


@pytest.mark.parametrize("path", [
    "../outside/stolen.arrow",           # a readable Arrow file outside: it used to be served
    "../../../etc/passwd",
    "data/../../outside/stolen.arrow",
    "..",
    "data/./shard-00001-of-00002.arrow",
    "data//shard-00001-of-00002.arrow",
    "data\\shard-00001-of-00002.arrow",
    "C:/data/shard.arrow",
    "",
])
def test_relative_escapes_are_refused(dataset, path):
    edit_manifest(dataset, lambda m: m["shards"][1].update(path=path))
    with pytest.raises(ManifestError, match="leaves the dataset folder|not a non-empty string"):
        ShardDataset(dataset)


def test_absolute_path_is_refused(dataset):
    absolute = os.path.abspath(os.path.join(dataset, "..", "outside", "stolen.arrow"))
    edit_manifest(dataset, lambda m: m["shards"][1].update(path=absolute))
    with pytest.raises(ManifestError, match="leaves the dataset folder"):
        ShardDataset(dataset)
    edit_manifest(dataset,
                  lambda m: m["shards"][1].update(path=os.path.join(dataset, "data", "shard-00001-of-00002.arrow")))
    with pytest.raises(ManifestError, match="leaves the dataset folder"):  # absolute even when inside
        ShardDataset(dataset)


def test_symlink_pointing_out_is_refused(dataset):
    shard = os.path.join(dataset, "data", "shard-00001-of-00002.arrow")
    os.remove(shard)
    os.symlink(os.path.join(dataset, "..", "outside", "stolen.arrow"), shard)
    with pytest.raises(ManifestError, match="outside the dataset folder"):
        ShardDataset(dataset)
    # a linked data folder that points out is refused the same way
    data = os.path.join(dataset, "data")
    shutil.move(data, os.path.join(dataset, "..", "outside", "data"))
    os.symlink(os.path.join(dataset, "..", "outside", "data"), data)
    with pytest.raises(ManifestError, match="outside the dataset folder"):
        ShardDataset(dataset)


def test_symlink_inside_the_folder_is_followed(dataset):
    shard = os.path.join(dataset, "data", "shard-00001-of-00002.arrow")
    os.rename(shard, os.path.join(dataset, "data", "real.arrow"))
    os.symlink("real.arrow", shard)
    assert len(ShardDataset(dataset, verify=True)) == 20


def test_duplicate_entry_is_refused(dataset):
    edit_manifest(dataset, lambda m: m["shards"].append(dict(m["shards"][0])))
    with pytest.raises(ManifestError, match="listed twice"):
        ShardDataset(dataset)


def test_duplicate_through_a_link_is_refused(dataset):
    alias = os.path.join(dataset, "data", "alias.arrow")
    os.symlink("shard-00000-of-00002.arrow", alias)
    edit_manifest(dataset, lambda m: m["shards"].append(dict(m["shards"][0], path="data/alias.arrow")))
    with pytest.raises(ManifestError, match="are the same file"):
        ShardDataset(dataset)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["counts"].update(written=21), "counts.written"),
    (lambda m: m["shards"][0].update(rows=-1), "not a count"),
    (lambda m: m["shards"][0].update(rows="10"), "not a count"),
    (lambda m: m["shards"][0].update(bytes=1.5), "not a count"),
    (lambda m: m.update(shards={"path": "x"}), "must be a list"),
])
def test_inconsistent_entries_are_refused(dataset, change, message):
    edit_manifest(dataset, change)
    with pytest.raises(ManifestError, match=message):
        ShardDataset(dataset)


def test_consistent_counts_are_accepted(dataset):
    edit_manifest(dataset, lambda m: m["counts"].update(written=20))
    assert len(ShardDataset(dataset)) == 20
