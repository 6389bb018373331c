"""SQuAD documents -> one flat record per question (the layout ``datasets`` gives SQuAD v1/v2).

Flat record: ``{"id", "title", "context", "question", "answers": {"text": [...], "answer_start":
[...]}}``; an unanswerable v2 question has empty lists. Two documents are expanded:

* the original nested SQuAD JSON, ``{"version", "data": [{"title", "paragraphs": [{"context",
  "qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}``
  (``plausible_answers`` of impossible questions are not answers and are dropped);
* a ``{"data": [flat record, ...]}`` wrapper (transformers' ``tests_samples/SQUAD/sample.json``,
  what ``run_qa.py`` reads with ``field="data"``).

:func:`expand_squad` maps a stream of raw records to a stream of raw records: a record that is one of
these documents becomes one record per question, any other record passes through unchanged. Records
are renumbered per source in stream order, so ``index`` stays the 0-based position of the question
in its file. A question whose layout is broken (a paragraph without a context, a question that is
not an object) becomes an unparseable record (``invalid_content``) carrying its JSON text, and the
other questions of the document are kept.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Mapping

from transforms.errors import INVALID_CONTENT
from transforms.reading.record import RawRecord


def is_squad_document(value: Any) -> bool:
    """Whether a parsed record is a SQuAD document (nested, or a ``data`` list of flat records)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("data"), list) or not value["data"]:
        return False
    first = value["data"][0]
    return isinstance(first, Mapping) and ("paragraphs" in first or ("question" in first and "context" in first))


def _flat_answers(answers: Any) -> dict[str, list]:
    if not isinstance(answers, list):
        raise ValueError(f"answers must be a list, not {type(answers).__name__}")
    texts, starts = [], []
    for answer in answers:
        if not isinstance(answer, Mapping):
            raise ValueError("an answer is not an object")
        texts.append(answer.get("text"))
        starts.append(answer.get("answer_start"))
    return {"text": texts, "answer_start": starts}


def _questions(value: Mapping) -> Iterator[tuple[Any, str | None]]:
    """``(flat record, None)`` per question, or ``(offending JSON, error)`` for a broken one."""
    for article in value["data"]:
        if not isinstance(article, Mapping):
            yield article, "a data item is not an object"
            continue
        if "paragraphs" not in article:
            yield article, None  # already flat
            continue
        title = article.get("title")
        paragraphs = article["paragraphs"]
        if not isinstance(paragraphs, list):
            yield article, "paragraphs is not a list"
            continue
        for paragraph in paragraphs:
            context = paragraph.get("context") if isinstance(paragraph, Mapping) else None
            qas = paragraph.get("qas") if isinstance(paragraph, Mapping) else None
            if not isinstance(context, str) or not isinstance(qas, list):
                yield paragraph, "a paragraph needs a context string and a qas list"
                continue
            for qa in qas:
                if not isinstance(qa, Mapping):
                    yield qa, "a qas item is not an object"
                    continue
                try:
                    answers = _flat_answers(qa.get("answers", []))
                except ValueError as exc:
                    yield qa, str(exc)
                    continue
                record = {"id": qa.get("id"), "title": title, "context": context, "question": qa.get("question"),
                          "answers": answers}
                yield record, None


def expand_squad(raws: Iterable[RawRecord]) -> Iterator[RawRecord]:
    """SQuAD documents expanded to one record per question, other records unchanged (see the module)."""
    next_index: dict[str, int] = {}
    for raw in raws:
        if raw.ok and is_squad_document(raw.value):
            items = _questions(raw.value)
        else:
            items = None
        if items is None:
            index = next_index.get(raw.source, 0)
            next_index[raw.source] = index + 1
            yield raw if raw.index == index else RawRecord(raw.source, index, raw.value, raw.raw, raw.error, raw.reason)
            continue
        for value, error in items:
            index = next_index.get(raw.source, 0)
            next_index[raw.source] = index + 1
            if error is None:
                yield RawRecord(raw.source, index, value)
            else:
                text = json.dumps(value, ensure_ascii=False, default=str)
                yield RawRecord(raw.source, index, None, raw=text, error=error, reason=INVALID_CONTENT)
