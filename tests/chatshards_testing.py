"""Helpers shared by the tests (importable as ``chatshards_testing``: tests/ is on pytest's pythonpath)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared/data next to the checkout; CHATSHARDS_SHARED_DATA points elsewhere (e.g. from a git worktree)
SHARED_DATA = Path(os.environ.get("CHATSHARDS_SHARED_DATA") or REPO.parent / "shared" / "data")
# Tests never use the default DirectRunner (it tries to download Prism first).
RUNNER_ARGS = ["--runner=FnApiRunner"]
# Real files of ../shared/data in five shapes (ShareGPT, OpenAI messages, tool calls, broken turns, a JSON
# array with a trailing comma): the inputs of the runner-mode and engine byte-identity tests.
MIXED_REAL_INPUTS = [
    "sharegpt/fastchat_dummy_conversation.json",
    "openai/openai_cookbook_toy_chat_fine_tuning.jsonl",
    "tool_calling/llamafactory_glaive_toolcall_en_demo.json",
    "edge_cases/axolotl_conversation.missingturns.json",
    "edge_cases/qwen3vl_single_images_trailing_comma.json",
]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def quick_first(values, keep: int = 1) -> list:
    """Parameters of a test matrix: the first ``keep`` run in the quick tier (``pytest -m "not slow"``), the others
    are marked ``slow`` (the full suite, which CI runs, runs them all). Tuples are unpacked (several argnames)."""
    return [value if i < keep else pytest.param(*(value if isinstance(value, tuple) else (value,)),
                                                marks=pytest.mark.slow)
            for i, value in enumerate(values)]


def shared(relative: str) -> Path:
    """Path of a file in ../shared/data; skips the test with a clear message when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"../shared/data/{relative} is not available (tests that use real data need ../shared/data)")
    return path


def run_job(args: list[str]) -> int:
    """Run ``python -m pipeline`` in-process with the test runner."""
    from pipeline.launch.main import main

    return main(list(args) if any(a.startswith("--runner") for a in args) else [*args, *RUNNER_ARGS])
