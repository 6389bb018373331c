"""Helpers shared by the tests (importable as ``chatshards_testing``: tests/ is on pytest's pythonpath)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Small subsets of public, permissively licensed fine-tuning data, committed with the tests (tests/data/SOURCES.md
# names each file's repository, path, commit and licence): what the core tests read in a fresh clone.
TEST_DATA = REPO / "tests" / "data"
# ../shared/data next to the checkout (the whole public files, the larger matrix where it exists, as on CI);
# CHATSHARDS_SHARED_DATA points elsewhere (e.g. from a git worktree)
SHARED_DATA = Path(os.environ.get("CHATSHARDS_SHARED_DATA") or REPO.parent / "shared" / "data")
# Tests never use the default DirectRunner (it tries to download Prism first).
RUNNER_ARGS = ["--runner=FnApiRunner"]
# Real files of tests/data in five shapes (ShareGPT, OpenAI messages, tool calls, broken turns, a JSON
# array with a trailing comma): the inputs of the runner-mode and engine byte-identity tests (``sample``).
MIXED_REAL_INPUTS = [
    "sharegpt/fastchat_dummy_conversation.json",
    "openai/openai_cookbook_toy_chat_fine_tuning.jsonl",
    "tool_calling/llamafactory_glaive_toolcall_en_demo.json",
    "edge_cases/axolotl_conversation.missingturns.json",
    "edge_cases/qwen3vl_single_images_trailing_comma.json",
]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def sample(relative: str) -> Path:
    """Path of a committed subset in tests/data. It ships with the tests, so a missing file fails the test
    (never a skip): the claim the test backs would otherwise go unchecked."""
    path = TEST_DATA / relative
    if not path.exists():
        pytest.fail(f"tests/data/{relative} is missing: it is part of the repository (tests/data/SOURCES.md)")
    return path


def quick_first(values, keep: int = 1) -> list:
    """Parameters of a test matrix: the first ``keep`` run in the quick tier (``pytest -m "not slow"``), the others
    are marked ``slow`` (the full suite, which CI runs, runs them all). Tuples are unpacked (several argnames)."""
    return [value if i < keep else pytest.param(*(value if isinstance(value, tuple) else (value,)),
                                                marks=pytest.mark.slow)
            for i, value in enumerate(values)]


def shared(relative: str) -> Path:
    """Path of a file in ../shared/data, for tests of the larger matrix only (whole files, exact counts); skips
    the test with a clear message when it is absent (tests collect such cases only where ../shared/data exists).
    Core claims use :func:`sample`."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"../shared/data/{relative} is not available (tests that use real data need ../shared/data)")
    return path


def run_job(args: list[str]) -> int:
    """Run ``python -m pipeline`` in-process with the test runner."""
    from pipeline.launch.main import main

    return main(list(args) if any(a.startswith("--runner") for a in args) else [*args, *RUNNER_ARGS])
