"""Throughput of the preprocessing job versus the common recipe and the tokenizer ceiling.

Same input (real records from ../shared/data, repeated to --records), same real-vocabulary tokenizer
(the bundled Qwen2 BPE), same machine, same run:

* chatshards: ``python -m pipeline`` (DirectRunner, multi_processing, 2 workers), wall time of the
  whole command (start-up, tokenizer load, read, write and manifest included);
* recipe: ``datasets.Dataset.map(tokenizer.apply_chat_template(..., return_assistant_tokens_mask=True),
  num_proc=2)`` on the same conversations (already converted to ``messages``, which favours the recipe),
  using the same vocabulary with a generation-marked ChatML template so its mask is meaningful;
* ceiling: the tokenizer's own ``encode_batch`` on the pre-rendered texts (rendering excluded).

Prints records/s, tokens/s and the ratios, end to end. With ``--small M`` (default 4000) the job and
the recipe also run on the first M records, and the steady rate ``(N - M) / (t_N - t_M)`` (fixed
start-up costs removed) is printed for both: the job pays a larger fixed cost (Beam, worker
processes, the tokenizer in each) than the recipe, so the end-to-end ratio grows with N.

Usage::

    python benchmarks/bench_job.py [--records 40000] [--small 4000] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from real_data import REPO, SHARED, SOURCES  # noqa: E402 (benchmarks/ is on sys.path)

sys.path.insert(0, str(REPO))


def build_input(folder: Path, records: int):
    """Write ``records`` real records (repeated) as JSON Lines; return the converted conversations too."""
    from transforms.formats import FormatOptions, to_conversation
    from transforms.reading import iter_raw_records_from_path

    base = []
    for relative in SOURCES:
        base += [raw.value for raw in iter_raw_records_from_path(str(SHARED / relative)) if raw.value is not None]
    values = [base[i % len(base)] for i in range(records)]
    per_file = max(1, records // 4)
    for part in range(0, records, per_file):
        with open(folder / f"part-{part // per_file:03d}.jsonl", "w", encoding="utf-8") as handle:
            for value in values[part: part + per_file]:
                handle.write(json.dumps(value, ensure_ascii=False) + "\n")
    conversations = []
    for value in values:
        conv = to_conversation(value, FormatOptions())
        # JSON text columns: tool-call arguments are heterogeneous, which Arrow columns cannot hold
        conversations.append({"messages": json.dumps([dict(m) for m in conv.messages]),
                              "tools": json.dumps(list(conv.tools)) if conv.tools else ""})
    return conversations


def run_chatshards(folder: Path, out: Path, workers: int) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "pipeline", "--input", str(folder / "*.jsonl"), "--output", str(out),
           "--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    started = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return seconds, json.loads((out / "manifest.json").read_text())


def _recipe_map(example):
    from transforms.tokenizer_loading import bundled_tokenizer, read_template

    global _TOKENIZER
    if "_TOKENIZER" not in globals():
        _TOKENIZER = bundled_tokenizer(chat_template=read_template("chatml_generation.jinja"))
    tools = json.loads(example["tools"]) if example["tools"] else None
    out = _TOKENIZER.apply_chat_template(json.loads(example["messages"]), tools=tools, tokenize=True, return_dict=True,
                                         return_assistant_tokens_mask=True)
    labels = [t if m else -100 for t, m in zip(out["input_ids"], out["assistant_masks"])]
    return {"input_ids": out["input_ids"], "labels": labels, "length": len(out["input_ids"])}


def run_recipe(conversations, workers: int) -> tuple[float, int]:
    import datasets

    datasets.disable_progress_bars()
    datasets.disable_caching()
    started = time.perf_counter()
    ds = datasets.Dataset.from_list(conversations)
    ds = ds.map(_recipe_map, num_proc=workers, remove_columns=["messages", "tools"])
    tokens = int(sum(ds["length"]))
    return time.perf_counter() - started, tokens


def run_ceiling(conversations) -> tuple[float, int]:
    from transforms.chat_render import ChatRenderer
    from transforms.tokenizer_loading import bundled_tokenizer, special_tokens_for_template

    tokenizer = bundled_tokenizer()
    renderer = ChatRenderer(chat_template=tokenizer.chat_template,
                            template_variables=special_tokens_for_template(tokenizer))
    texts = [renderer.render_text(json.loads(c["messages"]), tools=json.loads(c["tools"]) if c["tools"] else None)
             for c in conversations]
    backend = tokenizer.backend_tokenizer
    started = time.perf_counter()
    tokens = 0
    for start in range(0, len(texts), 1024):
        tokens += sum(len(e.ids) for e in backend.encode_batch(texts[start:start + 1024], add_special_tokens=False))
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=40000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small", type=int, default=4000, help="also run on this many records (0: skip)")
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit("../shared/data is needed for this benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        conversations = build_input(folder, args.records)
        job_s, manifest = run_chatshards(folder, Path(tmp) / "out", args.workers)
        recipe_s, recipe_tokens = run_recipe(conversations, args.workers)
        ceiling_s, ceiling_tokens = run_ceiling(conversations)
        steady = None
        if 0 < args.small < args.records:
            small = Path(tmp) / "small"
            small.mkdir()
            small_conversations = build_input(small, args.small)
            job_small_s, _ = run_chatshards(small, Path(tmp) / "out-small", args.workers)
            recipe_small_s, _ = run_recipe(small_conversations, args.workers)
            extra = args.records - args.small
            steady = (extra / max(job_s - job_small_s, 1e-9), extra / max(recipe_s - recipe_small_s, 1e-9),
                      job_small_s, recipe_small_s)
    n = args.records
    job_tokens = manifest["totals"]["tokens"]
    rows = [
        ("chatshards job (wall, all included)", job_s, job_tokens),
        (f"datasets.map recipe (num_proc={args.workers})", recipe_s, recipe_tokens),
        ("encode_batch ceiling (pre-rendered)", ceiling_s, ceiling_tokens),
    ]
    print(f"input: {n} records from {len(SOURCES)} real files; job wrote {manifest['counts']['written']} rows, "
          f"rejected {manifest['counts']['rejected']}")
    for name, seconds, tokens in rows:
        print(f"{name:42s} {seconds:8.2f} s  {n / seconds:10.0f} records/s  {tokens / seconds:12.0f} tokens/s")
    print(f"ratio job / recipe  (records/s): {recipe_s / job_s:.2f}x")
    print(f"ratio job / ceiling (records/s): {ceiling_s / job_s:.2f}  (target >= 0.60)")
    if steady:
        job_rate, recipe_rate, job_small_s, recipe_small_s = steady
        print(f"steady rate (records {args.small}..{n}, fixed costs removed): job {job_rate:.0f} records/s, "
              f"recipe {recipe_rate:.0f} records/s, ratio {job_rate / recipe_rate:.2f}x; on {args.small} records: "
              f"job {job_small_s:.1f} s, recipe {recipe_small_s:.1f} s")


if __name__ == "__main__":
    main()
