"""The real records the benchmarks use: paths shared by every script in this folder."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"  # ../shared/data: public sample data, never copied into the repo
SOURCES = [
    "alpaca/llamafactory_alpaca_en_demo.json",
    "sharegpt/fastchat_dummy_conversation.json",
    "openai/llamafactory_v1_sft_demo.jsonl",
    "tool_calling/llamafactory_glaive_toolcall_en_demo.json",
]
