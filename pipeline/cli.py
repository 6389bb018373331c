"""Command line of ``python -m pipeline``: our flags, validated up front; the rest goes to Beam.

Every flag is accepted with dashes (``--max-length``) and with underscores (``--max_length``, the
form Dataflow Flex Template parameters use). Config errors exit with status 2 and a one-line reason
before any work starts.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Sequence

from transforms.config import TokenizeOptions
from transforms.formats import FORMATS, FormatOptions, parse_mapping_option


class ConfigError(ValueError):
    """A user configuration error: reported as ``chatshards: error: ...`` with exit status 2."""


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


def _flag(parser, name: str, **kwargs):
    dashed = "--" + name
    underscored = "--" + name.replace("-", "_")
    names = [dashed] if dashed == underscored else [dashed, underscored]
    parser.add_argument(*names, dest=name.replace("-", "_"), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Turn raw chat records into training-ready Arrow shards (Apache Beam job). "
        "Unknown flags are passed to Beam (--runner, --direct_num_workers, --project, ...).",
    )
    _flag(parser, "input", action="append", required=True, metavar="GLOB",
          help="input files (repeatable; globs; local or any Beam filesystem such as gs://; .gz read transparently)")
    _flag(parser, "output", required=True, metavar="DIR", help="output folder (local or gs://)")
    _flag(parser, "format", default="auto", choices=FORMATS, help="record format (default: auto, per record)")
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
    _flag(parser, "num-shards", type=int, default=None, metavar="N", help="number of shards (default: from data size)")
    _flag(parser, "system-prompt", default=None, metavar="TEXT", help="system message for records without one")
    _flag(parser, "dedup", action="store_true", help="keep only the first of exact-duplicate conversations")
    _flag(parser, "overwrite", action="store_true", help="replace an existing dataset in --output")
    _flag(parser, "batch-size", type=int, default=256, metavar="N", help="records tokenized per batch (default: 256)")
    _flag(parser, "no-validate-inputs", action="store_true",
          help="do not check at launch that every --input matches files (for offline graph builds)")
    return parser


def parse_args(argv: Sequence[str] | None) -> JobArgs:
    """Parse and validate the command line. Raises :class:`ConfigError` on a bad configuration."""
    parser = build_parser()
    known, beam_args = parser.parse_known_args(argv)
    mappings = {}
    for flag, text in (("--field-map", known.field_map), ("--role-map", known.role_map)):
        try:
            mappings[flag] = parse_mapping_option(text) if text else {}
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from exc
    try:
        format_options = FormatOptions(
            format=known.format,
            field_map=mappings["--field-map"],
            role_map=mappings["--role-map"],
            system_prompt=known.system_prompt,
        )
        tokenize_options = TokenizeOptions(
            max_length=known.max_length, truncation=known.truncation, loss=known.loss, pad_to=known.pad_to
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if known.num_shards is not None and known.num_shards < 1:
        raise ConfigError(f"--num-shards must be >= 1, got {known.num_shards}")
    if known.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {known.batch_size}")
    if known.truncation in ("turns", "drop", "left") and known.max_length is None:
        raise ConfigError(f"--truncation {known.truncation} needs --max-length N")
    return JobArgs(
        inputs=tuple(known.input),
        output=known.output.rstrip("/") or "/",
        tokenizer=known.tokenizer,
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
    )
