"""Readers for the encoder-head tasks: CSV/TSV with named columns, CoNLL text, SQuAD documents."""
from __future__ import annotations

import csv
import io
import json

from encoder_head_references import DATA

from transforms.reading import iter_records
from transforms.reading.conll import iter_conll_records
from transforms.reading.delimited import iter_delimited_records
from transforms.reading.squad import expand_squad, is_squad_document


def _read(text: bytes | str, delimiter: str):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return list(iter_delimited_records(io.BytesIO(data), source="f", delimiter=delimiter))


def test_mrpc_csv_reads_like_the_csv_module():
    path = DATA / "mrpc_dev.csv"
    records = list(iter_delimited_records(open(path, "rb"), source=str(path), delimiter=","))
    with open(path, newline="", encoding="utf-8") as handle:
        expected = list(csv.DictReader(handle))
    assert [r.value for r in records] == expected and len(records) == 6
    assert [r.index for r in records] == list(range(6))
    assert records[0].value["sentence2"].startswith('" The foodservice')  # "" inside quotes is one quote


def test_mrpc_tsv_keeps_quote_characters_and_crlf():
    records = list(iter_delimited_records(open(DATA / "mrpc_train.tsv", "rb"), source="t", delimiter="\t"))
    assert len(records) == 6 and all(r.ok for r in records)
    assert records[0].value["Quality"] == "1"
    assert records[0].value["#2 String"] == ('" The foodservice pie business does not fit our long-term growth '
                                             'strategy .')
    assert records[1].value["#2 String"].count('"') == 2
    assert not any("\r" in v for r in records for v in r.value.values())


def test_delimited_bad_rows_are_rejected_and_reading_goes_on():
    records = _read("a,b\n1,2\n1,2,3\n\n\"x\ny\",4\n5\n", ",")
    assert [r.ok for r in records] == [True, False, True, False]
    assert records[1].reason == "invalid_content" and "3 cells" in records[1].error
    assert records[2].value == {"a": "x\ny", "b": "4"}  # a quoted field spans lines
    assert [r.index for r in records] == [0, 1, 2, 3]


def test_delimited_invalid_utf8_and_open_quote_at_the_end():
    records = _read(b"a,b\n1,\xff\n3,4\n5,\"open\n", ",")
    assert [r.ok for r in records] == [False, True, False]
    assert "UTF-8" in records[0].error
    assert records[2].reason == "truncated_input"


def test_delimited_header_problems_make_one_record():
    for header in ("a,,b\n1,2,3\n", "a,a\n1,2\n"):
        records = _read(header, ",")
        assert len(records) == 1 and not records[0].ok and records[0].reason == "invalid_content"
    assert _read("\ufeffa\tb\n1\t2\n", "\t")[0].value == {"a": "1", "b": "2"}  # BOM dropped


def test_germeval_conll_sentences():
    path = DATA / "germeval_train.conll"
    records = list(iter_conll_records(open(path, "rb"), source=str(path)))
    text = path.read_text(encoding="utf-8")
    sentences = [block.splitlines() for block in text.strip("\n").split("\n\n")]
    assert len(records) == len(sentences) == 11
    for record, lines in zip(records, sentences):
        assert record.value["tokens"] == [line.split(" ")[0] for line in lines]
        assert record.value["tags"] == [line.split(" ")[1] for line in lines]
    assert records[3].value["tags"][11] == "B-LOCderiv"


def test_conll_four_columns_docstart_and_broken_sentence():
    data = ("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\r\n\nlonely\nword O\n\n"
            "Peter\tB-PER\r\nBlackburn\tI-PER").encode()
    records = list(iter_conll_records(io.BytesIO(data), source="c"))
    assert records[0].value == {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}
    assert not records[1].ok and "no tag" in records[1].error and records[1].raw == "lonely\nword O"
    assert records[2].value == {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}
    assert [r.index for r in records] == [0, 1, 2]


def test_nested_and_flat_squad_give_the_same_questions():
    nested = list(expand_squad(iter_records(open(DATA / "squad_v2_nested.json", "rb"), source="n")))
    flat = list(expand_squad(iter_records(open(DATA / "squad_v2_flat.json", "rb"), source="f")))
    assert len(nested) == len(flat) == 14 and [r.index for r in nested] == list(range(14))
    document = json.loads((DATA / "squad_v2_nested.json").read_text())
    qas = [qa for article in document["data"] for p in article["paragraphs"] for qa in p["qas"]]
    for record, qa, other in zip(nested, qas, flat):
        assert record.value["id"] == qa["id"] == other.value["id"]
        assert record.value["question"] == other.value["question"] and record.value["context"] == other.value["context"]
        assert record.value["answers"]["text"] == [a["text"] for a in qa["answers"]]
        assert bool(record.value["answers"]["text"]) == bool(other.value["answers"]["text"])  # the flat one has 3-4
    assert nested[0].value["title"] == "Normans"


def test_squad_broken_question_is_one_rejection_and_other_records_pass():
    from transforms.reading import RawRecord

    document = {"data": [{"title": "t", "paragraphs": [{"context": "abc", "qas": [
        {"id": "1", "question": "q?", "answers": [{"text": "b", "answer_start": 1}]}, "broken"]},
        {"qas": []}]}]}
    raws = [RawRecord("s", 0, {"question": "x", "context": "y", "answers": {"text": [], "answer_start": []}}),
            RawRecord("s", 1, document), RawRecord("s", 2, {"other": 1})]
    out = list(expand_squad(raws))
    assert [r.index for r in out] == [0, 1, 2, 3, 4]
    assert out[1].value["answers"] == {"text": ["b"], "answer_start": [1]}
    assert not out[2].ok and not out[3].ok and out[2].reason == "invalid_content"
    assert out[4].value == {"other": 1}
    assert not is_squad_document({"data": []}) and not is_squad_document({"data": [{"x": 1}]})
