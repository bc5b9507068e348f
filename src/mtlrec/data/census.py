"""Census-Income (KDD): raw UCI files -> typed columns and labels.

Follows the official MPT-Rec preprocessing (docs/spec/mptrec.md section 9): 42 raw columns, 29
sparse fields, 11 dense fields (the instance weight is kept as a feature, as in the official code).
The tasks are declarations in params (`datasets.census.tasks`, mtlrec.data.tasks): income > 50k
(T1), marital == "Never married" (T2), and the new tasks education == Bachelors and sex == Male.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from mtlrec.errors import MtlrecError

COLUMNS = [
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour",
    "hs_college", "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin", "sex",
    "union_member", "unemp_reason", "full_or_part_emp", "capital_gains", "capital_losses",
    "stock_dividends", "tax_filer_stat", "region_prev_res", "state_prev_res", "det_hh_fam_stat",
    "det_hh_summ", "instance_weight", "mig_chg_msa", "mig_chg_reg", "mig_move_reg", "mig_same",
    "mig_prev_sunbelt", "num_emp", "fam_under_18", "country_father", "country_mother",
    "country_self", "citizenship", "own_or_self", "vet_question", "vet_benefits", "weeks_worked",
    "year", "income_50k",
]  # fmt: skip

SPARSE = [
    "class_worker", "det_ind_code", "det_occ_code", "education", "hs_college", "major_ind_code",
    "major_occ_code", "race", "hisp_origin", "sex", "union_member", "unemp_reason",
    "full_or_part_emp", "tax_filer_stat", "region_prev_res", "state_prev_res", "det_hh_fam_stat",
    "det_hh_summ", "mig_chg_msa", "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt",
    "fam_under_18", "country_father", "country_mother", "country_self", "citizenship",
    "vet_question",
]  # fmt: skip

DENSE = [
    "age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends",
    "instance_weight", "num_emp", "own_or_self", "vet_benefits", "weeks_worked", "year",
]  # fmt: skip

RAW_FILES = {"train": "census-income.data.gz", "test": "census-income.test.gz"}
INCOME_VALUES = {"- 50000.", "50000+."}


def read_raw(path: Path, max_rows: int | None = None) -> pd.DataFrame:
    """Read one raw file (no header, ', ' separated) into 42 string/float columns.

    Raises MtlrecError (one line naming the file, row and column) when the file cannot be read
    (corrupt or truncated gzip included), a row does not have exactly 42 fields, the label is
    unknown or a numeric field holds a non-numeric value.
    """
    try:
        frame = pd.read_csv(
            path, header=None, sep=",", skipinitialspace=True, dtype=str, nrows=max_rows,
            keep_default_na=False, compression="infer",
        )
    except (OSError, EOFError, zlib.error, pd.errors.ParserError) as exc:
        raise MtlrecError(f"census: cannot parse {path.name}: {str(exc).splitlines()[0]}") from exc
    if frame.shape[1] != len(COLUMNS):
        kind = "missing" if frame.shape[1] < len(COLUMNS) else "extra"
        raise MtlrecError(
            f"census: {path.name} has {frame.shape[1]} columns, expected {len(COLUMNS)} "
            f"({kind} column(s))"
        )
    frame.columns = COLUMNS
    # a row with fewer fields ends in empty values (no Census field is empty: '?' marks missing)
    short = (frame.isna().any(axis=1) | (frame.iloc[:, -1] == "")).to_numpy()
    if short.any():
        row = int(np.flatnonzero(short)[0])
        values = frame.iloc[row].fillna("").tolist()
        fields = max((i + 1 for i, v in enumerate(values) if v != ""), default=0)
        raise MtlrecError(f"census: {path.name}: row {row + 1} has {fields} fields, expected "
                          f"{len(COLUMNS)}")
    unknown = set(frame["income_50k"].unique()) - INCOME_VALUES
    if unknown:
        raise MtlrecError(f"census: {path.name}: unknown income labels {sorted(unknown)[:3]}")
    for column in DENSE:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise MtlrecError(f"census: {path.name}: row {row + 1}, column '{column}': "
                              f"non-numeric value {frame[column].iloc[row]!r}")
        frame[column] = values
    return frame
