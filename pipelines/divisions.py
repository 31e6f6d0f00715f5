"""Administrative division codes as place names (411302 -> 宛城区), from the data
file data/reference/henan_divisions.csv (Henan's 地级 and 县级 codes; its
source is named in its header). A code not in the table reads as itself."""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

TABLE = Path(__file__).resolve().parent.parent / "data" / "reference" / "henan_divisions.csv"


@lru_cache(maxsize=1)
def place_names() -> dict[str, str]:
    with TABLE.open(encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {row["code"]: row["name"] for row in rows}


def place_name(code: str | None) -> str:
    if code is None:
        return "无数据"
    return place_names().get(str(code), str(code))
