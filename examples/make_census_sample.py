"""Writes examples/census_sample.csv.gz: a small table in the shape a user brings (named columns,
categorical and numeric features, 0/1 label columns), cut from the real Census-Income files that
ship in resources/ (the first 6,000 rows of the training file; no values are invented).

    python examples/make_census_sample.py   # rewrites the file; its sha256 is in my_table.yaml
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from mtlrec.data import census

HERE = Path(__file__).resolve().parent
RAW = HERE.parent / "resources" / "census-income-kdd" / "census-income.data.gz"
SPARSE = ["class_worker", "education", "major_ind_code", "major_occ_code", "race", "sex",
          "full_or_part_emp", "tax_filer_stat", "citizenship"]
DENSE = ["age", "wage_per_hour", "capital_gains", "stock_dividends", "weeks_worked"]


def main() -> None:
    frame = census.read_raw(RAW, max_rows=6000)
    table = frame[SPARSE + DENSE].copy()
    table["high_income"] = (frame["income_50k"] == "50000+.").astype(int)
    table["never_married"] = (frame["marital_stat"] == "Never married").astype(int)
    text = table.to_csv(index=False).encode()
    out = HERE / "census_sample.csv.gz"
    out.write_bytes(gzip.compress(text, compresslevel=9, mtime=0))
    print(f"wrote {out} ({len(table)} rows); sha256 of the CSV: {hashlib.sha256(text).hexdigest()}")


if __name__ == "__main__":
    main()
