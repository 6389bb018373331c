"""Check a chat template on probe conversations before the job runs.

The job refuses to start (clear message, non-zero exit) when the template:

* fails to render a plain system/user/assistant conversation;
* does not close assistant turns with a trained stop token (the model would never learn to stop), naming
  the string when it is not a single token of the tokenizer (``<|eot_id|>`` with another model's tokenizer);
* trains nothing for an assistant turn.

A template that is not prefix-preserving is accepted: records are then written as one row per supervised
turn (``chat_render``). The probe conversation is one the template supports (no system message when
it refuses one). It also reports, for the manifest and the audit, facts that are not fatal: whether the template
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
from transforms.tokenizer_loading import control_tokens_for, special_tokens_for_template

PROBE_CONVERSATION = (
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Three plus three is six."},
)
_PROBE_USER = "Probe question for the default system prompt check."
_TOKEN_LIKE = re.compile(r"(<\|?[^<>\s]{1,40}\|?>|\[/?[A-Z_]{2,30}\])\s*\Z")
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
    supports_system: bool = True
    renders_reasoning: bool = False
    end_of_conversation_suffix: bool = False
    reads_clock: bool = False
    template_date: str | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "supports_system": self.supports_system,
            "renders_reasoning": self.renders_reasoning,
            "end_of_conversation_suffix": self.end_of_conversation_suffix,
            "reads_clock": self.reads_clock,
            "template_date": self.template_date,
            "notes": list(self.notes),
            "uses_generation_markers": self.uses_generation_markers,
            "prefix_preserving": self.prefix_preserving,
            "stop_tokens_trained": list(self.stop_tokens_trained),
            "renders_bos": self.renders_bos,
            "double_bos": self.double_bos,
            "injects_default_system_prompt": self.injects_default_system_prompt,
            "default_system_prompt": self.default_system_prompt,
            "problems": list(self.problems),
        }


def check_template(tokenizer, *, loss: str = "assistant", options=None) -> TemplateReport:
    """Probe the tokenizer's chat template; raise :class:`TemplateUnusable` when labels would be wrong.

    The probe conversation is one the template supports: without a system message when the template
    refuses or drops one (records that have one are then rejected per record, or folded with
    ``--fold-system``). ``options`` (a ``TokenizeOptions``) gives the multi-turn, reasoning and template
    settings the job uses.
    """
    from transforms.template_env import ChatTemplate, TemplateRefused

    template_date = getattr(options, "template_date", None)
    try:
        template = ChatTemplate(tokenizer.chat_template, template_date=template_date)
    except TemplateRefused as exc:
        raise TemplateUnusable(str(exc)) from exc
    control = control_tokens_for(tokenizer, tokenizer.chat_template)
    renderer = ChatRenderer(chat_template=template, template_variables=special_tokens_for_template(tokenizer),
                            loss="assistant", multi_turn=getattr(options, "multi_turn", "auto"),
                            control_tokens=(), render_seconds=getattr(options, "render_seconds", 10.0),
                            prompt_mismatch=getattr(options, "prompt_mismatch", "diverge"))
    profile = renderer.profile
    probe = PROBE_CONVERSATION if profile.supports_system else PROBE_CONVERSATION[1:]
    problems: list[str] = []
    try:
        rows = renderer.render_rows(probe)
    except RecordRejected as exc:
        raise TemplateUnusable(
            f"the chat template cannot be used for training: {exc.detail}. Fix the template or pass another "
            "one with --chat-template FILE."
        ) from exc
    prefix_preserving = len(rows) == 1

    backend = tokenizer.backend_tokenizer
    special_ids = set(tokenizer.all_special_ids) | {
        token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special
    } | {token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.content in control}
    stop_tokens: list[str] = []
    ids = np.zeros(0, dtype=np.int64)
    for row in rows:
        encoding = backend.encode(row.text, add_special_tokens=False)
        ids = np.asarray(encoding.ids, dtype=np.int64)
        for turn, ((first, end), (s, e)) in enumerate(zip(span_token_ranges(encoding, row.turn_spans),
                                                          row.turn_spans), start=1):
            if end <= first:
                problems.append(f"assistant turn {turn} of the probe has no trained token")
                continue
            last = int(ids[end - 1])
            if last in special_ids or last == tokenizer.eos_token_id:
                stop_tokens.append(tokenizer.convert_ids_to_tokens(last))
                continue
            tail = _TOKEN_LIKE.search(row.text[s:e])
            if tail is not None:
                problems.append(f"{tail.group(0)!r} is not a single token of this tokenizer (the template closes "
                                f"assistant turns with it); pass the model's own tokenizer with --tokenizer")
            else:
                problems.append(
                    f"assistant turn {turn} is not closed by a trained stop token (its last trained token is "
                    f"{tokenizer.convert_ids_to_tokens(last)!r}); the model would not learn to stop")
    if problems:
        raise TemplateUnusable("the chat template cannot be used for training: " + "; ".join(dict.fromkeys(problems)))

    bos = tokenizer.bos_token
    text = rows[0].text
    renders_bos = bool(bos) and text.startswith(bos)
    first_ids = backend.encode(text, add_special_tokens=False).ids[:2]
    double_bos = False
    if tokenizer.bos_token_id is not None and len(first_ids) >= 2:
        double_bos = bool(first_ids[0] == tokenizer.bos_token_id and first_ids[1] == tokenizer.bos_token_id)
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
        supports_system=profile.supports_system,
        renders_reasoning=profile.renders_reasoning,
        end_of_conversation_suffix=profile.end_suffix,
        reads_clock=template.traits.reads_clock,
        template_date=template.template_date if template.traits.reads_clock else None,
        notes=profile.notes,
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
