"""Check a chat template on probe conversations before the job runs.

The job refuses to start (clear message, non-zero exit) when the template:

* fails to render a plain system/user/assistant conversation;
* is not prefix-preserving (rendering a conversation up to an assistant turn is not a prefix of
  rendering the whole conversation), when it has no ``{% generation %}`` markers;
* does not close assistant turns with a trained stop token (the model would never learn to stop);
* trains nothing for an assistant turn.

It also reports, for the manifest and the audit, facts that are not fatal: whether the template
renders a BOS itself (and whether that BOS appears twice after tokenization: the double-BOS bug),
whether it injects a default system prompt, and which stop tokens are trained.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transforms.chat_render import ChatRenderer
from transforms.errors import RecordRejected
from transforms.labels import span_token_ranges
from transforms.tokenizer_loading import special_tokens_for_template

PROBE_CONVERSATION = (
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Three plus three is six."},
)
_PROBE_USER = "Probe question for the default system prompt check."
_ROLE_WORDS = {"system", "user", "assistant", "model", "human", "bot"}


class TemplateUnusable(ValueError):
    """The chat template cannot produce correct labels; the message says why and what to do."""


@dataclass(frozen=True)
class TemplateReport:
    uses_generation_markers: bool
    prefix_preserving: bool
    stop_tokens_trained: tuple[str, ...]
    renders_bos: bool
    double_bos: bool
    injects_default_system_prompt: bool
    default_system_prompt: str | None
    problems: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "uses_generation_markers": self.uses_generation_markers,
            "prefix_preserving": self.prefix_preserving,
            "stop_tokens_trained": list(self.stop_tokens_trained),
            "renders_bos": self.renders_bos,
            "double_bos": self.double_bos,
            "injects_default_system_prompt": self.injects_default_system_prompt,
            "default_system_prompt": self.default_system_prompt,
            "problems": list(self.problems),
        }


def check_template(tokenizer, *, loss: str = "assistant") -> TemplateReport:
    """Probe the tokenizer's chat template; raise :class:`TemplateUnusable` when labels would be wrong."""
    renderer = ChatRenderer(
        chat_template=tokenizer.chat_template, template_variables=special_tokens_for_template(tokenizer), loss="assistant"
    )
    problems: list[str] = []
    try:
        rendered = renderer.render(PROBE_CONVERSATION)
    except RecordRejected as exc:
        raise TemplateUnusable(
            f"the chat template cannot be used for training: {exc.detail}. Fix the template or pass a "
            "prefix-preserving one with --chat-template FILE (one with {% generation %} markers also works)."
        ) from exc
    prefix_preserving = True  # render() rejects non-prefix-preserving templates when it relies on it

    backend = tokenizer.backend_tokenizer
    encoding = backend.encode(rendered.text, add_special_tokens=False)
    ids = np.asarray(encoding.ids, dtype=np.int64)
    special_ids = set(tokenizer.all_special_ids) | {
        token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special
    }
    stop_tokens: list[str] = []
    for turn, (first, end) in enumerate(span_token_ranges(encoding, rendered.turn_spans), start=1):
        if end <= first:
            problems.append(f"assistant turn {turn} of the probe has no trained token")
            continue
        last = int(ids[end - 1])
        if last not in special_ids and last != tokenizer.eos_token_id:
            problems.append(
                f"assistant turn {turn} is not closed by a trained stop token (its last trained token is "
                f"{tokenizer.convert_ids_to_tokens(last)!r}); the model would not learn to stop"
            )
        else:
            stop_tokens.append(tokenizer.convert_ids_to_tokens(last))
    if problems:
        raise TemplateUnusable("the chat template cannot be used for training: " + "; ".join(problems))

    bos = tokenizer.bos_token
    renders_bos = bool(bos) and rendered.text.startswith(bos)
    double_bos = False
    if tokenizer.bos_token_id is not None and len(ids) >= 2:
        double_bos = bool(ids[0] == tokenizer.bos_token_id and ids[1] == tokenizer.bos_token_id)
        if double_bos:
            raise TemplateUnusable("the chat template renders BOS twice (double BOS); fix the template")

    injected = _default_system_prompt(renderer, tokenizer)
    return TemplateReport(
        uses_generation_markers=renderer.uses_generation_markers,
        prefix_preserving=prefix_preserving,
        stop_tokens_trained=tuple(sorted(set(stop_tokens))),
        renders_bos=renders_bos,
        double_bos=double_bos,
        injects_default_system_prompt=injected is not None,
        default_system_prompt=injected,
    )


def _default_system_prompt(renderer: ChatRenderer, tokenizer) -> str | None:
    """The text a template writes before the first user message when there is no system message,
    with special tokens and role words removed; ``None`` when it writes nothing else."""
    try:
        text = renderer.render_text([{"role": "user", "content": _PROBE_USER}, {"role": "assistant", "content": "Ok."}])
    except Exception:  # noqa: BLE001 - some templates require a system message; nothing injected then
        return None
    before = text[: text.find(_PROBE_USER)] if _PROBE_USER in text else ""
    for token in sorted(tokenizer.all_special_tokens + list(tokenizer.get_added_vocab()), key=len, reverse=True):
        if token:
            before = before.replace(token, " ")
    words = [w for w in re.split(r"\s+", before) if w and w.lower().strip(":[]<>|") not in _ROLE_WORDS]
    return " ".join(words) if words else None
