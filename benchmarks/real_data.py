"""The real records the benchmarks use: paths shared by every script in this folder."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ../shared/data (or $CHATSHARDS_SHARED_DATA): the whole public sample files, never copied into the repo; where it
# is absent (a fresh clone), the committed subsets of the same files in tests/data (tests/data/SOURCES.md)
SHARED = Path(os.environ.get("CHATSHARDS_SHARED_DATA") or REPO.parent / "shared" / "data")
TEST_DATA = REPO / "tests" / "data"
DATA = SHARED if SHARED.is_dir() else TEST_DATA
SOURCES = [
    "alpaca/llamafactory_alpaca_en_demo.json",
    "sharegpt/fastchat_dummy_conversation.json",
    "openai/llamafactory_v1_sft_demo.jsonl",
    "tool_calling/llamafactory_glaive_toolcall_en_demo.json",
]
