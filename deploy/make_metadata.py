"""Write ``deploy/metadata.json`` (the Flex Template's parameter list) from the job's own parser.

Every flag of ``pipeline/launch/cli.py`` becomes one template parameter, named with underscores (the form
``cli.py`` accepts beside the dashed one). ``tests/test_dataflow_deploy.py`` fails when the file is
out of date; regenerate with::

    python deploy/make_metadata.py          # rewrite deploy/metadata.json
    python deploy/make_metadata.py --check  # exit 1 when it is stale
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
METADATA_PATH = os.path.join(HERE, "metadata.json")

TEMPLATE_NAME = "chatshards"
TEMPLATE_DESCRIPTION = (
    "Turn raw chat records (JSON / JSON Lines: OpenAI messages, ShareGPT, Alpaca, ...) into tokenized, "
    "labelled Arrow training shards with a manifest. Every parameter is a flag of `python -m pipeline`; "
    "Dataflow options (sdk_container_image, max_num_workers, machine_type, ...) are passed as usual."
)
# Flex Template parameters are given once each: the launcher splits a comma-separated --input.
EXTRA_HELP = {
    "input": "Several patterns: separate them with commas (the launcher splits them).",
    "tokenizer": "A gs:// folder holding tokenizer.json / tokenizer_config.json is copied to each "
                 "worker (and the launcher) before loading; a hub id needs internet access on workers.",
    "output": "A gs:// folder. The manifest.json written last marks a finished dataset.",
    "config": "On Dataflow a gs:// path (read by the launcher); a file with a datasets list gives the inputs, so "
              "input may then be left out; parameters given beside it override its keys.",
}


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _help(action) -> str:
    parts = [re.sub(r"\s+", " ", (action.help or _label(action.dest)).replace("%%", "%")).strip()]
    if action.choices:
        parts.append(f"One of: {', '.join(map(str, action.choices))}")
    if action.nargs == 0:
        parts.append("true or false (default false)")
    if action.dest in EXTRA_HELP:
        parts.append(EXTRA_HELP[action.dest])
    text = " ".join(part if part.endswith(".") else part + "." for part in parts if part)
    return text[0].upper() + text[1:]


def _regexes(action) -> list[str]:
    if action.nargs == 0:
        return ["^(true|false|True|False)$"]
    if action.choices:
        return ["^(" + "|".join(re.escape(str(c)) for c in action.choices) + ")$"]
    if action.type is int:
        return ["^[0-9]+$"]
    return []


def job_parameters() -> list[dict]:
    """One metadata entry per flag of the job's parser (help excluded), in the parser's order."""
    from pipeline.launch.cli import build_parser

    parameters = []
    for action in build_parser()._actions:
        if action.dest == "help" or not action.option_strings:
            continue
        entry = {
            "name": action.dest,
            "label": _label(action.dest),
            "helpText": _help(action),
            "isOptional": not action.required,
        }
        regexes = _regexes(action)
        if regexes:
            entry["regexes"] = regexes
        parameters.append(entry)
    return parameters


def metadata() -> dict:
    return {"name": TEMPLATE_NAME, "description": TEMPLATE_DESCRIPTION, "parameters": job_parameters()}


def metadata_text() -> str:
    return json.dumps(metadata(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when deploy/metadata.json is stale")
    args = parser.parse_args()
    text = metadata_text()
    current = open(METADATA_PATH, encoding="utf-8").read() if os.path.exists(METADATA_PATH) else ""
    if args.check:
        if current != text:
            print(f"{METADATA_PATH} is stale: run python deploy/make_metadata.py", file=sys.stderr)
            return 1
        return 0
    with open(METADATA_PATH, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {METADATA_PATH} ({len(metadata()['parameters'])} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
