"""The canonical vocabulary of records: field names, roles, the default role map."""
from __future__ import annotations

from collections.abc import Mapping

ROLES = ("system", "user", "assistant", "tool")
FUNCTION_CALL = "function_call"  # pseudo-role: assistant message whose text is a JSON tool call
TOP_LEVEL_FIELDS = ("messages", "conversations", "instruction", "input", "output", "system",
                    "history", "prompt", "completion", "tools")
MESSAGE_FIELDS = ("role", "content", "from", "value")
VISION_FIELDS = ("images", "image", "question", "answer")  # read only by vision jobs / --format vqa
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # message fields holding a turn's reasoning
TEMPLATE_KWARGS_FIELD = "chat_template_kwargs"

DEFAULT_ROLE_MAP: Mapping[str, str] = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant",
    "system": "system",
    "tool": "tool", "observation": "tool", "function": "tool",
    "function_call": FUNCTION_CALL,
}
