"""``python -m pipeline.audit OUT``: recompute the audit statistics and report of a finished dataset.

Reads only ``OUT/manifest.json``, the shards and the rejected files (for datasets made earlier, or
elsewhere, or without the audit branch), feeds them to the same accumulator the job uses, and
writes ``OUT/audit/stats.json`` and ``OUT/audit/report.html`` (``--audit-dir`` to write elsewhere).
The numbers equal the job's own ``stats.json`` except ``computed_by``.

``--check`` writes nothing: it compares the recomputed statistics with ``OUT/audit/stats.json`` and
the manifest's counts, and exits 1 when they differ.

Exit status: 0 ok, 1 ``--check`` found a difference, 2 not a finished dataset / bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.audit", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)  # a mistyped flag is an error, never a guess
    parser.add_argument("dataset", metavar="OUT", help="a finished chatshards output folder (local)")
    parser.add_argument("--audit-dir", default=None, metavar="DIR", help="where to write (default: OUT/audit)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; compare with OUT/audit/stats.json and the manifest, "
                        "exit 1 on a difference")
    parser.add_argument("--tokenizer", default=None, metavar="PATH_OR_HUB_ID",
                        help="tokenizer to decode the report samples (default: the one named in the manifest)")
    parser.add_argument("--chat-template", default=None, metavar="FILE",
                        help="the job's --chat-template, for datasets made before the audit existed")
    parser.add_argument("--no-report", action="store_true", help="write stats.json only")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser


def _differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{path}{key}: only in {'the recomputed' if key in a else 'the existing'} stats")
            else:
                out += _differences(a[key], b[key], f"{path}{key}.")
        return out
    return [] if a == b else [f"{path.rstrip('.')}: recomputed {json.dumps(a)[:120]} != existing {json.dumps(b)[:120]}"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.io.remote import load_job_tokenizer
    from transforms import shard_format as sf
    from transforms.audit.dataset import (
        check_against_manifest,
        compute_stats,
        load_dataset_tokenizer,
        probe_for,
    )
    from transforms.audit.dump import comparable, stats_json_bytes
    from transforms.audit.report import render_report, render_samples
    from transforms.audit.stats import REPORT_PATH, STATS_PATH
    from transforms.audit.summary import summary_lines

    root = args.dataset.rstrip("/") or "/"
    say = (lambda *a: None) if args.quiet else print
    try:
        manifest = sf.load_manifest(root)
        sf.check_dataset_paths(root, manifest)  # no manifest path leads outside the folder, links followed
    except sf.ManifestError as exc:
        print(f"chatshards audit: error: {exc}", file=sys.stderr)
        return 2

    notes: list[str] = []
    tokenizer = None
    template_matches = False
    needs_tokenizer = not (args.check or args.no_report) or "template_probe" not in (manifest.get("audit") or {})
    try:
        if needs_tokenizer:
            tokenizer, warnings = load_dataset_tokenizer(manifest, args.tokenizer, args.chat_template,
                                                         loader=load_job_tokenizer)
            template_matches = not any("chat template" in w for w in warnings)
            notes += warnings
    except Exception as exc:  # statistics need no tokenizer; only decoded samples do
        notes.append(f"tokenizer not available ({type(exc).__name__}: {exc}); samples are not decoded "
                     "(pass --tokenizer)")
    probe = probe_for(manifest, tokenizer, template_matches)
    stats, samples = compute_stats(root, manifest, probe=probe, computed_by="pipeline.audit")
    problems = check_against_manifest(stats, manifest)
    for note in notes:
        print(f"chatshards audit: warning: {note}", file=sys.stderr)
    for problem in problems:
        print(f"chatshards audit: warning: {problem}", file=sys.stderr)

    say(f"chatshards audit: {root}")
    for line in summary_lines(stats):
        say("  " + line)

    if args.check:
        existing_path = os.path.join(root, *STATS_PATH.split("/"))
        if not os.path.isfile(existing_path):
            print(f"chatshards audit: {existing_path} does not exist (the job ran without the audit?)",
                  file=sys.stderr)
            return 1
        with open(existing_path, encoding="utf-8") as handle:
            existing = json.load(handle)
        # compare through JSON so tuples/lists and int/float spellings match the file
        recomputed = json.loads(stats_json_bytes(comparable(stats)))
        differences = _differences(recomputed, comparable(existing))
        for line in differences[:40]:
            print(f"chatshards audit: differs: {line}", file=sys.stderr)
        if differences or problems:
            return 1
        say(f"  agrees with {existing_path} (computed by {existing.get('computed_by')}) and with the manifest")
        return 0

    audit_dir = args.audit_dir or os.path.join(root, os.path.dirname(STATS_PATH))
    os.makedirs(audit_dir, exist_ok=True)
    stats_path = os.path.join(audit_dir, os.path.basename(STATS_PATH))
    _write(stats_path, stats_json_bytes(stats))
    written = [stats_path]
    if not args.no_report:
        rendered = []
        if tokenizer is not None:
            rendered = render_samples(tokenizer, samples)
        report_path = os.path.join(audit_dir, os.path.basename(REPORT_PATH))
        _write(report_path, render_report(stats, rendered, notes=notes + problems).encode("utf-8"))
        written.append(report_path)
    say("  wrote " + " and ".join(written))
    return 0


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
