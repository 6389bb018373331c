"""Render a conversation with the tokenizer's own chat template and find the trained character spans.

The conversation is rendered **once** into the text that is tokenized. Which characters are trained
is decided on that text, before tokenization, as half-open character spans ``[start, end)``:

* Template with ``{% generation %}`` blocks: the spans are exactly the generation blocks (the same
  spans ``apply_chat_template(return_assistant_tokens_mask=True)`` uses).
* Template without them (most real templates): for assistant message ``i`` the renderer also renders
  ``messages[:i]`` with the generation prompt (``P``) and ``messages[:i+1]`` (``R``). The assistant turn
  is ``R`` after its common prefix with ``P`` (so the role header that the generation prompt writes is
  never trained), up to the end of ``R`` without trailing whitespace: the content, tool calls, and the
  end-of-turn token(s) that close it (``<|im_end|>``, ``<|eot_id|>``, ``</s>``...). ``R`` must be a
  prefix of the full render (the template is *prefix-preserving*); otherwise the record is rejected
  with ``template_error``, never trained on a guess.

A template-injected default system prompt lies outside every assistant span, so it is never trained.

Loss modes: ``assistant`` (every trainable assistant turn), ``last`` (the last assistant turn only),
``all`` (the whole rendered text).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from transforms.errors import TEMPLATE_ERROR, RecordRejected

LOSS_MODES = ("assistant", "all", "last")
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)


def has_generation_markers(template: str) -> bool:
    """True when the template (comments excluded) contains a ``{% generation %}`` block."""
    return bool(_GENERATION_TAG.search(_JINJA_COMMENT.sub("", template)))


@dataclass(frozen=True)
class RenderedConversation:
    """The text to tokenize and its trained character spans.

    Attributes:
        text: the conversation rendered by the chat template (no generation prompt).
        trained_spans: sorted, non-overlapping ``(start, end)`` character spans of ``text`` to train.
        turn_spans: one ``(start, end)`` span per assistant turn (trained or not), in order; used to
            count trained turns after truncation.
    """

    text: str
    trained_spans: tuple[tuple[int, int], ...]
    turn_spans: tuple[tuple[int, int], ...]


def _compile(template: str):
    try:  # transformers' own sandboxed environment: same filters/globals as apply_chat_template
        from transformers.utils.chat_template_utils import _compile_jinja_template

        return _compile_jinja_template(template)
    except ImportError:  # pragma: no cover - older/newer transformers without the helper
        return None


class ChatRenderer:
    """Renders conversations with one chat template; pure and picklable (compiles lazily).

    Args:
        chat_template: the Jinja template text.
        template_variables: the special-token variables (``bos_token``, ``eos_token``, ...), as
            ``tokenizer_loading.special_tokens_for_template`` returns them.
        loss: one of ``LOSS_MODES``.
    """

    def __init__(self, *, chat_template: str, template_variables: Mapping[str, Any], loss: str = "assistant"):
        if loss not in LOSS_MODES:
            raise ValueError(f"loss must be one of {LOSS_MODES}, got {loss!r}")
        self.chat_template = chat_template
        self.template_variables = dict(template_variables)
        self.loss = loss
        self.uses_generation_markers = has_generation_markers(chat_template)
        self._compiled = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_compiled"] = None
        return state

    # -- rendering -------------------------------------------------------------------------------
    def render_text(self, messages: Sequence[Mapping], *, tools=None, add_generation_prompt: bool = False) -> str:
        """Render ``messages`` exactly as ``tokenizer.apply_chat_template(tokenize=False)`` would."""
        if self._compiled is None:
            self._compiled = _compile(self.chat_template)
        if self._compiled is None:  # pragma: no cover
            from transformers.utils.chat_template_utils import render_jinja_template

            rendered, _ = render_jinja_template(
                conversations=[list(messages)], tools=tools, chat_template=self.chat_template,
                add_generation_prompt=add_generation_prompt, **self.template_variables,
            )
            return rendered[0]
        return self._compiled.render(
            messages=list(messages), tools=tools, documents=None,
            add_generation_prompt=add_generation_prompt, **self.template_variables,
        )

    def _render_with_generation_spans(self, messages, tools) -> tuple[str, list[tuple[int, int]]]:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, indices = render_jinja_template(
            conversations=[list(messages)], tools=tools, chat_template=self.chat_template,
            return_assistant_tokens_mask=True, add_generation_prompt=False, **self.template_variables,
        )
        return rendered[0], [tuple(span) for span in indices[0]]

    def render(self, messages: Sequence[Mapping], *, tools=None, trainable: Sequence[bool] | None = None) -> RenderedConversation:
        """Render a conversation and compute its trained character spans.

        Args:
            messages: canonical messages (``role``/``content`` plus tool fields).
            tools: tool schemas passed to the template, or ``None``.
            trainable: per message, whether an assistant message may be trained (default: all).

        Raises:
            RecordRejected: ``template_error`` when the template raises on this conversation or is not
                prefix-preserving for it.
        """
        messages = list(messages)
        trainable = list(trainable) if trainable is not None else [True] * len(messages)
        assistant_positions = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        try:
            if self.uses_generation_markers:
                text, turn_spans = self._render_with_generation_spans(messages, tools)
            else:
                text = self.render_text(messages, tools=tools)
                turn_spans = self._assistant_spans_by_prefix(messages, tools, text, assistant_positions)
        except RecordRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - the template is user code; any failure is per record
            raise RecordRejected(TEMPLATE_ERROR, f"chat template failed: {type(exc).__name__}: {exc}") from exc

        if self.loss == "all":
            trained = [(0, len(text))] if text else []
        else:
            if len(turn_spans) == len(assistant_positions):
                flags = [trainable[i] for i in assistant_positions]
            elif all(trainable[i] for i in assistant_positions):
                flags = [True] * len(turn_spans)
            else:
                raise RecordRejected(
                    TEMPLATE_ERROR,
                    f"template has {len(turn_spans)} generation blocks for {len(assistant_positions)} assistant "
                    "messages, so per-message train flags cannot be applied",
                )
            chosen = [span for span, flag in zip(turn_spans, flags) if flag and span[1] > span[0]]
            if self.loss == "last":
                last = [span for span in turn_spans if span[1] > span[0]][-1:]
                chosen = [span for span in chosen if span in last]
            trained = chosen
        return RenderedConversation(text=text, trained_spans=tuple(trained), turn_spans=tuple(turn_spans))

    def _generation_prompt(self, history, tools) -> str:
        try:
            return self.render_text(history, tools=tools, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - e.g. templates that index messages[0] of an empty history
            if history:
                raise
            return ""

    def _assistant_spans_by_prefix(self, messages, tools, full_text, assistant_positions):
        spans = []
        for i in assistant_positions:
            prompt = self._generation_prompt(messages[:i], tools)
            upto = full_text if i == len(messages) - 1 else self.render_text(messages[: i + 1], tools=tools)
            if not full_text.startswith(upto):
                raise RecordRejected(
                    TEMPLATE_ERROR,
                    f"chat template is not prefix-preserving at message {i}: rendering the conversation up to "
                    "this assistant turn is not a prefix of the full rendering, so its span is ambiguous",
                )
            start = len(prompt) if upto.startswith(prompt) else len(os.path.commonprefix([prompt, upto]))
            end = len(upto.rstrip())
            spans.append((start, max(start, end)))
        return spans
