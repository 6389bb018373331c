"""The audit statistics document: :func:`build_stats` -> ``stats.json``, :func:`manifest_section` ->
the ``audit`` section of ``manifest.json``.

The audit package, by concern: :mod:`~transforms.audit.probe` (what the per-row template checks look
for), :mod:`~transforms.audit.accumulator` (rows and rejections -> counts, histograms, examples),
:mod:`~transforms.audit.duplicates` (duplicate groups), this module (the document),
:mod:`~transforms.audit.dump` (its exact bytes) and :mod:`~transforms.audit.summary` (the command's lines).
The Beam job feeds these from ``CombineFn``s (``pipeline/engines/beam/stats.py``); ``python -m pipeline.audit``
feeds the same classes from the shard and rejected files (``transforms/audit/dataset.py``).
"""
from __future__ import annotations

from typing import Any, Mapping

from transforms import errors
from transforms.audit.accumulator import ROW_DISTRIBUTIONS, AuditAccumulator
from transforms.audit.duplicates import DuplicateSummary
from transforms.audit.histogram import FRACTION_SCHEME, INT_SCHEME, PERCENTILES, sorted_counts

STATS_SCHEMA_VERSION = 1
STATS_PATH = "audit/stats.json"
REPORT_PATH = "audit/report.html"


def _percentile_summary(hist_json: Mapping[str, Any]) -> dict[str, Any]:
    return {key: hist_json[key] for key in ("min", "mean", *[f"p{p}" for p in PERCENTILES], "max")}


def build_stats(acc: AuditAccumulator, duplicates: DuplicateSummary, *, manifest: Mapping[str, Any],
                computed_by: str) -> dict[str, Any]:
    """The ``stats.json`` document (schema: README, section "Auditing your data").

    ``manifest`` supplies the configuration (``config``, ``config_fingerprint``, ``tokenizer``,
    ``template_check``): the job passes its manifest base, the command the manifest it reads.
    """
    config = manifest.get("config", {})
    tokenize = config.get("tokenize", {})
    check = manifest.get("template_check", {}) or {}
    distributions = {name: acc.hists[name].to_json() for name in ROW_DISTRIBUTIONS}
    distributions["trained_fraction"] = acc.fraction.to_json()
    totals = {
        "tokens": acc.hists["total_tokens"].total,
        "prompt_tokens": acc.hists["prompt_tokens"].total,
        "trained_tokens": acc.hists["trained_tokens"].total,
        "images": acc.hists["images"].total,
        "image_tokens": acc.hists["image_tokens"].total,
    }
    totals["trained_fraction"] = (round(totals["trained_tokens"] / totals["tokens"], 6)
                                  if totals["tokens"] else None)
    sources = {}
    for source in sorted(acc.sources):
        entry = acc.sources[source]
        sources[source] = {
            "read": entry["records"] + entry["rejected"],
            "written": entry["records"],
            "rows": entry["rows"],
            "rejected": entry["rejected"],
            "rejected_by_reason": sorted_counts(entry["rejected_by_reason"]),
            "formats": sorted_counts(entry["formats"]),
            "tokens": entry["tokens"],
            "trained_tokens": entry["trained_tokens"],
            "truncated": entry["truncated"],
            "template": {"double_bos_rows": entry["double_bos"],
                         "default_system_prompt_rows": entry["default_system_prompt"],
                         "last_trained_not_stop_rows": entry["last_trained_not_stop"]},
        }
    formats = {}
    for fmt in sorted(set(acc.formats_written) | set(acc.formats_rejected)):
        formats[fmt] = {"written": acc.formats_written.get(fmt, 0), "rejected": acc.formats_rejected.get(fmt, 0)}
    counters = acc.counters
    dup = duplicates.to_json()
    dup.update({"dedup": bool(config.get("dedup", False)),
                "rejected_duplicates": acc.reasons.get(errors.DUPLICATE, 0)})
    probe = acc.probe
    stats = {
        "audit_schema_version": STATS_SCHEMA_VERSION,
        "computed_by": computed_by,
        "dataset": {
            "config_fingerprint": manifest.get("config_fingerprint"),
            "tokenizer": (manifest.get("tokenizer") or {}).get("name"),
            "inputs": list(config.get("inputs", [])),
            "max_length": tokenize.get("max_length"),
            "truncation": tokenize.get("truncation"),
            "loss": tokenize.get("loss"),
            "dedup": bool(config.get("dedup", False)),
        },
        "counts": {
            "read": acc.records + acc.rejected,
            "written": acc.records,
            "rejected": acc.rejected,
            "rows": acc.rows,
            "turns": acc.hists["turns"].total,
            "trained_turns": acc.hists["trained_turns"].total,
        },
        "totals": totals,
        "by_source": sources,
        "by_format": formats,
        "rejections": {
            "by_reason": sorted_counts(acc.reasons),
            "examples": {reason: acc.examples[reason][1] for reason in sorted(acc.examples)},
        },
        "distributions": distributions,
        "truncation": {
            "max_length": tokenize.get("max_length"),
            "mode": tokenize.get("truncation"),
            "rows_truncated": counters["truncated_rows"],
            "tokens_removed": acc.truncated_tokens.total,
            "tokens_removed_per_truncated_row": acc.truncated_tokens.to_json(),
            "rejected_no_loss_after_truncation": counters["rejected_no_loss_after_truncation"],
            "rejected_too_long": counters["rejected_too_long"],
        },
        "duplicates": dup,
        "turns_split": {
            "rows": counters["split_rows"],
            "records": counters["split_records"],
            "extra_tokens": counters["split_extra_tokens"],
            "meaning": "records whose template renders earlier turns differently are written as one row per "
                       "supervised turn; extra_tokens = tokens those rows hold beyond each record's longest row "
                       "(the prompt tokens that splitting repeats)",
        },
        "reasoning": {
            "rows_with_trained_reasoning": counters["rows_with_trained_reasoning"],
            "trained_reasoning_tokens": counters["trained_reasoning_tokens"],
        },
        "control_tokens": {"records_with_literal_control_tokens": counters["records_with_literal_control_tokens"]},
        "prompt_mismatch": prompt_mismatch_section(acc, tokenize.get("prompt_mismatch")),
        "template": {
            "double_bos": bool(check.get("double_bos", False)),
            "renders_bos": bool(check.get("renders_bos", False)),
            "stop_tokens_trained": list(check.get("stop_tokens_trained", [])),
            "injects_default_system_prompt": bool(check.get("injects_default_system_prompt", False)),
            "default_system_prompt": check.get("default_system_prompt"),
            "rows_starting_with_bos": counters["bos_rows"],
            "rows_double_bos": counters["double_bos_rows"],
            "rows_with_default_system_prompt": counters["default_system_prompt_rows"],
            "rows_last_trained_token_is_stop": counters["last_trained_is_stop_rows"],
            "rows_last_trained_token_not_stop": counters["last_trained_not_stop_rows"],
            "probe": probe.to_json(),
        },
        "samples": [
            {k: sample[k] for k in ("source", "index", "format", "length", "num_loss_tokens", "truncated", "why")}
            for sample in acc.samples()
        ],
        "bins": {
            INT_SCHEME: "integers: exact below 64; from 64 each [2^e, 2^(e+1)) split into 32 equal buckets; "
                        "buckets are [lo, hi (inclusive), count]",
            FRACTION_SCHEME: "ratios in [0, 1]: 100 buckets of width 0.01, [lo, hi), 1.0 in the last; "
                             "buckets are [lo, hi, count]",
            "percentiles": "nearest rank on the merged histogram, reported as the upper edge of the bucket "
                           "holding the ranked row, clipped to [min, max]: exact for integers below 64, "
                           "else at most 1/32 above the true value; fractions at most 0.01 above",
        },
    }
    if acc.datasets:  # a job with a datasets list: each dataset, and the mixture realised next to the one asked for
        stats["by_dataset"], stats["mixture"] = _by_dataset(acc, config.get("mixture") or {})
    if acc.figures is not None:  # a task other than chat: its own figures
        stats["task"] = {"name": getattr(acc.figures, "task_name", None), "figures": acc.figures.to_json(),
                         "summary": acc.figures.summary()}
    return stats


def prompt_mismatch_section(acc: AuditAccumulator, mode: str | None) -> dict[str, Any]:
    """The turns trained by the prompt-mismatch rule (``--prompt-mismatch diverge``, see
    ``transforms.chat_render``): counts, by kind, and the first one in stable order."""
    counters = acc.counters
    example = acc.prompt_mismatch_example[1] if acc.prompt_mismatch_example else None
    return {
        "mode": mode,
        "records": counters["prompt_mismatch_records"],
        "rows": counters["prompt_mismatch_rows"],
        "turns": counters["prompt_mismatch_turns"],
        "by_kind": sorted_counts(acc.prompt_mismatch_kinds),
        "example": example,
        "meaning": "supervised turns the chat template renders differently from what follows its own generation "
                   "prompt, trained from where the two diverge (diverged), or whose record gets no generation prompt "
                   "from the template, so the role header the template writes for a conversation that has one "
                   "ends the prompt (header_from_generation_prompt); --prompt-mismatch reject rejects them instead",
    }


def _by_dataset(acc: AuditAccumulator, mixture: Mapping[str, Any]) -> tuple[dict, dict]:
    """``(by_dataset, mixture)`` of the stats document: per dataset its counts (``taken`` = written + rejected:
    the examples the mixture made of it), tokens, trained tokens, rejections, row lengths, and its share of the
    records written (``share_realised``) beside the share its weight asked for (``share_asked``)."""
    entries = {d.get("name"): d for d in mixture.get("datasets", []) if isinstance(d, Mapping)}
    weights = {name: d["weight"] for name, d in entries.items() if isinstance(d.get("weight"), (int, float))}
    total_weight = sum(weights.values())
    written = sum(entry["records"] for entry in acc.datasets.values())
    names = [name for name in entries if name in acc.datasets] + sorted(set(acc.datasets) - set(entries))
    by_dataset = {}
    for name in names:
        entry = acc.datasets[name]
        item = {
            "taken": entry["records"] + entry["rejected"],
            "written": entry["records"],
            "rows": entry["rows"],
            "rejected": entry["rejected"],
            "rejected_by_reason": sorted_counts(entry["rejected_by_reason"]),
            "tokens": entry["tokens"],
            "trained_tokens": entry["trained_tokens"],
            "trained_fraction": round(entry["trained_tokens"] / entry["tokens"], 6) if entry["tokens"] else None,
            "truncated": entry["truncated"],
            "lengths": _percentile_summary(entry["lengths"].to_json()),
            "share_realised": round(entry["records"] / written, 6) if written else None,
        }
        if name in weights and total_weight:
            item["share_asked"] = round(weights[name] / total_weight, 6)
        for key in ("max_records", "epochs"):
            if key in entries.get(name, {}):
                item[key] = entries[name][key]
        by_dataset[name] = item
    gaps = [abs(item["share_realised"] - item["share_asked"]) for item in by_dataset.values()
            if "share_asked" in item and item["share_realised"] is not None]
    summary = {"weighted": bool(weights), "written": written,
               "largest_share_gap": round(max(gaps), 6) if gaps else None,
               "meaning": "share_realised: the dataset's part of the records written; share_asked: its weight over "
                          "the sum of weights. They differ by the rejections (a dataset's rejected examples are not "
                          "written) and by rounding each dataset's target to whole records"}
    return by_dataset, summary


def manifest_section(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The small ``audit`` section merged into ``manifest.json`` (with the ``prompt_mismatch`` figures when a
    record has them: the shards do not hold them, so ``python -m pipeline.audit`` reads them from here)."""
    dist = stats["distributions"]
    mismatch = stats.get("prompt_mismatch") or {}
    extra = {"prompt_mismatch": dict(mismatch)} if mismatch.get("records") else {}
    return {
        "audit": {
            "stats_path": STATS_PATH,
            "report_path": REPORT_PATH,
            "audit_schema_version": stats["audit_schema_version"],
            "counts": {
                **stats["counts"],
                "rows_truncated": stats["truncation"]["rows_truncated"],
                "rejected_no_loss_after_truncation": stats["truncation"]["rejected_no_loss_after_truncation"],
                "rows_in_duplicate_groups": stats["duplicates"]["rows_in_duplicate_groups"],
                "rejected_duplicates": stats["duplicates"]["rejected_duplicates"],
                "rows_double_bos": stats["template"]["rows_double_bos"],
            },
            "percentiles": {name: _percentile_summary(dist[name])
                            for name in ("total_tokens", "trained_tokens", "trained_fraction")},
            "template_probe": stats["template"]["probe"],
            **extra,
            **({"task": stats["task"]["summary"]} if "task" in stats else {}),
            **({"by_dataset": {name: {key: entry[key] for key in ("written", "rejected", "tokens", "trained_tokens",
                                                                   "share_realised", "share_asked") if key in entry}
                               for name, entry in stats["by_dataset"].items()}} if "by_dataset" in stats else {}),
        }
    }
