"""Test records for the template-family tests: real records from the committed subsets in tests/data
(tests/data/SOURCES.md), and reasoning records derived from them deterministically.

Files are written as JSON Lines into a temp folder (one file per kind), so a row's ``(source, index)`` is the
file and the line. A fresh clone has everything these helpers read.
"""
from __future__ import annotations

import json
from pathlib import Path

from chatshards_testing import sample

#: kind -> (file in tests/data, indices taken)
REAL_SUBSETS = {
    "multi_turn": ("sharegpt/fastchat_dummy_conversation.json", [0, 1, 2, 3, 4, 5, 20, 30]),
    "system": ("openai/openai_cookbook_toy_chat_fine_tuning.jsonl", [0, 1, 2, 3]),
    "system_bare": ("edge_cases/xtuner_openai_sft_bare_lists.jsonl", [0, 1, 2]),
    "tools_glaive": ("tool_calling/llamafactory_glaive_toolcall_en_demo.json", [0, 1, 2, 3, 4, 5, 6, 7]),
    "tools_openai": ("tool_calling/openai_cookbook_drone_training_first3.jsonl", [0, 2]),
}


def _load(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def real_records(kinds=None) -> dict[str, list]:
    """kind -> records."""
    out = {}
    for kind, (relative, indices) in REAL_SUBSETS.items():
        if kinds and kind not in kinds:
            continue
        records = _load(sample(relative))
        out[kind] = [records[i] for i in indices if i < len(records)]
    return out


def _reasoning_for(question: str, turn: int) -> str:
    """Deterministic reasoning text built from the real question, distinguishable from any answer."""
    words = question.split()
    return (f"Step {turn + 1}: the user asks about \"{' '.join(words[:8])}\" ({len(words)} words). "
            "I recall what I know and answer in one short paragraph.")


def reasoning_records(style: str, count: int = 6) -> list[dict]:
    """Multi-turn OpenAI records from real FastChat conversations, every assistant turn with reasoning.

    ``style``: ``"field"`` puts it in ``reasoning_content``; ``"think"`` writes ``<think>\\n...\\n</think>\\n\\n``
    before the answer inside ``content``.
    """
    conversations = _load(sample("sharegpt/fastchat_dummy_conversation.json"))
    multi = [c for c in conversations if len(c["conversations"]) >= 4][:count]
    records = []
    for conv in multi:
        messages, question = [], ""
        for turn, item in enumerate(conv["conversations"]):
            if item["from"] == "human":
                question = item["value"]
                messages.append({"role": "user", "content": item["value"]})
            else:
                reasoning = _reasoning_for(question, turn // 2)
                if style == "field":
                    messages.append({"role": "assistant", "content": item["value"], "reasoning_content": reasoning})
                else:
                    messages.append({"role": "assistant",
                                     "content": f"<think>\n{reasoning}\n</think>\n\n{item['value']}"})
        records.append({"messages": messages})
    return records


def write_jsonl(folder: Path, kind: str, records: list) -> Path:
    path = Path(folder) / f"{kind}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path
