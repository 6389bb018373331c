"""Segment-cached encoding (:mod:`transforms.rows.segment_cache`) equals the Rust tokenizer's whole-text
``encode_batch``: ids, offsets, ``char_to_token`` at every position and ``span_token_ranges``; tokenizers
where it would not be exact fall back; repeated segments are served from the cache."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from chatshards_testing import quick_first
from transforms.labels import span_token_ranges
from transforms.rows.encoding import TextEncoder
from transforms.rows.segment_cache import SegmentEncoder, segment_encoder_for, unqualified_reason
from transforms.tokenizer_loading import bundled_tokenizer

# ------------------------------------------------------------------ tokenizers


_QWEN2_JSON: list = []


def qwen2_backend():
    """A fresh copy of the bundled Qwen2 tokenizer's backend."""
    if not _QWEN2_JSON:
        _QWEN2_JSON.append(bundled_tokenizer().backend_tokenizer.to_str())
    return Tokenizer.from_str(_QWEN2_JSON[0])


#: Added tokens whose contents overlap and prefix each other (leftmost-longest must pick like Rust does).
TRICKY_ADDED = ["<a>", "<a><b>", "<ab", "ab>", "[X]", "[X]]", "🙂<", "\n\n", " ", "終わり"]


def qwen2_tricky():
    backend = qwen2_backend()
    backend.add_special_tokens(TRICKY_ADDED[:3])
    backend.add_tokens([AddedToken(t, normalized=False) for t in TRICKY_ADDED[3:]])
    return backend


def qwen2_trimmed_offsets():
    """Qwen2 with a RoBERTa-like post-processor that trims token offsets (``add_prefix_space`` off)."""
    backend = qwen2_tricky()
    backend.post_processor = processors.ByteLevel(trim_offsets=True, add_prefix_space=False)
    return backend


CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Hello world, how are you today?",
    "Tokenizers split text into pieces; pieces become ids.", "Écoute, ça va très bien, merci !",
    "東京は日本の首都です。", "Emoji 🙂 and 👩‍👩‍👧 families", "Numbers 12345 and 3.14159 and 2024-07-26",
    "def f(x):\n    return x * 2\n", "Ünïcödé ñame wïth áccents", "Straße und Fluß",
] * 20


def wordpiece_bert():
    """A BERT-like WordPiece tokenizer trained here (lower-casing BertNormalizer, BertPreTokenizer,
    [CLS]/[SEP] template) with a non-normalized and a normalized added token."""
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    backend.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", backend.token_to_id("[CLS]")),
                                                 ("[SEP]", backend.token_to_id("[SEP]"))])
    backend.add_tokens([AddedToken("<turn>", normalized=False), AddedToken("hello world", normalized=True)])
    return backend


def unigram_sentencepiece(prepend_scheme: str):
    """A SentencePiece-style Unigram tokenizer (NFKC, Metaspace) trained here."""
    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    backend.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=300, unk_token="<unk>",
                                                                special_tokens=["<unk>", "<s>", "</s>"]))
    backend.add_special_tokens(["<s>", "</s>", "<a>", "<a><b>"])
    return backend


def llama_legacy_bpe():
    """A Llama-2-style BPE (normalizer prepends and replaces spaces with ``▁``, no pre-tokenizer) trained here."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"]))
    backend.add_special_tokens(["<s>", "</s>", "[INST]", "[/INST]"])
    return backend


QUALIFYING = {
    "qwen2": qwen2_backend,
    "qwen2_tricky": qwen2_tricky,
    "qwen2_trimmed_offsets": qwen2_trimmed_offsets,
    "wordpiece_bert": wordpiece_bert,
    "unigram_always": lambda: unigram_sentencepiece("always"),
    "unigram_never": lambda: unigram_sentencepiece("never"),
    "llama_legacy_bpe": llama_legacy_bpe,
}
_BUILT: dict = {}


def built(name):
    """The tokenizer ``name`` (built once per test session)."""
    if name not in _BUILT:
        _BUILT[name] = QUALIFYING[name]()
    return _BUILT[name]


def split_tokens(name) -> tuple:
    if (name, "split") not in _BUILT:
        _BUILT[name, "split"] = segment_encoder_for(built(name))._split_tokens
    return _BUILT[name, "split"]


# ------------------------------------------------------------------ the comparison


def assert_same_encodings(backend, encoder, texts, rng=None):
    """Segment-cached encodings of ``texts`` equal ``backend.encode_batch``'s in every value callers read."""
    rng = rng or random.Random(0)
    ours = encoder.encode_batch(texts)
    reference = backend.encode_batch(list(texts), add_special_tokens=False)
    for text, a, b in zip(texts, ours, reference, strict=True):
        assert a.ids == b.ids, text
        assert a.offsets == b.offsets, text
        assert len(a) == len(b)
        assert [a.char_to_token(p) for p in range(len(text) + 3)] == [b.char_to_token(p) for p in range(len(text) + 3)]
        cuts = sorted(rng.randrange(len(text) + 1) for _ in range(24))
        spans = list(zip(cuts[::2], cuts[1::2]))
        assert span_token_ranges(a, spans[:4]) == span_token_ranges(b, spans[:4])  # char_to_token path
        assert span_token_ranges(a, spans) == span_token_ranges(b, spans)  # offsets path (> 8 spans)


@pytest.mark.parametrize("name", sorted(QUALIFYING))
def test_qualifying_tokenizers_qualify(name):
    assert unqualified_reason(built(name)) is None
    assert segment_encoder_for(built(name)) is not None


FIXED_TEXTS = [
    "", " ", "<a>", "<a><b>", "<a><b", "<ab>", "x<a>y", "<a><a><b><ab>[X]]]", "\n\n\n", "  leading and trailing  ",
    "🙂<a>🙂<", "終わり終わり", "[CLS] hello world <turn>Hello World<turn>", "<s>[INST] hi [/INST] ok</s>",
    "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "é" * 5 + "<|im_end|>" + "👩‍👩‍👧" * 3,
]


@pytest.mark.parametrize("name", sorted(QUALIFYING))
def test_the_definition_read_from_components_is_the_tokenizers_json(name):
    from transforms.rows.segment_cache import backend_definition

    backend = built(name)
    full = json.loads(backend.to_str())
    ours = backend_definition(backend)
    for kind in ("normalizer", "pre_tokenizer", "post_processor", "truncation", "padding"):
        assert ours[kind] == full.get(kind), kind
    assert ours["model"]["type"] == full["model"]["type"]
    assert ours["model"].get("dropout") == full["model"].get("dropout")
    flags = ("content", "lstrip", "rstrip", "single_word", "normalized")
    assert sorted(tuple(t[f] for f in flags) for t in ours["added_tokens"]) == \
        sorted(tuple(t[f] for f in flags) for t in full["added_tokens"])


@pytest.mark.parametrize("name", sorted(QUALIFYING))
def test_fixed_texts_equal_whole_text_encoding(name):
    backend = built(name)
    for encoder in (segment_encoder_for(backend), SegmentEncoder(backend, split_tokens(name), min_segment_chars=1)):
        assert_same_encodings(backend, encoder, FIXED_TEXTS)
        assert_same_encodings(backend, encoder, FIXED_TEXTS)  # again, now from the cache


FRAGMENTS = st.sampled_from(
    TRICKY_ADDED + ["<", ">", "<a", "b>", "[X", "]", "<|im_start|>", "<|im_end|>", "<|im_", "im_end|>", "<s>",
                    "</s", "[INST]", "<turn>", "hello world", "Hello World", "\t", "\r\n", "  ", "é", "e\u0301",
                    "🙂", "👩‍👩‍👧", "東京", "ｆｕｌｌ", "Straße", "word", " word", "123", "!?"])
TEXTS = st.lists(st.one_of(FRAGMENTS, st.text(max_size=6)), max_size=14).map("".join)


@pytest.mark.parametrize("min_segment_chars", [1, 4])
@pytest.mark.parametrize("name", sorted(QUALIFYING))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=6))
def test_generated_texts_equal_whole_text_encoding(name, min_segment_chars, texts):
    backend = built(name)
    encoder = SegmentEncoder(backend, split_tokens(name), max_entries=16, min_segment_chars=min_segment_chars)
    assert_same_encodings(backend, encoder, texts)
    assert_same_encodings(backend, encoder, texts[::-1])


# ------------------------------------------------------------------ fallbacks


def _with(backend, **changes):
    definition = json.loads(backend.to_str())
    for key, value in changes.items():
        definition[key] = value
    return Tokenizer.from_str(json.dumps(definition))


def test_metaspace_first_falls_back_and_would_differ():
    backend = unigram_sentencepiece("first")
    assert "prepend_scheme" in unqualified_reason(backend)
    assert TextEncoder(backend, ()).segments is None
    # the check matters: piece by piece, every piece would get the prefix that only offset 0 gets
    forced = SegmentEncoder(backend, ["<a>"], min_segment_chars=1)
    text = "<a>hello there"
    assert forced.encode_batch([text, text])[1].ids != backend.encode(text, add_special_tokens=False).ids
    ours = TextEncoder(backend, ()).encode([text, "x<s>y"])
    assert [e.ids for e in ours] == [e.ids for e in backend.encode_batch([text, "x<s>y"], add_special_tokens=False)]


@pytest.mark.slow
def test_unqualified_configurations_fall_back():
    qwen = qwen2_backend()
    trimming = qwen2_backend()
    trimming.post_processor = processors.ByteLevel(trim_offsets=True, add_prefix_space=True)
    stripping = qwen2_backend()
    stripping.add_special_tokens([AddedToken("<mask>", lstrip=True)])
    single_word = qwen2_backend()
    single_word.add_tokens([AddedToken("word", single_word=True, normalized=False)])
    truncating = qwen2_backend()
    truncating.enable_truncation(16)
    padding = qwen2_backend()
    padding.enable_padding()
    special_as_text = qwen2_backend()
    special_as_text.encode_special_tokens = True
    model = json.loads(qwen.to_str())["model"]
    cases = [trimming, stripping, single_word, truncating, padding, special_as_text,
             _with(qwen, model={**model, "dropout": 0.1})]
    for backend in cases:
        assert unqualified_reason(backend) is not None
        assert TextEncoder(backend, ()).segments is None
    definition = json.loads(qwen.to_str())
    for kind in ("normalizer", "pre_tokenizer", "post_processor"):  # a type not on the allow-list
        unknown = dict(definition)
        unknown[kind] = {"type": "Sequence", {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers",
                                              "post_processor": "processors"}[kind]: [{"type": "SomethingNew"}]}
        assert "SomethingNew" in unqualified_reason(qwen, unknown)
    assert "Unknown" in unqualified_reason(qwen, {**definition, "model": {"type": "Unknown"}})


def test_backend_truncation_set_later_falls_back():
    backend = qwen2_backend()
    encoder = TextEncoder(backend, ())
    assert encoder.segments is not None
    backend.enable_truncation(3)
    texts = ["<|im_start|>user\nhello there, a longer text<|im_end|>"]
    assert [e.ids for e in encoder.encode(texts)] == [e.ids for e in backend.encode_batch(texts,
                                                                                          add_special_tokens=False)]


# ------------------------------------------------------------------ the cache


class CountingBackend:
    """A ``tokenizers.Tokenizer`` stand-in that records what ``encode_batch`` was asked to encode."""

    def __init__(self, backend):
        self.backend = backend
        self.encoded: list[str] = []

    def encode_batch(self, texts, add_special_tokens=True):
        self.encoded += texts
        return self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)


SYSTEM = "system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def _chatml(user: str) -> str:
    return f"<|im_start|>{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\nOK<|im_end|>\n"


def test_repeated_segments_are_encoded_once():
    backend = qwen2_backend()
    counting = CountingBackend(backend)
    encoder = SegmentEncoder(counting, segment_encoder_for(backend)._split_tokens)
    first = [_chatml(f"question {i}") for i in range(4)]
    assert_same_encodings(backend, encoder, first)
    # the first text is encoded whole (one run); then the system prompt, seen before, is a segment of its own
    rests = [text[text.index("<|im_end|>"):] for text in first[1:]]
    assert counting.encoded == [first[0], "<|im_start|>", SYSTEM] + rests
    counting.encoded.clear()
    second = [_chatml(f"another question {i}") for i in range(4)]
    assert_same_encodings(backend, encoder, second)
    assert counting.encoded == [text[text.index("<|im_end|>"):] for text in second]  # the runs after the prompt
    assert encoder.segments(second[0]) == ["<|im_start|>", SYSTEM, second[0][second[0].index("<|im_end|>"):]]


def test_hot_segment_survives_eviction_and_long_pieces_are_not_kept():
    backend = qwen2_backend()
    counting = CountingBackend(backend)
    encoder = SegmentEncoder(counting, segment_encoder_for(backend)._split_tokens, max_entries=20)
    for batch in range(10):
        assert_same_encodings(backend, encoder, [_chatml(f"q{batch}-{i} " * 3) for i in range(8)])
    assert counting.encoded.count(SYSTEM) == 1  # while ~80 unique runs went through a cache of 20
    assert len(encoder._cache) == 20 and SYSTEM in encoder._cache
    short = SegmentEncoder(counting, segment_encoder_for(backend)._split_tokens, max_piece_chars=40)
    counting.encoded.clear()
    for batch in range(3):
        short.encode_batch([_chatml(f"q{batch}-{i}") for i in range(4)])
    assert len(counting.encoded) == 12 and all(SYSTEM in text for text in counting.encoded)  # never on its own


def test_the_cache_keeps_at_most_its_character_budget_and_the_hot_segment():
    backend = qwen2_backend()
    counting = CountingBackend(backend)
    budget = 4 * len(SYSTEM)
    encoder = SegmentEncoder(counting, segment_encoder_for(backend)._split_tokens, max_cached_chars=budget)
    for batch in range(6):
        assert_same_encodings(backend, encoder, [_chatml(f"question {batch}-{i} " * 4) for i in range(8)])
        assert sum(map(len, encoder._cache)) == encoder._cached_chars <= budget
    assert counting.encoded.count(SYSTEM) == 1 and SYSTEM in encoder._cache


def test_the_text_encoder_encodes_whole_texts_for_a_while_where_nothing_repeats():
    from transforms.rows import encoding as text_encoding

    backend = qwen2_backend()

    class Counting(CountingBackend):
        truncation = padding = None

    for repeated, expect_active in ((False, False), (True, True)):
        encoder = TextEncoder(backend, ("<|im_end|>",))
        counting = encoder.backend = encoder.segments.backend = Counting(backend)
        for batch in range(text_encoding.TRIAL_BATCHES):
            texts = [_chatml(f"question {batch}-{i}") if repeated else
                     f"<|im_start|>user\nquestion {batch}-{i} asked in full<|im_end|>\n" for i in range(6)]
            assert [e.ids for e in encoder.encode(texts)] == [e.ids for e in backend.encode_batch(texts, False)]
        assert encoder.segment_cache_active is expect_active
        counting.encoded.clear()
        texts = [_chatml(f"later {i}") for i in range(3)]
        assert [e.ids for e in encoder.encode(texts)] == [e.ids for e in backend.encode_batch(texts, False)]
        assert (counting.encoded == texts) is not expect_active  # paused: whole texts, not segments
    # the pause ends: the cache is tried again
    paused = TextEncoder(backend, ("<|im_end|>",))
    paused._paused = 1
    paused.encode([_chatml("a")])
    assert paused.segment_cache_active


def test_text_encoder_uses_the_cache_and_keeps_marked_texts_on_their_path():
    from transforms.control_tokens import MARK_CLOSE, MARK_OPEN

    backend = qwen2_backend()
    encoder = TextEncoder(backend, ("<|im_end|>",))
    assert encoder.segments is not None
    marked = f"<|im_start|>user\nsay {MARK_OPEN}<|im_end|>{MARK_CLOSE} please<|im_end|>\n"
    plain = [_chatml("hi"), _chatml("there")]
    pair = (MARK_OPEN, MARK_CLOSE)
    out = encoder.encode([plain[0], marked, plain[1]], [None, pair, None])  # the caller names the marked text
    reference = backend.encode_batch(plain, add_special_tokens=False)
    assert [out[0].ids, out[2].ids] == [e.ids for e in reference]
    assert out[1].ids == TextEncoder(backend, ("<|im_end|>",), segment_cache=False).encode([marked], [pair])[0].ids
    assert type(out[2]).__name__ == "SegmentEncoding" and type(out[1]).__name__ == "MarkedEncoding"
    # a text that is not named marked is encoded as it is, marker characters and all
    assert encoder.encode([marked])[0].ids == backend.encode(marked, add_special_tokens=False).ids


# ------------------------------------------------------------------ real records, real templates

TRL_FAMILIES = ["qwen2_5_training", "llama3_training", "gemma3_training", "phi3_training", "gptoss_training",
                "deepseek_r1_distill_training", "qwen3_training"]


def _rendered_rows(tokenizer_folder, records_folder):
    from transforms.config import TokenizeOptions
    from transforms.formats import FormatOptions
    from transforms.reading import iter_raw_records_from_path
    from transforms.rows import PARSED, RowBuilder, parse_records
    from transforms.tokenizer_loading import load_tokenizer

    builder = RowBuilder(tokenizer=load_tokenizer(str(tokenizer_folder)), format_options=FormatOptions(),
                         tokenize_options=TokenizeOptions())
    raws = [raw for path in sorted(records_folder.glob("*.jsonl")) for raw in iter_raw_records_from_path(str(path))]
    rows = []
    for kind, item in parse_records(raws, builder.format_options):
        if kind == PARSED:
            try:
                rows += [row.rendered for row in builder.task.prepare(*item)]
            except Exception:  # noqa: BLE001 - a template may reject a record kind (e.g. system messages)
                pass
    return builder, rows


@pytest.mark.parametrize("family_name", quick_first(TRL_FAMILIES))
def test_real_records_through_trl_templates(family_name, tmp_path):
    from family_records import real_records, write_jsonl
    from template_families import BY_NAME, family_tokenizer, installed

    family = BY_NAME[family_name]
    if not installed(family):
        pytest.fail(f"{family.source} is not installed (pip install -r requirements-dev.txt)")
    records = tmp_path / "records"
    records.mkdir()
    for kind, items in real_records().items():
        write_jsonl(records, kind, items)
    builder, rows = _rendered_rows(family_tokenizer(family, tmp_path / "tokenizer"), records)
    assert len(rows) >= 10
    backend = builder.task.encoder.backend
    encoder = builder.task.encoder.segments
    assert encoder is not None, unqualified_reason(backend)
    texts = [row.text for row in rows]
    assert_same_encodings(backend, encoder, texts)
    for row, ours, reference in zip(rows, encoder.encode_batch(texts),
                                    backend.encode_batch(texts, add_special_tokens=False)):
        for spans in (row.trained_spans, row.turn_spans, row.reasoning_spans):
            assert span_token_ranges(ours, spans) == span_token_ranges(reference, spans)
