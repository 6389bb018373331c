"""``python -m pipeline.inspect OUT``: print decoded rows with the trained tokens marked.

The quick look at label masks before spending GPU hours: each row is decoded as the model sees it
(chat template and special tokens included); trained tokens (label != -100) are bold green on a
terminal, or wrapped in ``[...]`` when the output is not a terminal (``--color always|never|auto``;
``auto`` also honours ``NO_COLOR``).

    python -m pipeline.inspect out/ --n 3
    python -m pipeline.inspect out/ --source alpaca --index 12
    python -m pipeline.inspect out/ --shard 2 --n 5 --color never | less

Rows are taken in shard order (the manifest's shards, rows as stored). Exit status: 0 ok (also when
no row matches; a note says so on stderr), 2 not a finished dataset / bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.inspect", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)  # a mistyped flag is an error, never a guess
    parser.add_argument("dataset", metavar="OUT", help="a finished chatshards output folder (local)")
    parser.add_argument("--n", type=int, default=3, metavar="N", help="rows to print (default: 3)")
    parser.add_argument("--source", default=None, metavar="TEXT",
                        help="only rows whose input file contains TEXT (e.g. a file name)")
    parser.add_argument("--index", type=int, default=None, metavar="I", help="only rows of record I of its file")
    parser.add_argument("--shard", default=None, metavar="K|NAME",
                        help="only this shard: its 0-based position in the manifest, or (part of) its file name")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="ANSI colour for trained tokens (default: auto = on a terminal, unless NO_COLOR)")
    parser.add_argument("--max-tokens", type=int, default=2048, metavar="N",
                        help="show at most N tokens per row: the start and the last 256 (0 = all; default 2048)")
    parser.add_argument("--ids", action="store_true", help="also print the token ids and labels")
    parser.add_argument("--no-collapse", action="store_true",
                        help="print long repeats of a special token (image placeholders) one by one, "
                             "not as <|image_pad|>×N")
    parser.add_argument("--tokenizer", default=None, metavar="PATH_OR_HUB_ID",
                        help="tokenizer to decode with (default: the one named in the manifest)")
    return parser


def use_color(mode: str, stream) -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def select_shards(manifest, shard: str | None) -> list[str]:
    paths = [entry["path"] for entry in manifest["shards"]]
    if shard is None:
        return paths
    if shard.isdigit():
        position = int(shard)
        if not 0 <= position < len(paths):
            raise ValueError(f"--shard {shard}: the dataset has {len(paths)} shard(s) (0..{len(paths) - 1})")
        return [paths[position]]
    chosen = [p for p in paths if shard in p]
    if not chosen:
        raise ValueError(f"--shard {shard!r} matches no shard of the manifest")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.io.remote import load_job_tokenizer
    from transforms import shard_format as sf
    from transforms.audit.dataset import iter_table_rows, load_dataset_tokenizer, read_shard_table
    from transforms.audit.masks import (
        ANSI_RESET,
        ANSI_TRAINED,
        CLOSE,
        COLLAPSE_REPEATS,
        OPEN,
        decoded_row,
        render_terminal,
    )

    if args.n < 1:
        print("chatshards inspect: error: --n must be >= 1", file=sys.stderr)
        return 2
    root = args.dataset.rstrip("/") or "/"
    try:
        manifest = sf.load_manifest(root)
        sf.check_dataset_paths(root, manifest)  # no manifest path leads outside the folder, links followed
        shards = select_shards(manifest, args.shard)
    except (sf.ManifestError, ValueError) as exc:
        print(f"chatshards inspect: error: {exc}", file=sys.stderr)
        return 2
    try:
        tokenizer, warnings = load_dataset_tokenizer(manifest, args.tokenizer, loader=load_job_tokenizer)
    except Exception as exc:
        print(f"chatshards inspect: error: cannot load the tokenizer: {exc} (pass --tokenizer)", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"chatshards inspect: warning: {warning}", file=sys.stderr)

    from transforms.tasks.spec import task_spec_from_manifest

    task = task_spec_from_manifest(manifest)  # another task than chat: its view of a row (ids, labels)
    figures = task.figures() if task is not None else None
    color = use_color(args.color, sys.stdout)
    out = sys.stdout
    legend = (f"trained tokens in {ANSI_TRAINED}bold green{ANSI_RESET}, the rest dimmed" if color
              else f"trained tokens inside {OPEN}...{CLOSE}")
    max_tokens = args.max_tokens if args.max_tokens > 0 else None
    tail = min(256, max_tokens // 4) if max_tokens else 0
    shown = 0
    try:
        out.write(f"{root}: {manifest['counts']['written']:,} rows in {len(manifest['shards'])} shard(s); {legend}\n")
        for relative in shards:
            table = read_shard_table(os.path.join(root, *relative.split("/")))
            for position, row in enumerate(iter_table_rows(table)):
                if args.source is not None and args.source not in row["source"]:
                    continue
                if args.index is not None and row["index"] != args.index:
                    continue
                shown += 1
                length, trained = int(row["length"]), int(row["num_loss_tokens"])
                ids, labels = row["input_ids"], row.get("labels")
                if figures is not None:
                    ids, labels = figures.sample_view(row)
                    length = len(ids)
                where = f"row {position}" if "pack" not in row else f"packed row {row['pack']} at {row['offset']}"
                header = (f"── [{shown}] {relative} {where} · {row['source']} record {row['index']} · "
                          f"{row.get('format', task.name if task else '?')} · {length} tokens, {trained} trained "
                          f"({100 * trained / max(length, 1):.0f}%)")
                if row.get("truncated"):
                    header += f" · truncated ({row.get('truncated_tokens', '?')} tokens removed)"
                out.write("\n" + header + "\n")
                runs, elided = decoded_row(tokenizer, ids, labels, length,
                                           max_tokens=max_tokens, tail_tokens=tail,
                                           collapse=0 if args.no_collapse else COLLAPSE_REPEATS)
                out.write(render_terminal(runs, color=color, elided=elided) + "\n")
                if args.ids:
                    out.write(f"input_ids: {ids[:length].tolist()}\n")
                    out.write(f"labels:    {labels[:length].tolist()}\n")
                if shown >= args.n:
                    return 0
        if not shown:
            print("chatshards inspect: no row matches", file=sys.stderr)
        return 0
    except BrokenPipeError:  # e.g. piped into head
        try:
            sys.stdout = open(os.devnull, "w")  # silence the flush at exit
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
