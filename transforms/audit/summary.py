"""The human-readable summary lines of ``python -m pipeline.audit``."""
from __future__ import annotations

from typing import Any, Mapping


def summary_lines(stats: Mapping[str, Any]) -> list[str]:
    """A few human-readable lines summarising ``stats`` (printed by ``python -m pipeline.audit``)."""
    counts, totals = stats["counts"], stats["totals"]
    reasons = ", ".join(f"{k}={v}" for k, v in stats["rejections"]["by_reason"].items()) or "none"
    total = stats["distributions"]["total_tokens"]
    trained = stats["distributions"]["trained_tokens"]
    trunc, dup, tmpl = stats["truncation"], stats["duplicates"], stats["template"]
    mismatch = stats.get("prompt_mismatch") or {}
    fraction = totals["trained_fraction"]
    formats = ", ".join(f"{k}={v['written']}" for k, v in stats["by_format"].items() if v["written"]) or "none"
    return [
        f"records read {counts['read']:,}, rows written {counts['written']:,}, "
        f"rejected {counts['rejected']:,} ({reasons})",
        f"formats written: {formats}; {len(stats['by_source'])} input file(s); "
        f"turns {counts['turns']:,}, trained turns {counts['trained_turns']:,}",
        f"tokens {totals['tokens']:,}, trained {totals['trained_tokens']:,}"
        + (f" ({100 * fraction:.1f}%)" if fraction is not None else "")
        + f"; tokens/row p50 {total['p50']} p90 {total['p90']} p99 {total['p99']} max {total['max']}; "
          f"trained/row p50 {trained['p50']} max {trained['max']}",
        f"truncated rows {trunc['rows_truncated']:,} ({trunc['tokens_removed']:,} tokens removed); "
        f"rejected because truncation removed every trained token: {trunc['rejected_no_loss_after_truncation']:,}",
        f"duplicates: {dup['rows_in_duplicate_groups']:,} rows in {dup['duplicate_groups']:,} groups; "
        f"rejected as duplicate: {dup['rejected_duplicates']:,}",
        f"template: double-BOS rows {tmpl['rows_double_bos']:,}; rows whose last trained token is not a stop "
        f"token {tmpl['rows_last_trained_token_not_stop']:,}; rows with the default system prompt "
        f"{tmpl['rows_with_default_system_prompt']:,}",
    ] + ([prompt_mismatch_line(mismatch)] if mismatch.get("records") else [])


def prompt_mismatch_line(mismatch: Mapping[str, Any]) -> str:
    """One line on the records trained by the prompt-mismatch rule, with the first example."""
    kinds = ", ".join(f"{k}={v}" for k, v in (mismatch.get("by_kind") or {}).items())
    line = (f"prompt mismatch: {mismatch['records']:,} record(s), {mismatch['turns']:,} turn(s) rendered differently "
            f"from their generation prompt, trained from where they diverge ({kinds})")
    example = mismatch.get("example")
    if example:
        line += (f"; e.g. {example['source']} record {example['index']} turn {example['turn']}: "
                 f"prompt ...{example['shared'][-20:]!r} + {example['generation_prompt']!r}, "
                 f"rendered ...{example['shared'][-20:]!r} + {example['rendered']!r}")
    return line
