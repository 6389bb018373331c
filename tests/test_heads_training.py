"""One training step per encoder head through transformers.Trainer with a tiny randomly initialised BERT: the
job's shards (ShardDataset) and Collator.from_manifest give a finite loss equal to the loss on transformers'
own pipeline (the example script's preprocessing + transformers' collator) for the same records."""
from __future__ import annotations

import copy
import json
import math

import pytest
import test_heads_classification as classification
import test_heads_qa as qa
import test_heads_token_classification as token_classification
import torch
from encoder_head_references import DATA, minilm_tokenizer
from task_testing import bert_folder, run

from transforms.runtime import Collator, ShardDataset

pytestmark = pytest.mark.slow  # three heads x two Trainer runs: ~15 s on two cores


@pytest.fixture(scope="module")
def tok():
    return minilm_tokenizer()


def tiny_bert(model_class, tok, **config):
    from transformers import BertConfig

    torch.manual_seed(0)
    return model_class(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=37, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0, max_position_embeddings=512, **config))


def one_step(model, rows, collator, tmp_path) -> float:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=len(rows), max_steps=1,
                             learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0)
    trainer = Trainer(model=copy.deepcopy(model), args=args, train_dataset=rows, data_collator=collator)
    return trainer.train().training_loss


def job_dataset(tmp_path, *args, **collator_options):
    out = tmp_path / "job"
    assert run([*map(str, args), "--output", str(out), "--tokenizer", bert_folder(), "--workers", "1"]) == 0
    return ShardDataset(str(out)), Collator.from_manifest(str(out), **collator_options)


def test_sequence_classification_step(tok, tmp_path):
    from transformers import BertForSequenceClassification, DataCollatorWithPadding

    records = classification.read("mrpc_dev.csv", ",")
    rows, collator = job_dataset(tmp_path, "--task", "classification", "--input", DATA / "mrpc_dev.csv")
    reference = classification.columns_to_rows(classification.glue_preprocess(
        {key: [r[key] for r in records] for key in ("sentence1", "sentence2", "label")}, tokenizer=tok,
        sentence1_key="sentence1", sentence2_key="sentence2",
        label_to_id=classification.glue_label_to_id(r["label"] for r in records), max_seq_length=128))
    model = tiny_bert(BertForSequenceClassification, tok, num_labels=2)
    ours = one_step(model, rows, collator, tmp_path / "a")
    theirs = one_step(model, [{k: v for k, v in r.items() if k != "attention_mask"} for r in reference],
                      DataCollatorWithPadding(tok), tmp_path / "b")
    assert math.isfinite(ours) and ours == pytest.approx(theirs, rel=1e-6, abs=1e-7)


def test_token_classification_step(tok, tmp_path):
    from transformers import BertForTokenClassification, DataCollatorForTokenClassification

    records = [json.loads(line) for line in (DATA / "conll_sample.json").read_text().splitlines()]
    rows, collator = job_dataset(tmp_path, "--task", "token-classification", "--input", DATA / "conll_sample.json",
                                 "--max-length", "24")
    _, reference = token_classification.reference_rows([r["words"] for r in records], [r["ner"] for r in records],
                                                       tok, max_length=24, label_all_tokens=False)
    model = tiny_bert(BertForTokenClassification, tok, num_labels=6)
    ours = one_step(model, rows, collator, tmp_path / "a")
    theirs = one_step(model, reference, DataCollatorForTokenClassification(tok), tmp_path / "b")
    assert math.isfinite(ours) and ours == pytest.approx(theirs, rel=1e-6, abs=1e-7)


def test_question_answering_step(tok, tmp_path):
    from transformers import BertForQuestionAnswering, default_data_collator

    records = qa.squad("squad_v2_flat.json")
    rows, collator = job_dataset(tmp_path, "--task", "qa", "--input", DATA / "squad_v2_flat.json", "--max-length", "64",
                                 "--doc-stride", "16", max_length=64)
    reference = qa.reference_features(records, tok, max_length=64, doc_stride=16, pad_to_max_length=True)
    assert len(rows) == len(reference)
    keys = ("input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions")
    model = tiny_bert(BertForQuestionAnswering, tok)
    ours = one_step(model, rows, collator, tmp_path / "a")
    theirs = one_step(model, [{k: r[k] for k in keys} for r in reference], default_data_collator, tmp_path / "b")
    assert math.isfinite(ours) and ours == pytest.approx(theirs, rel=1e-6, abs=1e-7)
