"""Audit figures of the encoder-head tasks, over rows and rejections (merge in any order to the same
result: integer counts and min/max only).

* :class:`ClassificationFigures`: class balance (rows per class; per class for multi-label, with
  labels per row), regression label range and a histogram of labels rounded to one decimal, and the
  unmapped labels (values of ``unmapped_label`` rejections with their counts).
* :class:`TokenClassificationFigures`: tag frequencies (tokens trained per tag: what the loss sees),
  words, words lost to truncation, unmapped tags.
* :class:`QAFigures`: features per example, answerable / unanswerable examples, answers lost to
  windowing (answerable examples none of whose windows holds the answer), features whose target is
  the CLS token.

``to_dict()`` is the task's section of the audit document; keys are strings, values JSON numbers.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping

import numpy as np

from transforms import errors
from transforms.errors import RecordRejected
from transforms.shard_format import IGNORE_INDEX

MAX_LISTED = 50  # unmapped values listed in the document (most frequent first); all are counted


def _merge(into: Counter, other: Counter) -> None:
    into.update(other)


def _top(counter: Counter) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LISTED])


class ClassificationFigures:
    """Class balance and unmapped labels (see the module)."""

    def __init__(self, label_space, field_map: Mapping[str, str] | None = None):
        self.space = label_space
        self.field_map = dict(field_map or {})
        self.rows = 0
        self.truncated = 0
        self.classes: Counter = Counter()
        self.labels_per_row: Counter = Counter()
        self.low = math.inf
        self.high = -math.inf
        self.rounded: Counter = Counter()
        self.unmapped: Counter = Counter()

    def _name(self, class_id: int) -> str:
        return self.space.names[class_id] if self.space.names else str(class_id)

    def add_row(self, row: Mapping[str, Any]) -> None:
        from transforms.tasks.classification import MULTI_LABEL, REGRESSION

        self.rows += 1
        self.truncated += int(row.get("truncated_tokens", 0) > 0)
        label = row["labels"]
        if self.space.problem_type == REGRESSION:
            value = float(label)
            self.low, self.high = min(self.low, value), max(self.high, value)
            self.rounded[f"{round(value, 1):.1f}"] += 1
        elif self.space.problem_type == MULTI_LABEL:
            hot = np.flatnonzero(np.asarray(label) > 0)
            self.labels_per_row[str(len(hot))] += 1
            for class_id in hot:
                self.classes[self._name(int(class_id))] += 1
        else:
            self.classes[self._name(int(label))] += 1

    def add_rejection(self, item: Mapping[str, Any]) -> None:
        if item.get("reason") != errors.UNMAPPED_LABEL:
            return
        from transforms.tasks.classification import parse_classification

        try:
            label = parse_classification(item.get("record"), self.field_map).label
        except RecordRejected:
            return
        for value in label if isinstance(label, (list, tuple)) else [label]:
            try:
                self.space.encode([value] if isinstance(label, (list, tuple)) else value)
            except RecordRejected:
                self.unmapped[str(value)] += 1

    def merge(self, other: "ClassificationFigures") -> "ClassificationFigures":
        self.rows += other.rows
        self.truncated += other.truncated
        for mine, theirs in ((self.classes, other.classes), (self.labels_per_row, other.labels_per_row),
                             (self.rounded, other.rounded), (self.unmapped, other.unmapped)):
            _merge(mine, theirs)
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        return self

    def to_dict(self) -> dict[str, Any]:
        from transforms.tasks.classification import MULTI_LABEL, REGRESSION

        out: dict[str, Any] = {"problem_type": self.space.problem_type, "rows": self.rows,
                               "truncated_rows": self.truncated}
        if self.space.problem_type == REGRESSION:
            out["label_min"] = None if not self.rows else self.low
            out["label_max"] = None if not self.rows else self.high
            out["label_histogram"] = dict(sorted(self.rounded.items(), key=lambda kv: float(kv[0])))
        else:
            names = list(self.space.names) or [str(i) for i in range(self.space.num_labels)]
            out["class_balance"] = {name: self.classes.get(name, 0) for name in names}
            if self.space.problem_type == MULTI_LABEL:
                out["labels_per_row"] = dict(sorted(self.labels_per_row.items(), key=lambda kv: int(kv[0])))
        out["unmapped_labels"] = _top(self.unmapped)
        out["unmapped_label_records"] = sum(self.unmapped.values())
        return out


class TokenClassificationFigures:
    """Tag frequencies and words lost (see the module)."""

    def __init__(self, tag_space, field_map: Mapping[str, str] | None = None):
        self.space = tag_space
        self.field_map = dict(field_map or {})
        self.rows = 0
        self.words = 0
        self.words_truncated = 0
        self.truncated_rows = 0
        self.tags = np.zeros(tag_space.num_labels, dtype=np.int64)
        self.unmapped: Counter = Counter()

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.rows += 1
        self.words += int(row["num_words"])
        self.words_truncated += int(row["words_truncated"])
        self.truncated_rows += int(row.get("truncated_tokens", 0) > 0)
        labels = np.asarray(row["labels"])
        labels = labels[labels != IGNORE_INDEX]
        self.tags += np.bincount(labels, minlength=self.space.num_labels)[: self.space.num_labels]

    def add_rejection(self, item: Mapping[str, Any]) -> None:
        if item.get("reason") != errors.UNMAPPED_LABEL:
            return
        from transforms.tasks.token_classification import parse_tagged

        try:
            tags = parse_tagged(item.get("record"), self.field_map).tags
        except RecordRejected:
            return
        for tag in tags:
            try:
                self.space.encode([tag])
            except RecordRejected:
                self.unmapped[str(tag)] += 1

    def merge(self, other: "TokenClassificationFigures") -> "TokenClassificationFigures":
        self.rows += other.rows
        self.words += other.words
        self.words_truncated += other.words_truncated
        self.truncated_rows += other.truncated_rows
        self.tags += other.tags
        _merge(self.unmapped, other.unmapped)
        return self

    def to_dict(self) -> dict[str, Any]:
        names = list(self.space.names) or [str(i) for i in range(self.space.num_labels)]
        return {"rows": self.rows, "words": self.words, "words_lost_to_truncation": self.words_truncated,
                "truncated_rows": self.truncated_rows,
                "trained_tokens_per_tag": {name: int(n) for name, n in zip(names, self.tags)},
                "unmapped_tags": _top(self.unmapped), "unmapped_tag_occurrences": sum(self.unmapped.values())}


class QAFigures:
    """Features per example and answers lost to windowing (see the module)."""

    def __init__(self):
        self.features = 0
        self.cls_targets = 0
        self.per_example: Counter = Counter()
        self.answerable = 0
        self.unanswerable = 0
        self.lost = 0

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.features += 1
        self.cls_targets += int(not row["answer_in_window"])
        if row["feature_index"] != 0:
            return
        self.per_example[str(int(row["num_features"]))] += 1
        if row["answerable"]:
            self.answerable += 1
            self.lost += int(row["answer_windows"] == 0)
        else:
            self.unanswerable += 1

    def add_rejection(self, item: Mapping[str, Any]) -> None:
        """Rejections are counted by reason in the main audit; nothing QA-specific to add."""

    def merge(self, other: "QAFigures") -> "QAFigures":
        for name in ("features", "cls_targets", "answerable", "unanswerable", "lost"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        _merge(self.per_example, other.per_example)
        return self

    def to_dict(self) -> dict[str, Any]:
        examples = self.answerable + self.unanswerable
        return {"examples": examples, "features": self.features,
                "features_per_example": dict(sorted(self.per_example.items(), key=lambda kv: int(kv[0]))),
                "answerable_examples": self.answerable, "unanswerable_examples": self.unanswerable,
                "answers_lost_to_windowing": self.lost, "features_with_cls_target": self.cls_targets}
