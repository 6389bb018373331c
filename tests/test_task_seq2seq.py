"""``--task seq2seq`` (T5, BART, mT5, ...): parity with ``run_summarization.py`` / ``run_translation.py``'s
preprocessing written out below, on transformers' own test fixtures (XSum, WMT16 en-ro), with a real T5
tokenizer (``T5TokenizerFast`` over a SentencePiece unigram model trained here); the collator against
``DataCollatorForSeq2Seq(model=tiny T5)`` including ``decoder_input_ids``; a training step through ``Trainer``."""
from __future__ import annotations

import numpy as np
import pytest
from task_testing import C4, WMT16, XSUM, manifest, records, rejections, run, shard_rows, write_jsonl

from transforms import errors

PREFIX = "summarize: "


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    """A real T5 tokenizer folder: a SentencePiece unigram model trained on the samples' texts, loaded through
    transformers' ``T5TokenizerFast`` (pad 0, EOS 1, UNK 2, as T5) and saved with ``save_pretrained``."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import T5TokenizerFast

    folder = tmp_path_factory.mktemp("t5")
    corpus = folder / "corpus.txt"
    texts = [r[k] for r in records(XSUM) for k in ("document", "summary")]
    texts += [t for r in records(WMT16) for t in r["translation"].values()]
    texts += [r["text"] for r in records(C4)]
    corpus.write_text("\n".join(texts), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "sp"), vocab_size=1000,
                                   hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, character_coverage=1.0, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=str(folder / "sp.model"))
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    tokenizer = T5TokenizerFast(vocab=vocab, extra_ids=0)
    assert tokenizer.convert_ids_to_tokens(tokenizer("see Minutes")["input_ids"])[:-1] == \
        processor.encode("see Minutes", out_type=str)  # the same segmentation as SentencePiece itself
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    return str(folder / "tokenizer"), tokenizer


# -- run_summarization.py / run_translation.py's preprocess_function, written out ------------------------------

def summarization_preprocess(tokenizer, examples, *, prefix, max_source_length, max_target_length,
                             text_column="document", summary_column="summary"):
    inputs, targets = [], []
    for i in range(len(examples[text_column])):
        if examples[text_column][i] and examples[summary_column][i]:
            inputs.append(examples[text_column][i])
            targets.append(examples[summary_column][i])
    inputs = [prefix + inp for inp in inputs]
    model_inputs = tokenizer(inputs, max_length=max_source_length, padding=False, truncation=True)
    labels = tokenizer(text_target=targets, max_length=max_target_length, padding=False, truncation=True)
    model_inputs["labels"] = labels["input_ids"]
    return model_inputs


def translation_preprocess(tokenizer, examples, *, source_lang, target_lang, prefix, max_source_length,
                           max_target_length):
    inputs = [ex[source_lang] for ex in examples["translation"]]
    targets = [ex[target_lang] for ex in examples["translation"]]
    inputs = [prefix + inp for inp in inputs]
    model_inputs = tokenizer(inputs, max_length=max_source_length, padding=False, truncation=True)
    labels = tokenizer(text_target=targets, max_length=max_target_length, padding=False, truncation=True)
    model_inputs["labels"] = labels["input_ids"]
    return model_inputs


def hf_features(tokenizer, path, function, **kwargs):
    import datasets

    raw = datasets.Dataset.from_list(records(path))
    mapped = raw.map(lambda ex: function(tokenizer, ex, **kwargs), batched=True, remove_columns=raw.column_names)
    return [mapped[i] for i in range(len(mapped))]


def summarization_job(tmp_path, folder, *extra):
    out = tmp_path / "xsum"
    assert run(["--task", "seq2seq", "--input", str(XSUM), "--output", str(out), "--tokenizer", folder,
                "--field-map", "source=document,target=summary", "--source-prefix", PREFIX,
                "--max-source-length", "96", "--max-target-length", "24", "--decoder-start-token-id", "0",
                "--workers", "1", *extra]) == 0
    return out


def test_summarization_rows_equal_run_summarization_row_by_row(tmp_path, t5):
    folder, tokenizer = t5
    out = summarization_job(tmp_path, folder)
    rows = shard_rows(out)
    reference = hf_features(tokenizer, XSUM, summarization_preprocess, prefix=PREFIX, max_source_length=96,
                            max_target_length=24)
    assert [r["input_ids"] for r in rows] == [f["input_ids"] for f in reference]
    assert [r["labels"] for r in rows] == [f["labels"] for f in reference]
    assert all(r["labels"][-1] == tokenizer.eos_token_id for r in rows)  # T5's </s> kept through truncation
    full = [len(ids) for ids in tokenizer([PREFIX + r["document"] for r in records(XSUM)])["input_ids"]]
    assert [r["source_truncated_tokens"] for r in rows] == [max(0, n - 96) for n in full]
    audit = manifest(out)["audit"]["task"]
    assert audit["source_truncated_rows"] == sum(n > 96 for n in full) > 0
    assert audit["source_truncation_rate"] == round(audit["source_truncated_rows"] / len(rows), 6)


def test_translation_rows_equal_run_translation_row_by_row(tmp_path, t5):
    folder, tokenizer = t5
    out = tmp_path / "wmt"
    prefix = "translate English to Romanian: "
    assert run(["--task", "seq2seq", "--input", str(WMT16), "--output", str(out), "--tokenizer", folder,
                "--source-lang", "en", "--target-lang", "ro", "--source-prefix", prefix,
                "--max-target-length", "12", "--workers", "1"]) == 0
    rows = shard_rows(out)
    reference = hf_features(tokenizer, WMT16, translation_preprocess, source_lang="en", target_lang="ro",
                            prefix=prefix, max_source_length=None, max_target_length=12)
    assert [(r["input_ids"], r["labels"]) for r in rows] == [(f["input_ids"], f["labels"]) for f in reference]
    assert manifest(out)["task"]["options"]["source_lang"] == "en"


@pytest.mark.parametrize("side", ["right", "left"])
def test_truncation_keeps_special_tokens_as_the_tokenizer_does(t5, side):
    from transforms.tasks.encoding import SpecialTokensEncoder, truncate_single

    _, tokenizer = t5
    tokenizer.truncation_side = side
    encoder = SpecialTokensEncoder(tokenizer.backend_tokenizer)
    texts = [r["document"] for r in records(XSUM)]
    for encoding, text in zip(encoder.encode(texts), texts):
        for limit in (2, 5, 17, 40):
            kept, _, cut = truncate_single(np.asarray(encoding.ids), np.asarray(encoding.special_tokens_mask),
                                           limit, side=side)
            assert kept.tolist() == tokenizer(text, max_length=limit, truncation=True)["input_ids"]
            assert cut == len(encoding.ids) - len(kept)
    tokenizer.truncation_side = "right"


@pytest.mark.slow
def test_the_collator_equals_data_collator_for_seq2seq_with_a_tiny_t5(tmp_path, t5):
    torch = pytest.importorskip("torch")
    from transformers import DataCollatorForSeq2Seq, T5Config, T5ForConditionalGeneration

    from transforms.runtime import Collator, Seq2SeqCollator, ShardDataset

    folder, tokenizer = t5
    out = summarization_job(tmp_path, folder)
    dataset = ShardDataset(str(out))
    assert dataset.columns == ("input_ids", "labels")
    collator = Collator.from_manifest(str(out))
    assert isinstance(collator, Seq2SeqCollator) and collator.decoder_start_token_id == 0
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64,
                                                num_layers=1, num_heads=2, decoder_start_token_id=0,
                                                pad_token_id=0, eos_token_id=1))
    reference = hf_features(tokenizer, XSUM, summarization_preprocess, prefix=PREFIX, max_source_length=96,
                            max_target_length=24)
    by_ids = {tuple(f["input_ids"]): f for f in reference}
    rows = [dataset[i] for i in range(len(dataset))]
    features = [by_ids[tuple(r["input_ids"].tolist())] for r in rows]  # transformers' rows, our order
    for multiple, side in ((None, "right"), (8, "right"), (None, "left")):
        tokenizer.padding_side = side
        theirs = DataCollatorForSeq2Seq(tokenizer, model=model, pad_to_multiple_of=multiple)(
            [dict(f) for f in features])
        ours = Collator.from_manifest(str(out), pad_to_multiple_of=multiple, padding_side=side)(rows)
        assert set(ours) == {"input_ids", "attention_mask", "labels", "decoder_input_ids"} <= set(theirs)
        for key in ours:
            assert ours[key].dtype == torch.int64 and torch.equal(ours[key], theirs[key]), (key, multiple, side)
    tokenizer.padding_side = "right"
    without = Seq2SeqCollator(pad_token_id=0)(rows)  # no start id: the model shifts the labels itself
    assert "decoder_input_ids" not in without
    model.eval()  # no dropout
    with torch.no_grad():
        a = model(**Collator.from_manifest(str(out))(rows)).loss
        b = model(**without).loss
    assert torch.isfinite(a) and torch.allclose(a, b)


@pytest.mark.slow
def test_a_tiny_t5_trains_on_the_shards_with_the_loss_of_transformers_pipeline(tmp_path, t5):
    torch = pytest.importorskip("torch")
    from transformers import (
        DataCollatorForSeq2Seq,
        T5Config,
        T5ForConditionalGeneration,
        Trainer,
        TrainingArguments,
    )

    from transforms.runtime import Collator, ShardDataset

    folder, tokenizer = t5
    out = summarization_job(tmp_path, folder)
    dataset = ShardDataset(str(out))
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64,
                                                num_layers=1, num_heads=2, decoder_start_token_id=0,
                                                pad_token_id=0, eos_token_id=1))
    collator = Collator.from_manifest(str(out))
    reference = hf_features(tokenizer, XSUM, summarization_preprocess, prefix=PREFIX, max_source_length=96,
                            max_target_length=24)
    by_ids = {tuple(f["input_ids"]): f for f in reference}
    rows = [dataset[i] for i in range(4)]
    theirs = DataCollatorForSeq2Seq(tokenizer, model=model)([dict(by_ids[tuple(r["input_ids"].tolist())])
                                                            for r in rows])
    model.eval()
    with torch.no_grad():
        ours_loss = model(**collator(rows)).loss
        their_loss = model(**theirs).loss
    assert torch.isfinite(ours_loss) and torch.allclose(ours_loss, their_loss)
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=1, per_device_train_batch_size=4,
                             report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)
    result = Trainer(model=model.train(), args=args, train_dataset=dataset, data_collator=collator).train()
    assert np.isfinite(result.training_loss)


def test_bad_pairs_are_rejected_with_reasons(tmp_path, t5):
    folder, _ = t5
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"source": "a text", "target": "its summary"},
        {"source": "no target"},
        {"source": "", "target": "x"},
        {"translation": {"en": "hi", "ro": "salut"}},
        {"source": "long " * 50, "target": "t"},
        [1, 2],
    ])
    out = tmp_path / "out"
    assert run(["--task", "seq2seq", "--input", path, "--output", str(out), "--tokenizer", folder,
                "--max-source-length", "20", "--truncation", "drop", "--workers", "1"]) == 0
    reasons = sorted((r["index"], r["reason"]) for r in rejections(out))
    assert reasons == [(1, errors.UNKNOWN_FORMAT), (2, errors.EMPTY_TEXT), (3, errors.UNKNOWN_FORMAT),
                       (4, errors.TOO_LONG), (5, errors.UNKNOWN_FORMAT)]
    assert [r["index"] for r in shard_rows(out)] == [0]
    langs = tmp_path / "langs"
    assert run(["--task", "seq2seq", "--input", path, "--output", str(langs), "--tokenizer", folder,
                "--source-lang", "en", "--target-lang", "ro", "--format", "translation", "--workers", "1"]) == 0
    assert [r["index"] for r in shard_rows(langs)] == [3]


def test_configuration_errors(tmp_path):
    from pipeline.launch.cli import ConfigError, parse_args

    base = ["--input", "x.jsonl", "--output", "out", "--task", "seq2seq"]
    for extra, message in ((["--source-lang", "en"], "go together"),
                           (["--format", "translation"], "needs --source-lang"),
                           (["--max-length", "8"], "--max-source-length"),
                           (["--max-source-length", "0"], "integer >= 1"),
                           (["--group-texts", "8"], "applies to --task")):
        with pytest.raises(ConfigError, match=message):
            parse_args(base + extra)
