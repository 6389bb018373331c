"""Issue 19, data safety: hostile paths, characters, caches, readers, huge arrays and hand-edited manifests.

Every case runs against real files in a temp folder (symbolic links, hard links, a bind mount where the test
may make one, corrupted cache files, cut Parquet files, edited manifests). Memory figures are measured in
subprocesses (``ru_maxrss``).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatshards_testing import REPO, run_job
from transforms import shard_format as sf

PYTHON = sys.executable


def chat(i: int, text: str = "question") -> dict:
    return {"messages": [{"role": "user", "content": f"{text} {i}"}, {"role": "assistant", "content": f"answer {i}"}]}


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def job_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


# -- 1. --overwrite never deletes an input, however the paths are spelled ---------------------------------

@pytest.fixture()
def previous_run(tmp_path):
    """``out/prev``: a finished run with one rejected record (its rejected file is the hostile input)."""
    data = write_jsonl(tmp_path / "in.jsonl", [chat(0), {"not": "a chat"}])
    prev = tmp_path / "out" / "prev"
    assert run_job(["--input", str(data), "--output", str(prev)]) == 0
    rejected = prev / sf.REJECTED_DIR / "rejected-00000-of-00001.jsonl"
    assert rejected.read_bytes()
    return prev, rejected


def _refused_and_kept(args, folder: Path, capsys, needle: str) -> None:
    before = files_under(folder)
    assert run_job(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert files_under(folder) == before


def test_overwrite_through_a_symlink_never_deletes_an_input(previous_run, capsys):
    """The issue's reproduction: out/prevlink -> out/prev; the input is prev's own rejected file."""
    prev, rejected = previous_run
    link = prev.parent / "prevlink"
    link.symlink_to(prev.name)
    where = "lies where the job writes its output"
    _refused_and_kept(["--input", str(rejected), "--output", str(link), "--overwrite"], prev, capsys, where)
    # the other way round, through `..`, and through a symlinked parent folder
    _refused_and_kept(["--input", str(link / "rejected" / rejected.name), "--output", str(prev), "--overwrite"],
                      prev, capsys, where)
    dotted = prev.parent / "elsewhere" / ".." / "prevlink"
    (prev.parent / "elsewhere").mkdir()
    _refused_and_kept(["--input", str(rejected), "--output", str(dotted), "--overwrite"], prev, capsys, where)
    parent_link = prev.parent.parent / "outlink"
    parent_link.symlink_to(prev.parent)
    _refused_and_kept(["--input", str(parent_link / "prev" / "rejected" / "*.jsonl"), "--output", str(link),
                       "--overwrite"], prev, capsys, where)


def test_a_glob_through_a_symlink_that_would_match_the_output_is_refused(tmp_path, capsys):
    """``fresh/in.json`` is the input; ``freshlink/*.json`` would also match the manifest written into fresh."""
    fresh = tmp_path / "fresh"
    (fresh / "in.json").parent.mkdir()
    (fresh / "in.json").write_text(json.dumps([chat(0)]))
    link = tmp_path / "freshlink"
    link.symlink_to(fresh)
    _refused_and_kept(["--input", str(link / "*.json"), "--output", str(fresh)], fresh, capsys,
                      "would also match 'manifest.json'")


def test_a_hard_link_to_a_file_overwrite_deletes_is_refused(previous_run, tmp_path, capsys):
    """The input is the same file (same st_dev, st_ino) under another name outside the output."""
    prev, rejected = previous_run
    twin = tmp_path / "twin.jsonl"
    os.link(rejected, twin)
    _refused_and_kept(["--input", str(twin), "--output", str(prev), "--overwrite"], prev, capsys,
                      "which is an --input file; nothing was deleted")
    assert twin.read_bytes() == rejected.read_bytes()


def test_a_symlinked_data_folder_pointing_at_the_inputs_is_refused(tmp_path, capsys):
    """``out/data`` is a symbolic link to the folder the input lives in (named like a shard)."""
    inputs = tmp_path / "inputs"
    shard_named = write_jsonl(inputs / "shard-00000-of-00001.arrow", [chat(0)])
    data = write_jsonl(tmp_path / "in.jsonl", [chat(1)])
    out = tmp_path / "out"
    assert run_job(["--input", str(data), "--output", str(out)]) == 0
    shutil.rmtree(out / sf.DATA_DIR)
    (out / sf.DATA_DIR).symlink_to(inputs)
    before = shard_named.read_bytes()
    assert run_job(["--input", str(shard_named), "--output", str(out), "--overwrite", "--format", "openai"]) == 2
    assert "lies where the job writes its output" in capsys.readouterr().err
    assert shard_named.read_bytes() == before


def test_overwrite_through_a_bind_mount_never_deletes_an_input(previous_run, tmp_path):
    """A bind mount of out/prev (same files, no symbolic link anywhere): only (st_dev, st_ino) tell them apart.
    The mount is made in a private mount namespace (``unshare -m``), so nothing outlives the test."""
    prev, rejected = previous_run
    mount = tmp_path / "mnt"
    mount.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {prev} {mount}"], capture_output=True)
    if shutil.which("unshare") is None or probe.returncode != 0:
        pytest.skip(f"cannot make a bind mount here (unshare -m / mount --bind: {probe.stderr.decode()[-200:]!r})")
    before = files_under(prev)
    script = (f"mount --bind {prev} {mount} && exec {PYTHON} -m pipeline --input {rejected} --output {mount} "
              "--overwrite")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=job_env(),
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "lies where the job writes its output" in lines[0], lines
    assert files_under(prev) == before


def test_case_insensitive_spelling_is_caught_by_identity(previous_run, capsys):
    """On a case-insensitive filesystem ``OUT/Prev`` and ``out/prev`` are one folder; the comparison is by
    (st_dev, st_ino), so it holds there too. Run only where the temp folder is case-insensitive."""
    prev, rejected = previous_run
    other_case = prev.parent / "PREV"
    if not other_case.exists() or other_case.is_symlink():
        pytest.skip("the temp folder's filesystem is case-sensitive (ext4 casefold, vfat or APFS would be needed)")
    _refused_and_kept(["--input", str(rejected), "--output", str(other_case), "--overwrite"], prev, capsys,
                      "lies where the job writes its output")


# -- 2. every character reaches the tokenizer as it is --------------------------------------------------------

NONCHARACTERS = [chr(c) for c in range(0xFDD0, 0xFDF0)] + [chr(plane * 0x10000 + low)
                                                           for plane in range(17) for low in (0xFFFE, 0xFFFF)]
CATEGORIES = sorted({unicodedata.category(chr(c)) for c in range(0x110000)} - {"Cs"})


def _reference_ids(tokenizer, messages) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    return list(ids["input_ids"] if not isinstance(ids, list) else ids)


def _build_one(builder, record: dict, *, ensure_ascii: bool):
    """A record written to a JSONL line, read and built as the job does: ``(kind, row or rejection)``."""
    from transforms.reading import iter_records

    line = (json.dumps(record, ensure_ascii=ensure_ascii) + "\n").encode("utf-8")
    raws = list(iter_records(io.BytesIO(line + line), source="mem.jsonl"))  # two lines: the JSONL layout
    return builder.build_records(raws[:1])[0]


@pytest.fixture(scope="module")
def character_builders():
    """``{name: (tokenizer, {policy: RowBuilder})}``: the bundled tokenizer and two TRL templates."""
    import template_families as tf
    from transforms.config import TokenizeOptions
    from transforms.formats import FormatOptions
    from transforms.rows import RowBuilder
    from transforms.tokenizer_loading import bundled_tokenizer

    tokenizers = {"bundled": bundled_tokenizer()}
    for name in ("gemma3", "phi3"):
        family = tf.BY_NAME[name]
        if not tf.installed(family):
            continue
        # the family's tokens on the bundled vocabulary, in memory (saving and reloading costs seconds)
        tokenizer = tf.family_tokenizer_in_memory(family)
        tokenizers[name] = tokenizer
    return {name: (tokenizer, {policy: RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(),
                                                   tokenize_options=TokenizeOptions(control_tokens=policy))
                               for policy in ("text", "special", "reject")})
            for name, tokenizer in tokenizers.items()}


def _characters():
    """Text of 1-4 characters of one general category (every one but surrogates), or of noncharacters."""
    by_category = st.sampled_from(CATEGORIES).flatmap(
        lambda category: st.text(st.characters(categories=[category]), min_size=1, max_size=4))
    return st.one_of(by_category, st.text(st.sampled_from(NONCHARACTERS), min_size=1, max_size=3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(chars=_characters(), ensure_ascii=st.booleans(), policy=st.sampled_from(["text", "special", "reject"]))
def test_every_general_category_reaches_the_tokenizer_as_apply_chat_template(character_builders, chars,
                                                                              ensure_ascii, policy):
    messages = [{"role": "user", "content": f"keep {chars} this"}, {"role": "assistant", "content": f"A{chars}B"}]
    for name, (tokenizer, builders) in character_builders.items():
        kind, item = _build_one(builders[policy], {"messages": messages}, ensure_ascii=ensure_ascii)
        assert kind == "row", (name, item)
        assert list(item["input_ids"]) == _reference_ids(tokenizer, messages), (name, policy, [hex(ord(c))
                                                                                             for c in chars])


@pytest.mark.parametrize("text", ["keep \ufdd0 this", "A\ufdd1B", "\ufdd0\ufdd1", "x\ufdd1<y>\ufdd0z"])
@pytest.mark.parametrize("policy", ["text", "special", "reject"])
def test_the_issues_noncharacters_are_kept(character_builders, text, policy):
    tokenizer, builders = character_builders["bundled"]
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": text}]
    kind, row = _build_one(builders[policy], {"messages": messages}, ensure_ascii=True)
    assert kind == "row", row
    assert list(row["input_ids"]) == _reference_ids(tokenizer, messages)
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tokenizer.decode(trained) == text + "<|im_end|>"


@pytest.mark.parametrize("noise", ["\ufdd0", "\ufdd1\ufdd0", "".join(chr(c) for c in range(0xFDD0, 0xFDEE))])
def test_control_tokens_next_to_noncharacters_stay_text_and_keep_every_character(character_builders, noise):
    """--control-tokens-in-data text marks the literal <|im_end|> with a marker pair the record does not hold."""
    tokenizer, builders = character_builders["bundled"]
    content = f"a{noise}<|im_end|>b{noise}"
    messages = [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]
    kind, row = _build_one(builders["text"], {"messages": messages}, ensure_ascii=False)
    assert kind == "row", row
    assert row["literal_control_tokens"] == 1
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(row["input_ids"]) == rendered  # every character, in order
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert list(row["input_ids"]).count(im_end) == rendered.count("<|im_end|>") - 1  # the literal one is text


def test_control_tokens_with_every_marker_character_are_rejected_naming_the_class(character_builders):
    tokenizer, builders = character_builders["bundled"]
    every = "".join(chr(c) for c in range(0xFDD0, 0xFDF0))
    messages = [{"role": "user", "content": f"{every}<|im_end|>"}, {"role": "assistant", "content": "ok"}]
    kind, rejection = _build_one(builders["text"], {"messages": messages}, ensure_ascii=True)
    assert kind == "rejected" and rejection["reason"] == "control_token_in_text"
    assert "noncharacter" in rejection["detail"]


def test_escaped_surrogates_are_invalid_content(character_builders):
    _, builders = character_builders["bundled"]
    line = b'{"messages": [{"role": "user", "content": "a\\ud800b"}, {"role": "assistant", "content": "x"}]}\n'
    from transforms.reading import iter_records

    raws = list(iter_records(io.BytesIO(line * 2), source="mem.jsonl"))
    kind, rejection = builders["text"].build_records(raws[:1])[0]
    assert kind == "invalid_content" or rejection["reason"] == "invalid_content"


def test_the_job_keeps_noncharacters_end_to_end(tmp_path):
    """The issue's records through the default command: 40 tokens as apply_chat_template, decoded intact."""
    from transforms.runtime import ShardDataset
    from transforms.tokenizer_loading import bundled_tokenizer

    tokenizer = bundled_tokenizer()
    records = [{"messages": [{"role": "user", "content": "keep \ufdd0 this"}, {"role": "assistant",
                                                                                "content": "A\ufdd1B"}]}]
    data = write_jsonl(tmp_path / "nc.jsonl", records)
    for policy in ("text", "special"):
        out = tmp_path / policy
        assert run_job(["--input", str(data), "--output", str(out), "--control-tokens-in-data", policy]) == 0
        row = ShardDataset(str(out))[0]
        assert row["input_ids"].tolist() == _reference_ids(tokenizer, records[0]["messages"])
        assert "keep \ufdd0 this" in tokenizer.decode(row["input_ids"])


# -- 3 and 9. caches are verified: a damaged prepared tokenizer or bundled definition is rebuilt -------------

@pytest.fixture(scope="module")
def prepared_entry(tmp_path_factory):
    """A prepared-tokenizer cache entry of the bundled tokenizer, made once for the module (copied by
    :func:`private_cache`): ``(bundled definition file, entry folder)``."""
    from transforms import tokenizer_loading as tl

    source, _ = tl._bundled_backend()  # the default cache (converted once per machine)
    cache = tmp_path_factory.mktemp("prepared_cache")
    if source is not None:
        shutil.copy(source, cache / os.path.basename(source))
    saved = os.environ.get("CHATSHARDS_CACHE")
    os.environ["CHATSHARDS_CACHE"] = str(cache)
    tl._bundled_backend.cache_clear()
    try:
        tl.load_tokenizer(None, prepared=True)
    finally:
        if saved is None:
            del os.environ["CHATSHARDS_CACHE"]
        else:
            os.environ["CHATSHARDS_CACHE"] = saved
        tl._bundled_backend.cache_clear()
    (entry,) = (cache / "prepared").iterdir()
    return (cache / os.path.basename(source) if source else None), entry


@pytest.fixture()
def private_cache(tmp_path, monkeypatch, prepared_entry):
    """``$CHATSHARDS_CACHE`` pointing at a temp folder holding a copy of the bundled tokenizer's converted
    definition (so no test pays the 2.5 s conversion again) and of its prepared entry; in-process caches
    cleared."""
    from transforms import tokenizer_loading as tl

    definition, entry = prepared_entry
    cache = tmp_path / "cache"
    cache.mkdir()
    if definition is not None:
        shutil.copy(definition, cache / definition.name)
    shutil.copytree(entry, cache / "prepared" / entry.name)
    monkeypatch.setenv("CHATSHARDS_CACHE", str(cache))
    tl._bundled_backend.cache_clear()
    yield cache
    tl._bundled_backend.cache_clear()


def _swap_ids(backend_json: Path, first: str, second: str) -> None:
    definition = json.loads(backend_json.read_text(encoding="utf-8"))
    vocab = definition["model"]["vocab"]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    backend_json.write_text(json.dumps(definition, ensure_ascii=False), encoding="utf-8")


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.slow
def test_a_damaged_prepared_entry_is_rebuilt_with_one_warning(private_cache, caplog):
    """Two ids swapped in backend.json (the issue's case), then the vocab_hash edited in meta.json (what the
    manifest reports): each is caught by its checksum, said in one warning line, and prepared again."""
    from transforms.prepared_tokenizer import (
        BACKEND_FILE,
        META_FILE,
        DamagedEntry,
        PreparedTokenizer,
        load_prepared,
        read_prepared,
    )
    from transforms.tokenizer_loading import load_tokenizer

    text = "hello there, general kenobi"
    with caplog.at_level("WARNING", logger="chatshards"):
        clean = load_tokenizer(None, prepared=True)
    assert isinstance(clean, PreparedTokenizer) and not _warnings(caplog)
    expected, vocab_hash = clean.encode(text), clean.known_vocab_hash
    (entry,) = (private_cache / "prepared").iterdir()
    _swap_ids(entry / BACKEND_FILE, "hello", "Ġthere")
    with caplog.at_level("WARNING", logger="chatshards"):
        again = load_tokenizer(None, prepared=True)
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "damaged" in warnings[0] and "\n" not in warnings[0], warnings
    assert again.encode(text) == expected and again.known_vocab_hash == vocab_hash
    caplog.clear()
    with caplog.at_level("WARNING", logger="chatshards"):  # the rebuilt entry is trusted again, silently
        assert load_tokenizer(None, prepared=True).encode(text) == expected
    assert not _warnings(caplog)
    meta = json.loads((entry / META_FILE).read_text(encoding="utf-8"))
    meta["vocab_hash"] = "0" * 64
    (entry / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DamagedEntry, match="checksum"):
        read_prepared(str(entry))
    with caplog.at_level("WARNING", logger="chatshards"):
        assert load_prepared(str(entry), name_or_path="x") is None  # the caller then prepares it again
    assert len(_warnings(caplog)) == 1


@pytest.mark.slow
def test_the_job_over_a_corrupted_prepared_cache_writes_the_right_ids(private_cache, tmp_path):
    """The issue's case end to end: a swapped backend.json; the job warns in one line and writes the ids
    (and the vocab_hash) of a clean run."""
    from transforms.prepared_tokenizer import BACKEND_FILE
    from transforms.runtime import ShardDataset
    from transforms.tokenizer_loading import bundled_tokenizer, load_tokenizer

    clean = load_tokenizer(None, prepared=True)  # the private cache's entry, intact
    (entry,) = (private_cache / "prepared").iterdir()
    _swap_ids(entry / BACKEND_FILE, "hello", "Ġthere")
    messages = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hello"}]
    data = write_jsonl(tmp_path / "in.jsonl", [{"messages": messages}])
    out = tmp_path / "out"
    result = subprocess.run([PYTHON, "-m", "pipeline", "--input", str(data), "--output", str(out)],
                            capture_output=True, text=True, env=job_env(), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "prepared-tokenizer cache entry" in warnings[0], result.stderr
    reference = bundled_tokenizer().apply_chat_template(messages, tokenize=True)
    reference = list(reference["input_ids"] if not isinstance(reference, list) else reference)
    assert ShardDataset(str(out))[0]["input_ids"].tolist() == reference
    assert json.loads((out / sf.MANIFEST_NAME).read_text())["tokenizer"]["vocab_hash"] == clean.known_vocab_hash


@pytest.mark.slow
def test_a_truncated_bundled_definition_without_a_prepared_entry_is_converted_again(private_cache, tmp_path):
    """Item 9: $CHATSHARDS_CACHE/qwen2-bpe-*.json cut short, no prepared entry, no recorded digest: the job
    converts it again (one warning line) instead of a traceback."""
    shutil.rmtree(private_cache / "prepared")
    for digest in private_cache.glob("*.sha256"):
        digest.unlink()
    (cached,) = private_cache.glob("qwen2-bpe-*.json")
    cached.write_bytes(cached.read_bytes()[:100_000])
    data = write_jsonl(tmp_path / "in.jsonl", [chat(0)])
    result = subprocess.run([PYTHON, "-m", "pipeline", "--input", str(data), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, env=job_env(), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "is damaged" in result.stderr
    assert json.loads(cached.read_text(encoding="utf-8"))["model"]["type"] == "BPE"  # whole again
    assert (private_cache / (cached.name + ".sha256")).is_file()


def test_an_edited_bundled_definition_is_caught_by_its_recorded_digest(private_cache):
    """Valid JSON, two ids swapped, digest recorded: the check says so (without converting anything)."""
    from transforms import tokenizer_loading as tl

    (cached,) = private_cache.glob("qwen2-bpe-*.json")
    for digest in private_cache.glob("*.sha256"):
        digest.unlink()
    assert tl._bundled_file_problem(str(cached)) is None  # trusted on first use: loads, ids right, digest kept
    assert (private_cache / (cached.name + ".sha256")).is_file()
    _swap_ids(cached, "hello", "Ġthere")
    assert "does not match its recorded sha256" in tl._bundled_file_problem(str(cached))


# -- 4. a reader never mixes two runs ---------------------------------------------------------------------------

def _two_runs(tmp_path) -> tuple[Path, Path, Path]:
    old = write_jsonl(tmp_path / "old.jsonl", [chat(i, "old") for i in range(24)])
    new = write_jsonl(tmp_path / "new.jsonl", [chat(i, "brand new question") for i in range(24)])
    return old, new, tmp_path / "ds"


def _build(data: Path, out: Path, *extra: str) -> None:
    assert run_job(["--input", str(data), "--output", str(out), "--num-shards", "2", *extra]) == 0


@pytest.mark.slow
def test_a_dataset_rebuilt_under_an_open_reader_raises_instead_of_mixing_runs(tmp_path):
    import pickle

    import torch

    from transforms.runtime import DatasetChanged, ShardDataset

    old, new, out = _two_runs(tmp_path)
    _build(old, out)
    read_before = ShardDataset(str(out))
    first_row = read_before[0]["input_ids"].tolist()  # shard 0 mapped in this process
    built_before = ShardDataset(str(out))  # opened, never read
    _build(new, out, "--overwrite")
    # the main process keeps serving the pinned run from what it mapped (the old files live on while mapped)
    assert read_before[0]["input_ids"].tolist() == first_row
    # a shard it maps now, a dataset first read now, a pickled copy (spawn) and forked DataLoader workers: refused
    with pytest.raises(DatasetChanged, match="was rewritten"):
        read_before[len(read_before) - 1]
    with pytest.raises(DatasetChanged):
        built_before[0]
    with pytest.raises(DatasetChanged):
        pickle.loads(pickle.dumps(read_before))[0]
    loader = torch.utils.data.DataLoader(read_before, batch_size=None, num_workers=2, collate_fn=lambda row: row,
                                         multiprocessing_context="fork")
    with pytest.raises(DatasetChanged):
        list(loader)
    # opened again: the new run, whole
    fresh = ShardDataset(str(out))
    assert len(fresh) == 24 and all(len(fresh[i]["input_ids"]) for i in range(len(fresh)))


def test_the_pin_is_file_identity_so_reruns_stay_byte_identical(tmp_path):
    """Nothing about the pin is written into the output: two runs of the same job give the same bytes; the
    reader of the first refuses the second's files all the same (they are other files)."""
    from transforms.runtime import DatasetChanged, ShardDataset

    old, _, out = _two_runs(tmp_path)
    _build(old, out)
    first = files_under(out / sf.DATA_DIR)
    reader = ShardDataset(str(out))
    _build(old, out, "--overwrite")
    assert files_under(out / sf.DATA_DIR) == first
    with pytest.raises(DatasetChanged):
        reader[0]


# -- 6. one huge JSON array is streamed: memory stays flat -----------------------------------------------------

_PEAK_CHILD = r"""
import sys
def high_water_kib():
    # VmHWM, not ru_maxrss: ru_maxrss survives fork/exec, so a child of a large pytest would report the parent
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from transforms.reading import iter_raw_records_from_path
base = high_water_kib()
records = sum(1 for raw in iter_raw_records_from_path(sys.argv[1]) if raw.ok)
print(records, base, high_water_kib())
"""


def _write_layout(path: Path, mib: int, layout: str) -> int:
    record = json.dumps(chat(0, "q " * 400))
    count = mib * 2**20 // (len(record) + 2)
    with open(path, "w", encoding="utf-8") as handle:
        if layout == "jsonl":
            for _ in range(count):
                handle.write(record + "\n")
        else:
            separator = ",\n" if layout == "pretty array" else ","
            handle.write("[")
            for i in range(count):
                handle.write((separator if i else "") + record)
            handle.write("]")
    return count


def _peak_growth_mib(path: Path) -> tuple[int, float]:
    result = subprocess.run([PYTHON, "-c", _PEAK_CHILD, str(path)], capture_output=True, text=True, env=job_env(),
                            timeout=300)
    assert result.returncode == 0, result.stderr
    records, base, peak = map(int, result.stdout.split())
    return records, (peak - base) / 1024


@pytest.mark.slow
def test_peak_memory_against_input_size_is_flat_for_arrays_as_for_jsonl(tmp_path, capsys):
    """20 MiB and 80 MiB of the same records as JSON Lines, one single-line array and a pretty-printed array:
    the reader's peak memory above its imports does not grow with the input (before the streaming change, the
    single-line array took about 3.5 times its size)."""
    figures = {}
    for layout in ("jsonl", "array", "pretty array"):
        for mib in (20, 80):
            path = tmp_path / f"{layout.replace(' ', '_')}{mib}.json"
            count = _write_layout(path, mib, layout)
            records, growth = _peak_growth_mib(path)
            path.unlink()
            assert records == count
            figures[layout, mib] = growth
    with capsys.disabled():
        print("\npeak RSS above imports (MiB): " + ", ".join(f"{layout} {mib} MiB: {growth:.0f}"
                                                            for (layout, mib), growth in figures.items()))
    for layout in ("jsonl", "array", "pretty array"):
        assert figures[layout, 80] - figures[layout, 20] < 16, figures  # flat: 60 MiB more input, < 16 MiB more
        assert figures[layout, 80] < 64, figures


def _records_via(data: bytes, read_bytes: int, monkeypatch) -> list[tuple]:
    from transforms.reading import iter_records, json_layouts

    monkeypatch.setattr(json_layouts, "ARRAY_READ_BYTES", read_bytes)
    monkeypatch.setattr(json_layouts, "_DROP_CHARS", read_bytes)
    return [(r.index, r.value, r.raw, r.error, r.reason) for r in iter_records(io.BytesIO(data), source="s")]


def _hostile_array():
    value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                             st.sampled_from(["role", "content", "from", "value", "messages", "a"]), inner, max_size=3),
                         max_leaves=8)
    edits = st.lists(st.tuples(st.floats(0, 1), st.sampled_from([b",", b"}", b"{", b"]", b"\"", b"\\", b"\xff", b"\xc3",
                                                                  b"\n", b"", b"-", b"e"])), max_size=2)
    return st.tuples(st.lists(value, max_size=40), st.sampled_from([None, 1]), st.booleans(), st.floats(0, 1), edits)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_hostile_array())
def test_streamed_arrays_read_the_same_records_whatever_the_read_size(case, monkeypatch):
    """Arrays (valid, cut anywhere, bytes inserted or removed, trailing commas, bad UTF-8, text after ``]``)
    read a few bytes at a time give exactly the records of the same file read in one piece."""
    items, indent, trailing_comma, cut, edits = case
    data = json.dumps(items, indent=indent).encode("utf-8")
    if trailing_comma and items:
        data = data[:-1].rstrip() + b",]"
    data += b'\n{"after": 1}\n'
    for where, insert in edits:
        i = int(where * len(data))
        data = data[:i] + insert + data[i + (0 if insert else 1):]
    data = data[:max(1, int(len(data) * (0.5 + cut / 2)))]
    whole = _records_via(data, 1 << 30, monkeypatch)
    for read_bytes in (1, 7, 300):
        assert _records_via(data, read_bytes, monkeypatch) == whole


def test_a_cut_single_line_array_keeps_the_records_before_the_cut(tmp_path, monkeypatch):
    """A huge single-line array (longer than the first-line limit, so streamed) cut inside an element."""
    from transforms.reading import iter_raw_records_from_path, json_layouts

    monkeypatch.setattr(json_layouts, "FIRST_LINE_LIMIT", 64)
    monkeypatch.setattr(json_layouts, "ARRAY_READ_BYTES", 50)
    text = json.dumps([chat(i) for i in range(30)])
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) * 2 // 3])
    records = list(iter_raw_records_from_path(str(path)))
    assert [r.ok for r in records[:-1]] == [True] * (len(records) - 1) and len(records) > 10
    assert records[-1].reason == "truncated_input"


# -- 9. reason codes say what happened: cut Parquet and Arrow files ----------------------------------------------

def _columnar_bytes(kind: str) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"messages": [chat(i)["messages"] for i in range(600)]})
    sink = io.BytesIO()
    if kind == "parquet":
        pq.write_table(table, sink, row_group_size=100)
    else:
        writer = (pa.ipc.new_file if kind == "arrow_file" else pa.ipc.new_stream)(sink, table.schema)
        for batch in table.to_batches(max_chunksize=100):
            writer.write_batch(batch)
        writer.close()
    return sink.getvalue()


@pytest.mark.parametrize("kind", ["parquet", "arrow_file", "arrow_stream"])
def test_a_cut_columnar_file_is_truncated_input(kind):
    from transforms.reading import iter_records

    data = _columnar_bytes(kind)
    whole = list(iter_records(io.BytesIO(data), source=kind))
    assert len(whole) == 600 and all(r.ok for r in whole)
    for cut in (len(data) // 2, len(data) - 3):
        records = list(iter_records(io.BytesIO(data[:cut]), source=kind))
        assert records[-1].reason == "truncated_input" and "cut short" in records[-1].error, records[-1]
        assert all(r.ok for r in records[:-1])
        if kind != "parquet":  # Arrow keeps the rows before the cut; Parquet cannot be read without its footer
            assert len(records) - 1 >= (200 if cut == len(data) // 2 else 500)  # whole batches of 100 rows
    damaged = bytearray(data)  # whole length, garbage in the middle: unreadable, not truncated
    damaged[len(data) // 3: len(data) // 3 + 64] = b"\x00" * 64
    records = list(iter_records(io.BytesIO(bytes(damaged)), source=kind))
    assert all(r.ok or r.reason == "unreadable_input" for r in records)


def test_the_job_rejects_a_cut_parquet_file_as_truncated_input(tmp_path):
    data = _columnar_bytes("parquet")
    path = tmp_path / "half.parquet"
    path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    # no row can be written (a Parquet file cannot be read without its footer): exit 3, the dataset still written
    assert run_job(["--input", str(path), "--output", str(out)]) == 3
    assert json.loads((out / sf.MANIFEST_NAME).read_text())["rejected_by_reason"] == {"truncated_input": 1}


# -- 9. hand-edited manifests are refused as a whole --------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    data = write_jsonl(root / "in.jsonl", [chat(i) for i in range(30)] + [{"not": "a chat"}])
    out = root / "out"
    assert run_job(["--input", str(data), "--output", str(out), "--num-shards", "3"]) == 0
    return out


def _edited(finished: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(finished, copy)
    manifest = json.loads((copy / sf.MANIFEST_NAME).read_text())
    change(manifest)
    (copy / sf.MANIFEST_NAME).write_text(json.dumps(manifest))
    return copy


def _drop_last_shard(m):
    m["shards"].pop()


def _drop_last_shard_and_fix_the_counts(m):
    """A careful edit: every count, total and num_shards made to agree with the shards left."""
    dropped = m["shards"].pop()
    m["num_shards"] -= 1
    for key in ("read", "written", "rows"):
        m["counts"][key] -= dropped["rows"]
    for key in ("rows", "tokens", "loss_tokens"):
        m["totals"][key] -= dropped[key]


EDITS = [
    ("a shard entry dropped, its file left in data/", _drop_last_shard, "is not listed in the manifest"),
    ("the same with every count fixed", _drop_last_shard_and_fix_the_counts, "is not listed in the manifest"),
    ("counts.read set to 1", lambda m: m["counts"].update(read=1), "counts.read is 1"),
    ("a checksum zeroed", lambda m: m["shards"][0].update(sha256="0" * 64), "not a sha256 digest"),
    ("a checksum set to 0", lambda m: m["shards"][1].update(sha256=0), "not a sha256 digest"),
    ("a checksum that is not hex", lambda m: m["rejected_files"][0].update(sha256="xyz"), "not a sha256 digest"),
    ("pad_token_id nulled", lambda m: m["tokenizer"].update(pad_token_id=None), "pad_token_id is None"),
    ("pad_token_id removed", lambda m: m["tokenizer"].pop("pad_token_id"), "pad_token_id is missing"),
    ("vocab_hash removed", lambda m: m["tokenizer"].pop("vocab_hash"), "vocab_hash"),
    ("counts.rejected off by one", lambda m: m["counts"].update(rejected=2), "counts.rejected"),
    ("totals.tokens edited", lambda m: m["totals"].update(tokens=1), "totals.tokens"),
    ("num_shards edited", lambda m: m.update(num_shards=4), "num_shards"),
    ("a shard's rows edited", lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] + 1), "counts."),
]


@pytest.mark.parametrize("name, change, message", EDITS, ids=[e[0] for e in EDITS])
def test_hand_edited_manifests_are_refused_naming_the_problem(finished_dataset, tmp_path, name, change, message):
    from transforms.runtime import ManifestError, ShardDataset

    edited = _edited(finished_dataset, tmp_path, change)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(")):
        ShardDataset(str(edited))
    with pytest.raises(ManifestError, match=message.replace("(", r"\(")):
        sf.load_manifest(str(edited))


def test_the_unedited_manifest_is_accepted_everywhere(finished_dataset):
    from transforms.runtime import Collator, ShardDataset

    assert len(ShardDataset(str(finished_dataset), verify=True)) == 30
    Collator.from_manifest(str(finished_dataset))


@pytest.mark.parametrize("tool", ["audit", "inspect"])
def test_audit_and_inspect_refuse_an_edited_manifest_in_one_line(finished_dataset, tmp_path, tool):
    edited = _edited(finished_dataset, tmp_path, _drop_last_shard)
    args = [str(edited)] + (["--no-report"] if tool == "audit" else ["--n", "1"])
    result = subprocess.run([PYTHON, "-m", f"pipeline.{tool}", *args], capture_output=True, text=True,
                            env=job_env(), cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not listed in the manifest" in lines[0], lines
