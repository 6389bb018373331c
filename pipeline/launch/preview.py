"""``python -m pipeline ... --preview``: the resolved plan, printed, before paying for the job; nothing is written.

For each dataset (a config file's ``datasets`` entries, or the ``--input`` files as one): its files and bytes,
its record options, its share and (local inputs up to :data:`COUNT_BYTES`) its records counted and what the
mixture takes of them, the formats detected among its first records, and a few of them rendered exactly as
the job would write them, trained tokens marked (``[...]``, or bold green on a terminal). The output folder is
not touched, no worker is started.

The name is ``--preview``, not ``--dry-run``: Beam's ``--dry_run`` (Dataflow: build the graph, submit nothing)
is a different thing and is passed through to Beam as before.
"""
from __future__ import annotations

import collections
import os
import sys
from typing import TextIO

from pipeline.io.files import is_local
from pipeline.launch.cli import JobArgs
from pipeline.launch.plan import JobPlan
from pipeline.steps.reading import read_file_batches
from pipeline.steps.records import parse_in_dataset, parse_raw_record
from transforms.mixture import DatasetEntry, Selection
from transforms.rows import PARSED, ROW

# Records read per dataset for the formats and the rendered rows; rows rendered per dataset.
SAMPLE_RECORDS = 200
ROWS_SHOWN = 2
MAX_TOKENS_SHOWN = 400
# Local inputs up to this many bytes are read whole to count their records (the mixture's quotas).
COUNT_BYTES = 512 * 1024 * 1024


def _first_records(files, record_spec, limit: int) -> list:
    records = []
    for path in files:
        for batch in read_file_batches(path, limit, task=record_spec):
            records.extend(batch[: limit - len(records)])
            break
        if len(records) >= limit:
            break
    return records


def _count(files, record_spec) -> dict[str, int]:
    return {path: sum(len(batch) for batch in read_file_batches(path, 1024, task=record_spec)) for path in files}


def _row_view(row, spec):
    """``(ids, labels, length)`` of a built row to show (another task: its audit view)."""
    if spec.is_chat:
        return row["input_ids"], row["labels"], int(row["length"])
    figures = spec.figures()
    if figures is not None and hasattr(figures, "sample_view"):
        ids, labels = figures.sample_view(row)
        return ids, labels, len(ids)
    return row["input_ids"], [-100] * len(row["input_ids"]), len(row["input_ids"])


def print_preview(job: JobArgs, plan: JobPlan, *, out: TextIO | None = None, color: bool | None = None) -> None:
    """Print the plan of ``job`` (see the module docstring)."""
    from transforms.audit.masks import decoded_row, render_terminal

    out = out or sys.stdout
    if color is None:
        color = bool(getattr(out, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")
    builder = plan.spec.create_builder()
    tokenizer = builder.tokenizer
    options = job.tokenize_options
    mixture = plan.mixture
    files = list(plan.files or ())
    sizes = {path: os.path.getsize(path) for path in files if is_local(path) and os.path.isfile(path)}
    write = out.write
    write("chatshards preview: the resolved plan (nothing is written; drop --preview to run the job)\n")
    write(f"  output {job.output} · task {job.task} · tokenizer {plan.manifest_base['tokenizer'].get('name')} · "
          f"max_length {options.max_length} · truncation {options.truncation} · loss {options.loss} · "
          f"dedup {job.dedup}\n")
    write(f"  config fingerprint {plan.manifest_base['config_fingerprint']}\n")
    if job.config_file is not None:
        write(f"  config file {job.config_file['path']}\n")
    if mixture is not None:
        entries = list(mixture.datasets)
        record_spec = mixture
    else:
        entries = [DatasetEntry(name="inputs", patterns=job.inputs, task=plan.task_spec, files=tuple(files))]
        record_spec = plan.task_spec
    counts = None
    if files and len(sizes) == len(files) and sum(sizes.values()) <= COUNT_BYTES:
        counts = _count(files, record_spec)
    quotas = {}
    if mixture is not None:
        write(f"  mixture: {len(entries)} datasets · seed {mixture.seed}"
              + (f" · stopping_strategy {mixture.stopping_strategy}" if mixture.weighted else "")
              + (f" · total_records {mixture.total_records}" if mixture.total_records else "") + "\n")
        if counts is not None:  # the quotas the job will realise (Selection with counts: every mixture has them)
            quotas = {q.name: q for q in Selection(mixture, counts).quotas}
    shares = (mixture.asked_shares() if mixture is not None else None) or {}
    for entry in entries:
        write("\n")
        nbytes = sum(sizes.get(path, 0) for path in entry.files)
        write(f"dataset {entry.name}: {len(entry.files)} file(s), {nbytes:,} bytes"
              + (" (remote sizes not shown)" if any(path not in sizes for path in entry.files) else "") + "\n")
        for path in entry.files[:5]:
            write(f"  {path}\n")
        if len(entry.files) > 5:
            write(f"  ... and {len(entry.files) - 5} more\n")
        write(f"  options: {entry.options_json()}" + (f" · chat_template_kwargs {entry.kwargs}" if entry.kwargs else "")
              + "\n")
        share = entry.share_json()
        if share:
            asked = f" ({shares[entry.name]:.1%} of the mixture)" if entry.name in shares else ""
            write(f"  share: {', '.join(f'{k} {v}' for k, v in share.items())}{asked}\n")
        if counts is not None:
            read = sum(counts.get(path, 0) for path in entry.files)
            quota = quotas.get(entry.name)
            if quota is not None:
                write(f"  records: {read:,} read -> {quota.kept:,} taken, {quota.target:,} examples"
                      + (f" ({quota.target - quota.kept:,} repeats)" if quota.target > quota.kept else "") + "\n")
            else:
                write(f"  records: {read:,}\n")
        else:
            write("  records: not counted (remote or large inputs); the job counts them when it runs\n")
        sample = _first_records(entry.files, record_spec, SAMPLE_RECORDS)
        parsed, formats, reasons = [], collections.Counter(), collections.Counter()
        for raw in sample:
            kind, item = parse_in_dataset(raw, entry) if mixture is not None else parse_raw_record(raw, entry.task)
            if kind == PARSED:
                parsed.append(item)
                example = item[1]
                formats[getattr(example, "format", None) or entry.task.name] += 1
            else:
                reasons[item["reason"]] += 1
        write(f"  first {len(sample)} records: formats "
              + (", ".join(f"{k}={v}" for k, v in formats.most_common()) or "none")
              + (" · rejected " + ", ".join(f"{k}={v}" for k, v in reasons.most_common()) if reasons else "") + "\n")
        shown = 0
        for kind, row in builder.build_rows(parsed[: ROWS_SHOWN * 4]):
            if shown >= ROWS_SHOWN:
                break
            if kind != ROW:
                write(f"  record {row['index']} of {row['source']}: rejected {row['reason']}: {row['detail']}\n")
                continue
            ids, labels, length = _row_view(row, entry.task)
            runs, elided = decoded_row(tokenizer, ids, labels, length, max_tokens=MAX_TOKENS_SHOWN, tail_tokens=64)
            trained = int(row["num_loss_tokens"])
            write(f"  ── record {row['index']} of {os.path.basename(row['source'])} · {length} tokens, {trained} "
                  f"trained{' · truncated' if row.get('truncated') else ''}\n")
            text = render_terminal(runs, color=color, elided=elided)
            write("".join(f"    {line}\n" for line in text.splitlines()))
            shown += 1
    write("\n" + ("trained tokens are bold green\n" if color else "trained tokens are inside [...]\n"))
