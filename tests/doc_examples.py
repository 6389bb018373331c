"""Running the code blocks of the README and ``docs/*.md`` as a reader would (used by ``tests/test_doc_examples.py``).

Conventions a document follows (``docs/testing.md``):

* a ``console`` block holds commands, each on a line starting with ``$ `` (a line ending in ``\\`` continues
  it), each followed by what it prints; the commands run in order in the document's work folder, and what a
  command prints must match the lines under it;
* a ``python`` block runs as a script in the same folder; the ``text output`` block right after it, if any,
  is what it prints;
* ``yaml`` and ``json`` blocks must parse;
* a block that cannot run here (the set-up itself, a Google Cloud command, a GPU) carries an HTML comment
  ``<!-- not run: why -->`` on the line before it; every other block runs.

Matching what a run prints: whitespace runs (line breaks included) count as one space, so a long line may be
wrapped in the document; ``...`` stands for any text; durations (``1.0s``, ``12 s``) and rates
(``(15 records/s)``) match any number, since they change from run to run.

The work folder of a document holds links to the repository's ``examples/``, ``tests/data/`` and ``deploy/``,
so relative paths in the commands work as they do from a checkout; ``python`` and ``.venv/bin/python`` run the
test's interpreter, with the repository on ``PYTHONPATH``.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,})(?P<info>[^`\n]*)$")
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<why>[^>]*?)\s*-->")
RUN_LANGUAGES = ("console", "python")
PARSE_LANGUAGES = ("yaml", "json")
LINKED = ("examples", "tests", "deploy", "benchmarks")


@dataclass
class Block:
    """One fenced code block: its language and flags (``text output``), text, line, and why it is not run."""

    path: Path
    line: int
    language: str
    flags: tuple[str, ...]
    text: str
    not_run: str | None = None
    output: "Block | None" = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order; a ``text output`` block is attached to the ``python``
    block before it (and not listed on its own)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match.group("fence"), match.group("info").strip().split()
        start = i
        body = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence) and lines[i].strip().strip("`") == ""):
            body.append(lines[i])
            i += 1
        i += 1
        previous = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        reason = NOT_RUN.search(previous)
        block = Block(path, start + 1, info[0] if info else "", tuple(info[1:]), "\n".join(body) + "\n",
                      reason.group("why") if reason else None)
        if block.language == "text" and "output" in block.flags and found and found[-1].language == "python":
            found[-1].output = block
            continue
        found.append(block)
    return found


# Parts of a shown output that match more than themselves: an ellipsis, a rate, a duration.
_WILD = [
    (r"\.\.\.", r"[\s\S]*?"),
    (r"\(\d[\d,]* records/s\)", r"\(\d[\d,]* records/s\)"),
    (r"(?<![\w.])\d+(?:\.\d+)? ?s\b", r"\d+(?:\.\d+)? ?s"),
]
_WILD_RE = re.compile("|".join(f"({shown})" for shown, _ in _WILD))


def expected_pattern(expected: str) -> re.Pattern:
    """A regex matching what a run prints, from the text a document shows (see the module doc)."""
    text = " ".join(expected.split())
    parts, last = [], 0
    for match in _WILD_RE.finditer(text):
        parts.append(re.escape(text[last:match.start()]))
        parts.append(next(wild for (_, wild), group in zip(_WILD, match.groups()) if group is not None))
        last = match.end()
    parts.append(re.escape(text[last:]))
    return re.compile("".join(parts))


def matches(expected: str, actual: str) -> bool:
    return expected_pattern(expected).fullmatch(" ".join(actual.split())) is not None


def commands(console: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` pairs of a ``console`` block."""
    pairs: list[tuple[str, list[str]]] = []
    lines = console.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            pairs.append((command, []))
        elif pairs:
            pairs[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"console block: output before any command: {line!r}")
        i += 1
    return [(command, "\n".join(output)) for command, output in pairs]


def work_folder(repo: Path, folder: Path) -> Path:
    """``folder`` made into a document's work folder (links to the repository's example data and tools)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = folder / name
        if not link.exists():
            link.symlink_to(repo / name)
    return folder


def environment(repo: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CHATSHARDS_TRACE", None)
    return env


def with_this_python(command: str) -> str:
    """``python``/``python3``/``.venv/bin/python`` at the start of a command (or after ``&&``, ``|``, ``;``, and after
    ``VAR=value`` assignments there) -> this interpreter."""
    return re.sub(r"(^|&&\s*|\|\s*|;\s*)((?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*)(?:\.venv/bin/python3?|python3?)(?=\s)",
                  lambda m: m.group(1) + m.group(2) + shlex.quote(sys.executable), command)


def run_console(block: Block, cwd: Path, repo: Path, timeout: float = 600) -> list[str]:
    """Run a console block's commands; the problems found (empty when every output matched)."""
    problems = []
    for command, expected in commands(block.text):
        result = subprocess.run(with_this_python(command), shell=True, cwd=cwd, env=environment(repo),
                                capture_output=True, text=True, timeout=timeout)
        printed = result.stdout + result.stderr
        if expected.strip() and not matches(expected, printed):
            problems.append(f"{block.where}: `{command}` printed:\n{printed}\nexpected:\n{expected}")
        elif not expected.strip() and result.returncode != 0:
            problems.append(f"{block.where}: `{command}` exited {result.returncode}:\n{printed}")
    return problems


def run_python(block: Block, cwd: Path, repo: Path, timeout: float = 900) -> list[str]:
    script = cwd / f"block_{block.line}.py"
    script.write_text(block.text, encoding="utf-8")
    result = subprocess.run([sys.executable, script.name], cwd=cwd, env=environment(repo), capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        return [f"{block.where}: the python block failed ({result.returncode}):\n{result.stdout}{result.stderr}"]
    if block.output is not None and not matches(block.output.text, result.stdout):
        return [f"{block.where}: the python block printed:\n{result.stdout}\nexpected:\n{block.output.text}"]
    return []


def check_parses(block: Block) -> list[str]:
    try:
        if block.language == "json":
            import json

            json.loads(block.text)
        else:
            import yaml

            yaml.safe_load(block.text)
    except Exception as exc:  # noqa: BLE001 - reported as the block's problem
        return [f"{block.where}: the {block.language} block does not parse: {exc}"]
    return []


def run_document(path: Path, repo: Path, work: Path) -> tuple[list[str], int]:
    """Run every block of ``path`` in order in ``work``; ``(problems, blocks run)``."""
    cwd = work_folder(repo, work)
    problems, ran = [], 0
    for block in blocks(path):
        if block.not_run is not None:
            if not block.not_run.strip():
                problems.append(f"{block.where}: `not run` needs a reason")
            continue
        if block.language == "console":
            problems += run_console(block, cwd, repo)
        elif block.language == "python":
            problems += run_python(block, cwd, repo)
        elif block.language in PARSE_LANGUAGES:
            problems += check_parses(block)
        else:
            problems.append(f"{block.where}: a `{block.language or 'plain'}` block is neither run nor marked "
                            "`<!-- not run: why -->` (commands go in console blocks, programs in python blocks)")
            continue
        ran += 1
    return problems, ran
