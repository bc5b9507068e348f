"""Tasks as declarations: a task is a raw column and the rule that makes it a 0/1 label.

    datasets:
      census:
        tasks:
          income:    {column: income_50k, equals: "50000+."}
          education: {column: education, equals: "Bachelors degree(BA AB BS)"}
          older:     {column: age, above: 50}

Rules (exactly one per task): `equals: v` (label 1 where the value is v), `in: [v, ...]`,
`above: x` / `below: x` (numeric comparison, strictly). String values are compared after removing
leading and trailing blanks (the Census files write ", Male"; `equals: Male` matches).

A column that serves as a task's label is no input of any run that has that task
(`label_inputs`): the Census `education` field leaves the inputs of every run with the education
task (D_in 127 -> 123), so no model sees its label.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mtlrec.errors import MtlrecError

RULES = ("equals", "in", "above", "below")


def rule_text(decl: Mapping[str, Any]) -> str:
    """The rule as a reader sees it, e.g. `education == 'Bachelors degree(BA AB BS)'`."""
    column = decl["column"]
    if "equals" in decl:
        return f"{column} == {decl['equals']!r}"
    if "in" in decl:
        return f"{column} in {list(decl['in'])!r}"
    if "above" in decl:
        return f"{column} > {decl['above']}"
    return f"{column} < {decl['below']}"


def _strip(values: pd.Series) -> pd.Series:
    return values.astype(str).str.strip()


def task_label(frame: pd.DataFrame, task: str, decl: Mapping[str, Any], where: str
               ) -> np.ndarray:
    """0/1 int8 labels of `task` on one raw frame. `where` names the dataset and file in errors.

    A missing column, a numeric rule on a non-numeric value, or a rule that is not exactly one of
    RULES is one line naming the task and the column."""
    column = decl["column"]
    if column not in frame.columns:
        raise MtlrecError(f"{where}: task '{task}': label column '{column}' does not exist "
                          f"(columns: {list(frame.columns)[:8]}...)")
    given = [rule for rule in RULES if rule in decl]
    if len(given) != 1:
        raise MtlrecError(f"{where}: task '{task}' needs exactly one rule of {list(RULES)}, "
                          f"got {given}")
    values = frame[column]
    if "equals" in decl:
        hit = _strip(values) == str(decl["equals"]).strip()
    elif "in" in decl:
        hit = _strip(values).isin([str(v).strip() for v in decl["in"]])
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.isna().any():
            row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
            raise MtlrecError(f"{where}: task '{task}': column '{column}' has a non-numeric "
                              f"value {values.iloc[row]!r} (row {row + 1}) for the rule "
                              f"{rule_text(decl)}")
        hit = numbers > decl["above"] if "above" in decl else numbers < decl["below"]
    return hit.to_numpy(dtype=np.int8)


def check_two_classes(task: str, decl: Mapping[str, Any], labels: np.ndarray, where: str) -> None:
    """A rule that gives one class on the training data makes no task: one line naming it."""
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        only = "1" if positives else "0"
        raise MtlrecError(f"{where}: task '{task}': the rule {rule_text(decl)} gives only class "
                          f"{only} on the {len(labels)} training rows (column '{decl['column']}')")


def label_inputs(tasks: Mapping[str, Mapping[str, Any]], names: list[str]) -> list[str]:
    """The raw columns that are the labels of the tasks `names` (inputs no run of them may see)."""
    return [tasks[name]["column"] for name in names if name in tasks]
