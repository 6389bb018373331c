"""``audit/report.html``: one self-contained page (inline CSS and SVG, no network) built from stats.json.

Sections (each has a stable ``id`` the tests and users can link to): ``summary``, ``sources``,
``formats``, ``rejections``, ``distributions``, ``truncation``, ``duplicates``, ``template``,
``samples``, ``bins``. A tiny inline script records JavaScript errors in ``#js-status``
(``data-errors``) so a headless browser can check that the page loaded cleanly.
"""
from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

from transforms.audit.histogram import PERCENTILES, display_bins
from transforms.audit.masks import decoded_row, render_html
from transforms.audit.svg import svg_histogram

SAMPLE_MAX_TOKENS = 1500
SAMPLE_TAIL_TOKENS = 300

# name -> (title, x label, plot kind)
PLOTS = {
    "total_tokens": ("Total tokens per row", "tokens (log scale)", "log"),
    "prompt_tokens": ("Prompt (not trained) tokens per row", "tokens (log scale)", "log"),
    "trained_tokens": ("Trained tokens per row", "tokens (log scale)", "log"),
    "trained_fraction": ("Trained-token fraction per row", "trained tokens / tokens", "fraction"),
    "turns": ("Messages per row", "messages", "int"),
    "trained_turns": ("Trained assistant turns per row", "turns", "int"),
    "images": ("Images per record", "images", "int"),
    "image_tokens": ("Image tokens per row", "tokens (log scale)", "log"),
}
IMAGE_PLOTS = ("images", "image_tokens")  # shown only for datasets with images

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccd;padding-bottom:4px}
.meta{color:#555;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:12px}
.card{background:#fff;border:1px solid #dde;border-radius:6px;padding:8px 14px;min-width:120px}
.card .v{font-size:20px;font-weight:600}.card .k{font-size:12px;color:#666}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;background:#fff;border:1px solid #dde;border-radius:6px;padding:6px}
figcaption{font-size:12px;color:#444;padding:2px 6px 4px}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font-size:12px}
.excerpt{max-height:160px;overflow:auto;background:#fafafa;border:1px solid #eee;padding:4px}
.sample{background:#fff;border:1px solid #dde;border-radius:6px;margin:10px 0;padding:8px 10px}
.sample h3{font-size:14px;margin:0 0 6px}
.tokens{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word;
 line-height:1.45;max-height:420px;overflow:auto;border:1px solid #eee;padding:6px;background:#fcfcfd}
.trained{background:#c8f0c8;color:#0b4f0b;border-bottom:2px solid #2e8b2e}
.prompt{color:#555}.elided{color:#999;font-style:italic}
.legend span{padding:1px 6px;margin-right:8px}
.warn{color:#a40000;font-weight:600}.ok{color:#176f17}
#js-status{font-size:11px;color:#999}
"""

JS_GUARD = """<script>
window.__auditErrors=[];
window.onerror=function(m,s,l){window.__auditErrors.push(String(m)+' @'+l);return false;};
</script>"""
JS_STATUS = """<script>
(function(){var el=document.getElementById('js-status');
var plots=document.querySelectorAll('svg.hist').length;
el.setAttribute('data-errors',String(window.__auditErrors.length));
el.setAttribute('data-plots',String(plots));
el.textContent=window.__auditErrors.length?('script errors: '+window.__auditErrors.join('; ')):'ok';})();
</script>"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _n(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _yes(value: Any) -> str:
    """A true/false setting or check in words (never Python's ``True``/``False``)."""
    return "yes" if value else "no"


def _limit(value: Any) -> str:
    """``--max-length``: the number, or "no limit" (never an empty cell or ``None``)."""
    return "no limit" if value is None else _n(value)


def has_images(stats: Mapping[str, Any]) -> bool:
    """Whether the dataset holds images (the image plots and figures are shown only then)."""
    totals = stats.get("totals", {})
    return bool(totals.get("images") or totals.get("image_tokens"))


def default_system_prompt_advice(template: Mapping[str, Any]) -> str | None:
    """What to do about a template that adds its own system prompt to rows whose record has none, or ``None``."""
    rows = template.get("rows_with_default_system_prompt") or 0
    if not template.get("injects_default_system_prompt") or not rows:
        return None
    prompt = template.get("default_system_prompt") or ""
    shown = prompt if len(prompt) <= 120 else prompt[:117] + "..."
    return (f"The chat template adds its default system prompt (“{shown}”) to {rows:,} row(s) whose record has no "
            "system message; it is rendered (never trained), so the model learns to answer under it. That matches "
            "serving the model without a system message. If you will serve it with a system prompt of your own, "
            "rerun with --system-prompt 'YOUR PROMPT' (records without a system message get it), or give the "
            "records system messages; --chat-template FILE selects a template that adds none.")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[bool] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="n"' if i < len(numeric) and numeric[i] else ""
            cells.append(f"<td{cls}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_samples(tokenizer, samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Decode the samples (``AuditAccumulator.samples()``) into HTML with trained tokens marked."""
    rendered = []
    for sample in samples:
        runs, elided = decoded_row(tokenizer, sample["input_ids"], sample["labels"], sample["length"],
                                   max_tokens=SAMPLE_MAX_TOKENS, tail_tokens=SAMPLE_TAIL_TOKENS)
        meta = {k: v for k, v in sample.items() if k not in ("input_ids", "labels", "sort_key")}
        rendered.append({**meta, "html": render_html(runs, elided=elided)})
    return rendered


def _packing_section(pack: Mapping[str, Any]) -> str:
    """The report's packing section (``--pack-length``): efficiency next to runtime padding, fill, sequences."""
    per = pack["sequences_per_pack"]
    rows = [["pack length / strategy", f'{_n(pack["length"])} / {_e(pack["strategy"])} (packed per shard)'],
            ["sequences / packed rows", f'{_n(pack["sequences"])} / {_n(pack["packs"])}'],
            ["packing efficiency (real tokens / packed capacity)", _e(pack["efficiency"])],
            ["sequences per packed row (mean / min / max)", f'{_e(per["mean"])} / {_n(per["min"])} / {_n(per["max"])}'],
            ["sequences truncated to fit (tokens removed)",
             f'{_n(pack["truncated_to_fit"]["sequences"])} ({_n(pack["truncated_to_fit"]["tokens_removed"])})']]
    for name, figure in pack["runtime_padding"].items():
        rows.append([f"without packing: {name.replace('_', ' ')} (efficiency)", _e(figure["efficiency"])])
    fill = [[f"{lo:.2f}–{hi:.2f}", _n(count)] for lo, hi, count in pack["fill_histogram"] if count]
    counts = [[_e(k), _n(v)] for k, v in per["histogram"].items()]
    return ('<section id="packing"><h2>Packing</h2>' + _table(["", "value"], rows)
            + _table(["fill (tokens / pack length)", "packed rows"], fill, numeric=[False, True])
            + _table(["sequences in a packed row", "packed rows"], counts, numeric=[True, True]) + "</section>")


def render_report(stats: Mapping[str, Any], samples_html: Sequence[Mapping[str, Any]], *,
                  notes: Sequence[str] = ()) -> str:
    """The whole page as a string."""
    counts = stats["counts"]
    totals = stats["totals"]
    dataset = stats["dataset"]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             "<title>chatshards audit report</title>", f"<style>{CSS}</style>", JS_GUARD, "</head><body><main>"]
    parts.append('<h1>chatshards audit report</h1>')
    images = has_images(stats)
    parts.append(
        f'<div class="meta">config {_e((dataset.get("config_fingerprint") or "")[:16])} · tokenizer '
        f'{_e(dataset.get("tokenizer"))} · max length {_e(_limit(dataset.get("max_length")))} · truncation '
        f'{_e(dataset.get("truncation"))} · loss {_e(dataset.get("loss"))} · '
        f'dedup {_e("on" if dataset.get("dedup") else "off")} · computed by {_e(stats.get("computed_by"))}</div>')
    for note in notes:
        parts.append(f'<div class="meta warn">{_e(note)}</div>')
    advice = default_system_prompt_advice(stats.get("template", {}))
    if advice:
        parts.append(f'<div class="meta warn" id="default-system-prompt-note">{_e(advice)}</div>')

    # summary
    trunc = stats["truncation"]
    dup = stats["duplicates"]
    cards = [
        ("records read", _n(counts["read"])), ("rows written", _n(counts["written"])),
        ("rejected", f'{_n(counts["rejected"])} ({_pct(counts["rejected"], counts["read"])})'),
        ("tokens", _n(totals["tokens"])), ("trained tokens", _n(totals["trained_tokens"])),
        ("trained fraction", _n(totals["trained_fraction"])),
        ("turns / trained turns", f'{_n(counts["turns"])} / {_n(counts["trained_turns"])}'),
        ("rows truncated", _n(trunc["rows_truncated"])),
        ("rows in duplicate groups", _n(dup["rows_in_duplicate_groups"])),
    ] + ([("images", _n(totals["images"]))] if images else [])
    parts.append('<section id="summary"><h2>Summary</h2><div class="cards">' + "".join(
        f'<div class="card"><div class="v">{v}</div><div class="k">{_e(k)}</div></div>' for k, v in cards)
        + "</div></section>")

    # sources
    rows = []
    for source, entry in stats["by_source"].items():
        reasons = ", ".join(f"{_e(r)}={n}" for r, n in entry["rejected_by_reason"].items())
        formats = ", ".join(f"{_e(f)}={n}" for f, n in entry["formats"].items())
        rows.append([_e(source), _n(entry["read"]), _n(entry["written"]), _n(entry["rejected"]), reasons or "–",
                     formats or "–", _n(entry["tokens"]), _n(entry["trained_tokens"]), _n(entry["truncated"])])
    parts.append('<section id="sources"><h2>By input file</h2>' + _table(
        ["input file", "read", "written", "rejected", "rejected by reason", "formats", "tokens", "trained tokens",
         "truncated"], rows, numeric=[False, True, True, True, False, False, True, True, True]) + "</section>")

    # datasets (a job with a datasets list)
    if stats.get("by_dataset"):
        rows = []
        for name, entry in stats["by_dataset"].items():
            reasons = ", ".join(f"{_e(r)}={n}" for r, n in entry["rejected_by_reason"].items())
            asked = entry.get("share_asked")
            rows.append([_e(name), _n(entry["taken"]), _n(entry["written"]), _n(entry["rejected"]), reasons or "–",
                         _n(entry["tokens"]), _n(entry["trained_tokens"]), _n(entry["lengths"]["p50"]),
                         _n(entry["lengths"]["max"]), _n(entry["share_realised"]),
                         _n(asked) if asked is not None else "–"])
        parts.append('<section id="datasets"><h2>By dataset</h2>' + _table(
            ["dataset", "taken", "written", "rejected", "rejected by reason", "tokens", "trained tokens",
             "median length", "max length", "share written", "share asked"], rows,
            numeric=[False, True, True, True, False, True, True, True, True, True, True])
            + f'<div class="meta">{_e(stats["mixture"]["meaning"])}</div></section>')

    # formats
    rows = [[_e(fmt), _n(v["written"]), _n(v["rejected"])] for fmt, v in stats["by_format"].items()]
    parts.append('<section id="formats"><h2>By detected format</h2>' + _table(
        ["format", "written", "rejected"], rows, numeric=[False, True, True])
        + '<div class="meta">Rejected records: (unparsed) = invalid JSON, (unknown) = no format recognised.</div>'
        + "</section>")

    # rejections
    rejections = stats["rejections"]
    rows = []
    for reason, count in rejections["by_reason"].items():
        ex = rejections["examples"].get(reason, {})
        more = (f' <span class="meta">({_n(ex.get("record_chars"))} chars, '
                f'first {len(ex.get("record_excerpt", ""))} shown)</span>'
                if ex.get("record_chars", 0) > len(ex.get("record_excerpt", "")) else "")
        example = (f'<div><b>{_e(ex.get("source"))}</b> record {_n(ex.get("index"))}{more}</div>'
                   f'<div>{_e(ex.get("detail"))}</div>'
                   f'<pre class="excerpt">{_e(ex.get("record_excerpt"))}</pre>') if ex else "–"
        rows.append([f'<span class="reason">{_e(reason)}</span>', _n(count), _pct(count, counts["read"]), example])
    table = _table(["reason", "records", "% of read", "example (first in stable order)"], rows,
                   numeric=[False, True, True, False]) if rows else "<p>No record was rejected.</p>"
    parts.append(f'<section id="rejections"><h2>Rejected records</h2>{table}</section>')

    # distributions
    figures = []
    stat_rows = []
    for name, (title, xlabel, kind) in PLOTS.items():
        if name in IMAGE_PLOTS and not images:
            continue  # text-only data: no plot of a single bar at 0
        hist = stats["distributions"][name]
        if kind == "log" and (hist["max"] or 0) < 16:
            kind = "int"  # small values: one bar per value reads better than a log axis
            xlabel = xlabel.replace(" (log scale)", "")
        bins = display_bins(hist["buckets"]) if kind == "log" else hist["buckets"]
        caption = " · ".join(f"{k} {_n(hist[k])}" for k in ("min", "mean", *[f"p{p}" for p in PERCENTILES], "max"))
        figures.append(f'<figure class="plot" id="plot-{name}">'
                       + svg_histogram(bins, title=title, xlabel=xlabel, kind=kind, element_id=f"svg-{name}")
                       + f"<figcaption>{caption}</figcaption></figure>")
        stat_rows.append([_e(name), _n(hist["count"])] + [_n(hist[k]) for k in
                                                          ("min", "mean", *[f"p{p}" for p in PERCENTILES], "max")])
    parts.append('<section id="distributions"><h2>Distributions (per written row)</h2><div class="plots">'
                 + "".join(figures) + "</div>" + _table(
                     ["quantity", "rows", "min", "mean", *[f"p{p}" for p in PERCENTILES], "max"], stat_rows,
                     numeric=[False] + [True] * (4 + len(PERCENTILES)))
                 + '<div class="meta">Percentiles come from fixed bins (see the last section): exact below 64, '
                   "otherwise at most 3.1% above the true value.</div></section>")

    # truncation
    removed = trunc["tokens_removed_per_truncated_row"]
    rows = [["max length / mode", f'{_e(_limit(trunc["max_length"]))} / {_e(trunc["mode"])}'],
            ["rows truncated", _n(trunc["rows_truncated"])],
            ["tokens removed (total)", _n(trunc["tokens_removed"])],
            ["tokens removed per truncated row (min / p50 / p90 / max)",
             " / ".join(_n(removed[k]) for k in ("min", "p50", "p90", "max"))],
            ["records rejected: truncation removed every trained token",
             _n(trunc["rejected_no_loss_after_truncation"])],
            ["records rejected: too long (--truncation drop)", _n(trunc["rejected_too_long"])]]
    parts.append('<section id="truncation"><h2>Truncation</h2>' + _table(["", "value"], rows) + "</section>")
    if stats.get("packing"):
        parts.append(_packing_section(stats["packing"]))

    # duplicates
    rows = [["rows whose conversation occurs more than once", _n(dup["rows_in_duplicate_groups"])],
            ["duplicate groups", _n(dup["duplicate_groups"])],
            ["redundant rows (what --dedup would drop)", _n(dup["redundant_rows"])],
            ["--dedup", "on" if dup["dedup"] else "off"], ["rejected as duplicate", _n(dup["rejected_duplicates"])]]
    groups = [[f'<code>{_e(g["conversation_hash"][:16])}</code>', _n(g["rows"]),
               f'{_e(g["first"]["source"])} record {_n(g["first"]["index"])}'] for g in dup["largest_groups"]]
    parts.append('<section id="duplicates"><h2>Exact duplicates (normalised conversation hash)</h2>'
                 + _table(["", "value"], rows)
                 + (_table(["hash", "rows", "first occurrence"], groups, numeric=[False, True, False])
                    if groups else "")
                 + "</section>")

    # template
    tmpl = stats["template"]

    def flag(bad: bool, text: str) -> str:
        return f'<span class="{"warn" if bad else "ok"}">{_e(text)}</span>'

    rows = [
        ["double BOS (template probe)", flag(tmpl["double_bos"], _yes(tmpl["double_bos"]))],
        ["rows starting with BOS / with two BOS", f'{_n(tmpl["rows_starting_with_bos"])} / '
                                                  + flag(tmpl["rows_double_bos"] > 0, f'{tmpl["rows_double_bos"]:,}')],
        ["stop tokens trained (template probe)", _e(", ".join(tmpl["stop_tokens_trained"]) or "none")],
        ["rows whose last trained token is a stop token / is not",
         f'{_n(tmpl["rows_last_trained_token_is_stop"])} / '
         + flag(tmpl["rows_last_trained_token_not_stop"] > 0, f'{tmpl["rows_last_trained_token_not_stop"]:,}')],
        ["template injects a default system prompt", flag(bool(advice),
                                                          _yes(tmpl["injects_default_system_prompt"]))],
        ["default system prompt", _e(tmpl["default_system_prompt"] or "–")],
        ["rows starting with the default system prompt", _n(tmpl["rows_with_default_system_prompt"])],
    ]
    if advice:
        rows.append(["what to do", _e(advice)])
    mismatch = stats.get("prompt_mismatch") or {}
    if mismatch:
        example = mismatch.get("example")
        shown = (f'<div>{_e(example["source"])} record {_n(example["index"])} turn {_n(example["turn"])} '
                 f'({_e(example["kind"])}): shared <code>{_e(example["shared"])}</code>, then the generation prompt '
                 f'<code>{_e(example["generation_prompt"])}</code>, the rendered turn (trained) '
                 f'<code>{_e(example["rendered"])}</code></div>') if example else ""
        kinds = ", ".join(f"{_e(k)}={v}" for k, v in (mismatch.get("by_kind") or {}).items())
        rows.append([f'records / turns rendered differently from their generation prompt '
                     f'(--prompt-mismatch {_e(mismatch.get("mode"))})',
                     flag(bool(mismatch.get("records")),
                          f'{mismatch.get("records", 0):,} / {mismatch.get("turns", 0):,}')
                     + (f" ({kinds})" if kinds else "") + shown])
    parts.append('<section id="template"><h2>Template checks</h2>' + _table(["check", "result"], rows) + "</section>")

    # samples
    blocks = []
    for i, sample in enumerate(samples_html):
        head = (f'{_e(sample["why"])}: {_e(sample["source"])} record {_n(sample["index"])} · {_e(sample["format"])} · '
                f'{_n(sample["length"])} tokens, {_n(sample["num_loss_tokens"])} trained'
                + (f' · truncated ({_n(sample.get("truncated_tokens"))} tokens removed)'
                   if sample.get("truncated") else ""))
        blocks.append(f'<div class="sample" id="sample-{i}"><h3>{head}</h3>'
                      f'<div class="tokens">{sample["html"]}</div></div>')
    legend = ('<div class="legend meta"><span class="trained">trained tokens</span>'
              '<span class="prompt">not trained (label -100)</span></div>')
    parts.append('<section id="samples"><h2>Samples (decoded, trained tokens highlighted)</h2>' + legend
                 + ("".join(blocks) or "<p>No rows.</p>") + "</section>")

    # bins
    parts.append('<section id="bins"><h2>Bins and precision</h2>' + _table(
        ["", "definition"], [[_e(k), _e(v)] for k, v in stats["bins"].items()]) + "</section>")
    parts.append('<div id="js-status" data-errors="-1">script did not run</div>')
    parts.append(JS_STATUS)
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"
