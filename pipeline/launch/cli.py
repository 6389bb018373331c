"""Command line of ``python -m pipeline``: our flags, validated up front; the rest goes to Beam.

Every flag is accepted with dashes (``--max-length``) and with underscores (``--max_length``, the
form Dataflow Flex Template parameters use), spelled in full: an abbreviation (``--max-len``) is an
unknown flag, refused with a suggestion, as Beam refuses abbreviations of its own options. Config
errors exit with status 2 and a one-line reason before any work starts.
"""
from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from transforms.config import TokenizeOptions
from transforms.formats import ALL_FORMATS, MESSAGE_FIELDS, VISION_FORMATS, FormatOptions, parse_mapping_option
from transforms.packing.options import STRATEGIES as PACK_STRATEGIES
from transforms.packing.options import PackingOptions, check_task_packable
from transforms.tasks import TASKS, task_flags

if TYPE_CHECKING:  # only for the annotation; the vision module loads PIL lazily
    from transforms.mixture import Mixture
    from transforms.vision.part import ImageOptions


class ConfigError(ValueError):
    """A user configuration error: reported as ``chatshards: error: ...`` with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one-line :class:`ConfigError` s (argparse itself prints the whole usage first)."""

    def error(self, message: str):
        missing = re.match(r"the following arguments are required: (.+)", message)
        if missing:
            flags = [flag.split("/")[0].strip() for flag in missing.group(1).split(", ")]
            example = "python -m pipeline --input 'data/*.jsonl' --output out/"
            raise ConfigError(f"{' and '.join(flags)} {'is' if len(flags) == 1 else 'are'} required, e.g. {example} "
                              "(python -m pipeline --help lists every flag)")
        message = re.sub(r"^argument (--[\w-]+)(/--\w+)?: ", r"\1: ", message)  # one spelling of the flag
        raise ConfigError(f"{message} (python -m pipeline --help lists every flag)")


# Launch-time bounds on what one flag can make the job cost (README, "Reliability").
MAX_LENGTH_LIMIT = 1_048_576          # --max-length: tokens per row
PADDED_TOKENS_PER_BATCH = 64 * 1024 * 1024  # --pad-to max_length: --batch-size x --max-length (~600 MB of columns)
MAX_NUM_SHARDS = 10_000               # --num-shards
INPUT_BYTES_PER_SHARD = 64            # --num-shards: at most one shard per 64 input bytes (16 always allowed)
MIN_SHARDS_ALLOWED = 16


@dataclass(frozen=True, kw_only=True)
class JobArgs:
    inputs: tuple[str, ...]
    output: str
    tokenizer: str | None
    chat_template: str | None
    trust_remote_code: bool
    format_options: FormatOptions
    tokenize_options: TokenizeOptions
    num_shards: int | None
    overwrite: bool
    dedup: bool
    batch_size: int
    validate_inputs: bool
    beam_args: tuple[str, ...]
    no_audit: bool = False
    # --workers: processes of the local engine (None: chosen from the input size; see pipeline.launch.main)
    workers: int | None = None
    # --worker-timeout: seconds a local-engine worker may go without a sign of life before the job fails
    worker_timeout: float = 300.0
    # vision jobs (--processor); see transforms/vision/part.py
    processor: str | None = None
    image_options: "ImageOptions | None" = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    # --task (transforms/tasks/): the task's name and options (None for chat, whose options are the above)
    task: str = "chat"
    task_options: object | None = None
    # --pack-length / --pack-strategy (None: rows are not packed); see docs/packing.md
    packing: PackingOptions | None = None
    # --config FILE with a datasets list (pipeline/launch/config_file.py; docs/config.md): the datasets, their
    # record options and shares (their files are matched at launch, pipeline.launch.checks)
    mixture: "Mixture | None" = None
    # --config FILE: {"path", "resolved"}: the file's path and every setting after the flags' overrides
    config_file: dict | None = None
    # --preview: print the resolved plan and a few rendered rows, write nothing (pipeline/launch/preview.py)
    preview: bool = False
    # what the terminal shows (never the output): --quiet (no progress line, no summary), --verbose (Beam's logs)
    quiet: bool = False
    verbose: bool = False
    # --max-rejected: fail the job (exit 3) above this many rejected records (int) or this fraction of those
    # read (float, from "P%"); None: no limit
    max_rejected: "int | float | None" = None


# The flags that only the chat task reads, with their defaults: another --task refuses them when given.
CHAT_ONLY_FLAGS = {"chat_template": None, "loss": "assistant", "multi_turn": "auto", "no_train_reasoning": False,
                   "fold_system": False, "control_tokens_in_data": "text", "chat_template_kwargs": None,
                   "template_date": None, "template_timeout": 10.0, "system_prompt": None, "role_map": None,
                   "processor": None, "image_root": None, "store_pixels": False, "image_encoding": "webp",
                   "max_image_pixels": None, "min_pixels": None, "max_pixels": None, "pad_to": None,
                   "prompt_mismatch": "diverge"}


def _task_formats() -> tuple[str, ...]:
    """Every ``--format`` name: the chat record formats, then the other tasks' record shapes."""
    names = list(ALL_FORMATS)
    for task in TASKS.values():
        for name in getattr(task.options_class, "FORMATS", ()) if task.options_class else ():
            if name not in names:
                names.append(name)
    return tuple(names)


def _flag(parser, name: str, **kwargs):
    dashed = "--" + name
    underscored = "--" + name.replace("-", "_")
    names = [dashed] if dashed == underscored else [dashed, underscored]
    parser.add_argument(*names, dest=name.replace("-", "_"), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m pipeline",
        allow_abbrev=False,  # --max-len is refused with a suggestion, never read as --max-length (Beam's rule too)
        description="Turn raw chat records into training-ready Arrow shards (Apache Beam job). "
        "Unknown flags are passed to Beam (--runner, --direct_num_workers, --project, ...).",
    )
    _flag(parser, "input", action="append", metavar="GLOB",
          help="input files (repeatable; globs; local or any Beam filesystem such as gs://; .gz read transparently); "
          "required unless --config gives them")
    _flag(parser, "output", metavar="DIR", help="output folder (local or gs://); required unless --config gives it")
    _flag(parser, "config", metavar="FILE",
          help="a job config file (YAML or JSON, local or gs://): every flag as a key, and a datasets list with "
          "per-dataset formats, maps, system prompts and shares; flags given beside it override it (docs/config.md)")
    _flag(parser, "preview", action="store_true",
          help="print the resolved plan (each dataset, its detected formats, files and bytes, a few rendered rows "
          "with the trained tokens marked) and stop: nothing is written")
    _flag(parser, "task", default="chat", choices=tuple(TASKS),
          help="what the rows train (default: chat): chat (chat-template rows), text (causal LM on raw text), "
          "seq2seq (encoder-decoder source/target), mlm (masked LM) ...; see docs/tasks.md")
    _flag(parser, "format", default="auto", choices=_task_formats(),
          help="record format (default: auto, per record; vqa = image/question/answer, needs --processor; "
          "other tasks: their record shapes, see docs/tasks.md)")
    _flag(parser, "field-map", default=None, metavar="CANON=FIELD,...",
          help="rename dataset fields, e.g. messages=dialog,instruction=question")
    _flag(parser, "role-map", default=None, metavar="SRC=ROLE,...", help="map source roles, e.g. bot=assistant")
    _flag(parser, "tokenizer", default=None, metavar="PATH_OR_HUB_ID",
          help="tokenizer directory or hub id (default: the bundled offline Qwen2-vocabulary tokenizer)")
    _flag(parser, "chat-template", default=None, metavar="FILE", help="Jinja file that overrides the chat template")
    _flag(parser, "trust-remote-code", action="store_true", help="allow tokenizer code from the hub")
    _flag(parser, "max-length", type=int, default=None, metavar="N", help="maximum tokens per row (default: no limit)")
    _flag(parser, "truncation", default="right", choices=("right", "left", "turns", "drop"),
          help="how over-long records are handled (default: right)")
    _flag(parser, "loss", default="assistant", choices=("assistant", "all", "last"),
          help="which tokens are trained (default: assistant)")
    _flag(parser, "pad-to", default=None, choices=("max_length",), help="write fixed-length padded rows")
    _flag(parser, "multi-turn", default="auto", choices=("auto", "split", "single"),
          help="one row per record when the template renders every supervised turn in the full conversation as "
          "at inference, else one row per supervised turn (auto, default); always split; or single (reject instead)")
    _flag(parser, "prompt-mismatch", default="diverge", choices=("diverge", "reject"),
          help="a supervised turn the template renders differently from what follows its own generation prompt: "
          "train it from where the two diverge, on a token boundary (diverge, default; counted in the audit), or "
          "reject the record (reject: ambiguous_span / no_generation_prompt)")
    _flag(parser, "no-train-reasoning", action="store_true",
          help="keep the supervised turns' reasoning in the rows but do not train it")
    _flag(parser, "fold-system", action="store_true",
          help="templates without system messages: prepend a record's system text to its first user message "
          "(default: reject such records as system_not_supported)")
    _flag(parser, "control-tokens-in-data", default="text", choices=("text", "reject", "special"),
          help="control-token strings inside the data (e.g. a literal <|im_end|>): tokenized as text (default), "
          "rejected, or obeyed as control tokens (special)")
    _flag(parser, "chat-template-kwargs", default=None, metavar="JSON",
          help='extra template variables for every record, e.g. \'{"enable_thinking": false}\' (a record\'s own '
          '"chat_template_kwargs" field wins)')
    _flag(parser, "template-date", default=None, metavar="YYYY-MM-DD",
          help="the date strftime_now gives templates that read the clock (default: today, recorded in the manifest)")
    _flag(parser, "template-timeout", type=float, default=10.0, metavar="SECONDS",
          help="render time budget per record; a record over it is rejected as template_limit (default: 10)")
    _flag(parser, "pack-length", type=int, default=None, metavar="N",
          help="pack rows into packed rows of at most N tokens (per shard; rows longer than N follow --truncation, "
          "--max-length defaults to N); see docs/packing.md")
    _flag(parser, "pack-strategy", default=None, choices=PACK_STRATEGIES,
          help="how rows are packed: bfd (best-fit decreasing, default), ffd (first-fit decreasing), sequential")
    _flag(parser, "num-shards", type=int, default=None, metavar="N", help="number of shards (default: from data size)")
    _flag(parser, "system-prompt", default=None, metavar="TEXT", help="system message for records without one")
    _flag(parser, "dedup", action="store_true", help="keep only the first of exact-duplicate conversations")
    _flag(parser, "overwrite", action="store_true", help="replace an existing dataset in --output")
    _flag(parser, "batch-size", type=int, default=256, metavar="N", help="records tokenized per batch (default: 256)")
    _flag(parser, "no-audit", action="store_true",
          help="skip the audit statistics (audit/stats.json, audit/report.html, the manifest's audit section)")
    _flag(parser, "workers", type=int, default=None, metavar="N",
          help="processes for the default command (no Beam flags): 1 = this process only (default: one per core "
          "when the input is large enough to pay for it)")
    _flag(parser, "worker-timeout", type=float, default=None, metavar="SECONDS",
          help="the default command's worker processes: fail the job when one shows no sign of life for this "
          "long, e.g. stopped or stuck (default: 300)")
    _flag(parser, "max-rejected", default=None, metavar="N|P%",
          help="fail the job (exit status 3, after writing the manifest, rejected/ and the audit) when more than N "
          "records, or more than P%% of the records read, are rejected (like BigQuery's max_bad_records; default: "
          "no limit). A job that writes no row always exits 3")
    _flag(parser, "quiet", action="store_true", help="print nothing but warnings and errors (no progress line, "
          "no summary)")
    _flag(parser, "verbose", action="store_true",
          help="also show Apache Beam's own log lines (its workers' included), which are hidden otherwise")
    _flag(parser, "no-validate-inputs", action="store_true",
          help="do not check at launch that every --input matches files (for offline graph builds)")
    # vision-language records (images): see README, section "Images: vision-language records"
    _flag(parser, "processor", default=None, metavar="PATH_OR_HUB_ID",
          help="transformers processor (local folder or cached hub id) of a vision-language model; enables images. "
          "The tokenizer comes from the same folder unless --tokenizer is given")
    _flag(parser, "image-root", default=None, metavar="DIR",
          help="folder relative image paths are resolved in (default: each record file's folder); "
          "paths may not leave it")
    _flag(parser, "store-pixels", action="store_true",
          help="store raw uint8 pixels instead of encoded images (more disk, no decoding at training time)")
    _flag(parser, "image-encoding", default="webp", choices=("webp", "png", "jpeg"),
          help="encoding of stored images: webp (default) and png are lossless and pixel-exact, jpeg (q95) is smaller")
    _flag(parser, "max-image-pixels", type=int, default=None, metavar="N",
          help="reject images with more pixels than this as image_too_large (default: 50000000)")
    _flag(parser, "min-pixels", type=int, default=None, metavar="N",
          help="dynamic-resolution processors (Qwen-VL): override the processor's min_pixels")
    _flag(parser, "max-pixels", type=int, default=None, metavar="N",
          help="dynamic-resolution processors (Qwen-VL): override the processor's max_pixels")
    # the flags of the tasks other than chat (transforms/tasks/*: TaskFlag), each added once
    for flag, _ in task_flags().values():
        _flag(parser, flag.name, **flag.argparse_kwargs())
    return parser


def task_options_of(known: argparse.Namespace, field_map: dict):
    """The options of ``--task`` (``None`` for chat) from the flags given; ``ConfigError`` for a flag of another
    task, a chat-only flag given to another task, or an invalid value."""
    given = {name: flag for name, (flag, _) in task_flags().items()
             if getattr(known, name.replace("-", "_"), None) is not None}
    task = TASKS[known.task]
    own = {flag.name for flag in task.flags}
    for name in given:
        if name not in own:
            owners = task_flags()[name][1]
            raise ConfigError(f"--{name} applies to --task {', '.join(owners)}, not --task {known.task}")
    if task.chat_flags:
        return None
    chat_only = [name for name, default in CHAT_ONLY_FLAGS.items()
                 if getattr(known, name) != default and name not in task.chat_options]
    if chat_only:
        raise ConfigError(f"{', '.join('--' + n.replace('_', '-') for n in chat_only)}: chat options; "
                          f"--task {known.task} does not read them")
    values = {flag.field: flag.value if flag.switch else getattr(known, name.replace("-", "_"))
              for name, flag in given.items()}
    try:
        return task.options_class(format=known.format, field_map=field_map, **values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from exc


def task_format_options(known: argparse.Namespace, mappings: dict) -> FormatOptions:
    """The message-reading options of a task other than chat: its ``--format``/``--field-map`` are its own, so
    only the chat options it reads (``Task.chat_options``: ``--role-map``, ``--system-prompt``) and the message
    fields of ``--field-map`` (role, content, from, value) are kept; the defaults for the other tasks."""
    reads = TASKS[known.task].chat_options
    if "role_map" not in reads and "system_prompt" not in reads:
        return FormatOptions()
    return FormatOptions(field_map={k: v for k, v in mappings["--field-map"].items() if k in MESSAGE_FIELDS},
                         role_map=mappings["--role-map"], system_prompt=known.system_prompt)


def _processor_tokenizer(processor: str) -> str | None:
    """The tokenizer a vision job uses without --tokenizer: the processor's own, when it has one."""
    if not os.path.isdir(processor):
        return processor  # a hub id: its tokenizer lives next to the processor
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    return processor if any(os.path.isfile(os.path.join(processor, name)) for name in names) else None


def check_beam_args(beam_args: Sequence[str], parser: argparse.ArgumentParser) -> None:
    """Refuse what neither chatshards nor Beam knows (Beam would log "Discarding unparseable args" and
    run without the setting): an unknown flag, with a suggestion (``--max-lenght`` -> did you mean
    ``--max-length``?), or a stray argument. Beam's flags are recognised by Beam's own parser
    (``PipelineOptions.get_all_options``: options it must retain as unknown are the unknown ones)."""
    if not beam_args:
        return
    from apache_beam.options.pipeline_options import PipelineOptions  # only when there are Beam flags to check

    beam_logger = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_logger.level
    beam_logger.setLevel(logging.ERROR)  # its "Discarding unparseable args" warning: we say it better
    try:
        options = PipelineOptions(list(beam_args))
        known = set(options.get_all_options(retain_unknown_options=False))
        unknown = set(options.get_all_options(retain_unknown_options=True)) - known
    finally:
        beam_logger.setLevel(level)
    ours = sorted(flag for flag in parser._option_string_actions if flag.startswith("--") and "_" not in flag[2:])
    beam_flags = sorted(f"--{name}" for name in known)
    previous_takes_value = False
    for arg in beam_args:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            previous_takes_value = "=" not in arg
            if name.lstrip("-").replace("-", "_") in unknown:
                guess = (difflib.get_close_matches(name, ours, n=1, cutoff=0.75)
                         or difflib.get_close_matches(name, ours + beam_flags, n=1, cutoff=0.6))
                hint = f"; did you mean {guess[0]}?" if guess else " (not a chatshards flag, nor a Beam option)"
                raise ConfigError(f"unknown flag {name}{hint}")
        elif not previous_takes_value:
            raise ConfigError(f"unexpected argument {arg!r} (every value needs a flag; several inputs are given "
                              "as --input A --input B or one glob)")
        else:
            previous_takes_value = False


def check_limits(known: argparse.Namespace) -> None:
    """Fail fast on settings whose cost has no sensible bound (see the constants above)."""
    if known.max_length is not None and known.max_length > MAX_LENGTH_LIMIT:
        raise ConfigError(f"--max-length {known.max_length} is above the limit of {MAX_LENGTH_LIMIT:,} tokens per row")
    if known.pack_length is not None and known.pack_length > MAX_LENGTH_LIMIT:
        raise ConfigError(f"--pack-length {known.pack_length} is above the limit of {MAX_LENGTH_LIMIT:,} tokens "
                          "per row")
    if known.num_shards is not None and known.num_shards > MAX_NUM_SHARDS:
        raise ConfigError(f"--num-shards {known.num_shards} is above the limit of {MAX_NUM_SHARDS:,} shards")
    if known.pad_to == "max_length" and known.max_length is not None:
        padded = known.batch_size * known.max_length
        if padded > PADDED_TOKENS_PER_BATCH:
            raise ConfigError(
                f"--pad-to max_length with --max-length {known.max_length} and --batch-size {known.batch_size} pads "
                f"{padded:,} tokens per batch, above the limit of {PADDED_TOKENS_PER_BATCH:,}; use --batch-size "
                f"{max(1, PADDED_TOKENS_PER_BATCH // known.max_length)} or less")


def check_num_shards_for_input(num_shards: int | None, input_bytes: int) -> None:
    """``--num-shards`` may not be absurdly larger than the input: at most one shard per
    ``INPUT_BYTES_PER_SHARD`` input bytes (``MIN_SHARDS_ALLOWED`` are always allowed)."""
    if num_shards is None:
        return
    allowed = max(MIN_SHARDS_ALLOWED, input_bytes // INPUT_BYTES_PER_SHARD)
    if num_shards > allowed:
        raise ConfigError(f"--num-shards {num_shards} is far more than {input_bytes:,} input bytes can fill (at most "
                          f"{allowed} here: one shard per {INPUT_BYTES_PER_SHARD} bytes); most shards would be empty")


def parse_max_rejected(text: str | None) -> int | float | None:
    """``--max-rejected``: ``"N"`` -> ``N`` (records), ``"P%"`` -> ``P / 100`` (a fraction of the records read)."""
    if text is None:
        return None
    value = "" if isinstance(text, bool) else str(text).strip()  # a config file may give a number
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if not 0 <= percent <= 100:
                raise ValueError
            return percent / 100
        count = int(value)
        if count < 0:
            raise ValueError
        return count
    except ValueError:
        raise ConfigError(f"--max-rejected takes a count of records (e.g. 100) or a percentage of the records read "
                          f"(e.g. 5%), got {text!r}") from None


def packing_options(known: argparse.Namespace) -> PackingOptions | None:
    """``--pack-length`` / ``--pack-strategy`` checked against the other flags (``None``: no packing).

    A row longer than the pack length cannot be packed, so ``--max-length`` defaults to the pack length
    (rows are cut or rejected by ``--truncation``) and may not exceed it; rows written padded cannot be
    packed; the task must produce packable rows (:func:`transforms.packing.options.check_task_packable`)."""
    if known.pack_length is None:
        if known.pack_strategy is not None:
            raise ConfigError("--pack-strategy needs --pack-length N")
        return None
    try:
        options = PackingOptions(length=known.pack_length, strategy=known.pack_strategy or "bfd")
        check_task_packable(getattr(known, "task", None) or "chat")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if known.pad_to is not None:
        raise ConfigError("--pad-to max_length cannot be combined with --pack-length: packed rows are padded to the "
                          "pack length by the runtime collator (Collator.from_manifest)")
    if known.max_length is not None and known.max_length > known.pack_length:
        raise ConfigError(f"--max-length {known.max_length} is longer than --pack-length {known.pack_length}: a row "
                          "longer than a pack cannot be packed; omit --max-length (it defaults to the pack length) "
                          "or lower it")
    return options


def config_path_of(argv: Sequence[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (``--config F``, ``--config=F``, ``--config_file`` is not it), or
    ``None``."""
    for k, arg in enumerate(argv):
        if arg == "--":
            break
        name, has_value, value = arg.partition("=")
        if name == "--config":
            if has_value:
                return value
            return argv[k + 1] if k + 1 < len(argv) else ""
    return None


def parse_args(argv: Sequence[str] | None) -> JobArgs:
    """Parse and validate a command line without ``--config`` (with it:
    :func:`pipeline.launch.config_file.parse_command_line`, which ``python -m pipeline`` calls). Raises
    :class:`ConfigError` on a bad configuration."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if config_path_of(argv) is not None:
        raise ConfigError("--config FILE is read by pipeline.launch.config_file.parse_command_line")
    parser = build_parser()
    known, beam_args = parser.parse_known_args(argv)
    missing = [flag for flag, value in (("--input", known.input), ("--output", known.output)) if not value]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required, e.g. python -m "
                          "pipeline --input 'data/*.jsonl' --output out/ (or --config FILE; python -m pipeline --help "
                          "lists every flag)")
    check_beam_args(beam_args, parser)
    return job_args(known, beam_args)


def _mapping(flag: str, value) -> dict:
    """A ``--field-map``/``--role-map`` value: the flag's ``a=b,c=d`` text, or (from a config file) a mapping."""
    if not value:
        return {}
    if isinstance(value, dict):
        return dict(value)
    try:
        return parse_mapping_option(value)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from exc


def template_kwargs_of(value) -> dict:
    """A ``--chat-template-kwargs`` value: JSON object text, or (from a config file) a mapping."""
    if not value:
        return {}
    if isinstance(value, dict):
        return dict(value)
    try:
        kwargs = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--chat-template-kwargs is not valid JSON: {exc.msg}") from None
    if not isinstance(kwargs, dict):
        raise ConfigError("--chat-template-kwargs must be a JSON object")
    return kwargs


def job_args(known: argparse.Namespace, beam_args: Sequence[str]) -> JobArgs:
    """The checked :class:`JobArgs` of parsed flags (``known``: the parser's namespace, or one a config file
    filled in the same way; ``beam_args``: the flags left to Beam, already checked). Raises
    :class:`ConfigError`."""
    mappings = {flag: _mapping(flag, value) for flag, value in (("--field-map", known.field_map),
                                                                ("--role-map", known.role_map))}
    task_options = task_options_of(known, mappings["--field-map"])
    packing = packing_options(known)
    try:
        format_options = FormatOptions(
            format=known.format,
            field_map=mappings["--field-map"],
            role_map=mappings["--role-map"],
            system_prompt=known.system_prompt,
            images=known.processor is not None,
        ) if task_options is None else task_format_options(known, mappings)
        template_kwargs = template_kwargs_of(known.chat_template_kwargs)
        tokenize_options = TokenizeOptions(
            max_length=known.max_length if packing is None or known.max_length is not None else packing.length,
            truncation=known.truncation, loss=known.loss, pad_to=known.pad_to,
            multi_turn=known.multi_turn, train_reasoning=not known.no_train_reasoning,
            system_mode="fold" if known.fold_system else "reject", control_tokens=known.control_tokens_in_data,
            template_kwargs=template_kwargs, template_date=known.template_date,
            render_seconds=known.template_timeout, prompt_mismatch=known.prompt_mismatch,
        )
        if task_options is not None:
            TASKS[known.task].check_config(task_options, tokenize_options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if known.num_shards is not None and known.num_shards < 1:
        raise ConfigError(f"--num-shards must be >= 1, got {known.num_shards}")
    if known.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {known.batch_size}")
    if known.workers is not None:
        if known.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {known.workers}")
        if beam_args:
            raise ConfigError("--workers sets the processes of the default command; with Beam flags use "
                              "--direct_num_workers (local runners) or --max_num_workers (Dataflow)")
    if known.worker_timeout is not None:
        if not 1 <= known.worker_timeout <= 86400:
            raise ConfigError(f"--worker-timeout must be between 1 and 86400 seconds, got {known.worker_timeout:g}")
        if beam_args:
            raise ConfigError("--worker-timeout is for the default command's worker processes; Beam runners "
                              "watch their own workers")
    check_limits(known)
    max_rejected = parse_max_rejected(known.max_rejected)
    if known.quiet and known.verbose:
        raise ConfigError("--quiet and --verbose contradict each other; give one")
    if known.truncation in ("turns", "drop", "left") and known.max_length is None and task_options is None \
            and packing is None:
        raise ConfigError(f"--truncation {known.truncation} needs --max-length N")
    image_options = None
    tokenizer = known.tokenizer
    if known.processor is None:
        given = [flag for flag, value in (("--image-root", known.image_root), ("--store-pixels", known.store_pixels),
                                          ("--max-image-pixels", known.max_image_pixels),
                                          ("--min-pixels", known.min_pixels), ("--max-pixels", known.max_pixels),
                                          ("--format vqa", known.format in VISION_FORMATS)) if value]
        if known.image_encoding != "webp":
            given.append("--image-encoding")
        if given:
            raise ConfigError(f"{', '.join(given)}: image options need --processor")
    else:
        from transforms.vision.part import ImageOptions

        for flag, value in (("--max-image-pixels", known.max_image_pixels), ("--min-pixels", known.min_pixels),
                            ("--max-pixels", known.max_pixels)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} must be >= 1, got {value}")
        try:
            image_options = ImageOptions(
                image_root=known.image_root, store_pixels=known.store_pixels, encoding=known.image_encoding,
                **({"max_image_pixels": known.max_image_pixels} if known.max_image_pixels else {}),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if tokenizer is None:
            tokenizer = _processor_tokenizer(known.processor)
    return JobArgs(
        inputs=tuple(known.input),
        output=known.output.rstrip("/") or "/",
        tokenizer=tokenizer,
        chat_template=known.chat_template,
        trust_remote_code=known.trust_remote_code,
        format_options=format_options,
        tokenize_options=tokenize_options,
        num_shards=known.num_shards,
        overwrite=known.overwrite,
        dedup=known.dedup,
        batch_size=known.batch_size,
        validate_inputs=not known.no_validate_inputs,
        beam_args=tuple(beam_args),
        no_audit=known.no_audit,
        workers=known.workers,
        **({"worker_timeout": known.worker_timeout} if known.worker_timeout is not None else {}),
        processor=known.processor,
        image_options=image_options,
        min_pixels=known.min_pixels,
        max_pixels=known.max_pixels,
        task=known.task,
        task_options=task_options,
        packing=packing,
        preview=bool(getattr(known, "preview", False)),
        quiet=known.quiet,
        verbose=known.verbose,
        max_rejected=max_rejected,
    )
