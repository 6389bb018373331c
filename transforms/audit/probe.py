"""The template probe: token ids the per-row template checks of the audit look for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

_PROBE_USER = "Probe question for the default system prompt check."


@dataclass(frozen=True)
class TemplateProbe:
    """Token ids the per-row template checks need (plain ints: picklable, stored in the manifest).

    Attributes:
        bos_token_id: the tokenizer's BOS id (``None``: no BOS, double-BOS check not applicable).
        stop_token_ids: ids that close an assistant turn when trained (``template_check`` stop tokens,
            else EOS).
        default_system_prefix: ids a row starts with when the template's default system prompt is
            rendered (empty when the template injects none).
    """

    bos_token_id: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    default_system_prefix: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"bos_token_id": self.bos_token_id, "stop_token_ids": list(self.stop_token_ids),
                "default_system_prefix": list(self.default_system_prefix)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "TemplateProbe":
        return cls(bos_token_id=value.get("bos_token_id"),
                   stop_token_ids=tuple(int(i) for i in value.get("stop_token_ids", ())),
                   default_system_prefix=tuple(int(i) for i in value.get("default_system_prefix", ())))


def template_probe(tokenizer, template_check: Mapping[str, Any] | None = None) -> TemplateProbe:
    """Build the probe from the job's tokenizer (and its chat template) and the ``template_check``.

    The default system prefix is the rendering of a conversation without system message, up to the
    probe user text, tokenized, cut after its last special token (so BPE merges with the text that
    follows cannot change it). Rows that start with exactly these ids carry the template's default
    system prompt (injected, or given explicitly with the same text).
    """
    from transforms.chat_render import ChatRenderer
    from transforms.tokenizer_loading import special_tokens_for_template

    check = dict(template_check or {})
    stop_tokens = check.get("stop_tokens_trained") or ([tokenizer.eos_token] if tokenizer.eos_token else [])
    stop_ids = sorted({int(tokenizer.convert_tokens_to_ids(t)) for t in stop_tokens
                       if tokenizer.convert_tokens_to_ids(t) is not None})
    prefix: tuple[int, ...] = ()
    if check.get("injects_default_system_prompt"):
        try:
            renderer = ChatRenderer(chat_template=tokenizer.chat_template,
                                    template_variables=special_tokens_for_template(tokenizer))
            text = renderer.render_text([{"role": "user", "content": _PROBE_USER},
                                         {"role": "assistant", "content": "Ok."}])
        except Exception:  # noqa: BLE001 - a template that needs a system message injects nothing
            text = ""
        if _PROBE_USER in text:
            before = text[: text.index(_PROBE_USER)]
            ids = tokenizer.backend_tokenizer.encode(before, add_special_tokens=False).ids
            special = set(tokenizer.all_special_ids) | {
                i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
            last = max((k for k, i in enumerate(ids) if i in special), default=-1)
            kept = ids[: last + 1]
            if any(i not in special for i in kept):
                prefix = tuple(int(i) for i in kept)
    bos = tokenizer.bos_token_id
    return TemplateProbe(bos_token_id=None if bos is None else int(bos), stop_token_ids=tuple(stop_ids),
                         default_system_prefix=prefix)
