"""The job's tokenization step per record, whole-text encoding against segment-cached encoding.

Input: ``bench_job``'s short records (``build_input``), rendered by the job's chat task with the bundled
tokenizer saved as a user's folder (``save_bundled_tokenizer``). Two inputs are timed:

* ``base``: ``bench_job``'s ``base`` input (the base records repeated, copies after the first numbered: the base
  data's own repeated conversations and the copies' shared text are served by the cache);
* ``unique``: the same conversations with a record number appended to *every* message, so only what the
  template adds (system prompt, role headers, separators) repeats across records.

Base records from tests/data, or with ``--base-data shared`` from ../shared/data.

Timed per record (``time.process_time``, one thread: ``TOKENIZERS_PARALLELISM=false``, the minimum over
``--repeats``), in batches of ``--batch`` texts, with a fresh encoder per repeat: ``TextEncoder.encode``
plus what the chat task then reads (``ids`` as an array, ``span_token_ranges`` of the trained and turn spans).
The two encoders' results are compared (ids and ranges) before timing.

Usage::

    TOKENIZERS_PARALLELISM=false python benchmarks/bench_segment_encoding.py [--records 10000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from real_data import REPO  # noqa: E402 (benchmarks/ is on sys.path)

sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def rendered_rows(builder, folder: Path) -> list:
    """The job's rendered rows of the records in ``folder`` (``*.jsonl``)."""
    from transforms.reading import iter_raw_records_from_path
    from transforms.rows import PARSED, parse_records

    raws = [raw for path in sorted(folder.glob("*.jsonl")) for raw in iter_raw_records_from_path(str(path))]
    parsed = [item for kind, item in parse_records(raws, builder.format_options) if kind == PARSED]
    return [row.rendered for raw, conversation in parsed for row in builder.task.prepare(raw, conversation)]


def encode_and_read(encoder, rows, batch: int) -> list:
    """What the chat task does with the encodings: ids as an array and the span token ranges."""
    import numpy as np

    from transforms.labels import span_token_ranges

    out = []
    for begin in range(0, len(rows), batch):
        chunk = rows[begin:begin + batch]
        for row, encoding in zip(chunk, encoder.encode([row.text for row in chunk])):
            ids = np.asarray(encoding.ids, dtype=np.int32)
            trained = span_token_ranges(encoding, row.trained_spans)
            turns = trained if row.turn_spans == row.trained_spans else span_token_ranges(encoding, row.turn_spans)
            out.append((ids, trained, turns))
    return out


def per_record_us(make_encoder, rows, batch: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        encoder = make_encoder()
        start = time.process_time()
        encode_and_read(encoder, rows, batch)
        best = min(best, time.process_time() - start)
    return best / len(rows) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base-data", choices=("tests", "shared"), default="tests")
    args = parser.parse_args()

    import bench_job

    from transforms.config import TokenizeOptions
    from transforms.formats import FormatOptions
    from transforms.rows import RowBuilder
    from transforms.rows.encoding import TextEncoder
    from transforms.tokenizer_loading import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        job_dir, _, conversations = bench_job.build_input(tmp / "base", args.records, "base",
                                                          bench_job.base_data(args.base_data))
        unique_dir = tmp / "unique"
        unique_dir.mkdir()
        with open(unique_dir / "records.jsonl", "w", encoding="utf-8") as handle:
            for i, messages in enumerate(conversations):
                varied = [{**m, "content": f"{m['content']} [{i}]"} for m in messages]
                handle.write(json.dumps({"messages": varied}, ensure_ascii=False) + "\n")
        tokenizer = load_tokenizer(str(bench_job.save_bundled_tokenizer(tmp / "tokenizer")))
        builder = RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(), tokenize_options=TokenizeOptions())
        backend = tokenizer.backend_tokenizer
        control = builder.task.control_tokens.tokens
        whole = lambda: TextEncoder(backend, control, segment_cache=False)  # noqa: E731
        segmented = lambda: TextEncoder(backend, control)  # noqa: E731
        assert segmented().segments is not None, "the bundled tokenizer should qualify for the segment cache"
        for name, folder in (("base", job_dir), ("unique", unique_dir)):
            rows = rendered_rows(builder, folder)
            for (a_ids, a_tr, a_tu), (b_ids, b_tr, b_tu) in zip(encode_and_read(whole(), rows, args.batch),
                                                                   encode_and_read(segmented(), rows, args.batch)):
                assert a_ids.tolist() == b_ids.tolist() and a_tr == b_tr and a_tu == b_tu
            before = per_record_us(whole, rows, args.batch, args.repeats)
            after = per_record_us(segmented, rows, args.batch, args.repeats)
            tokens = sum(len(r.text) for r in rows) / len(rows)
            print(f"{name:7s} {len(rows)} rows ({tokens:.0f} chars/row): encode+spans whole {before:.1f} us/row, "
                  f"segmented {after:.1f} us/row, saving {100 * (1 - after / before):.0f}%", flush=True)


if __name__ == "__main__":
    main()
