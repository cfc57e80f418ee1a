"""Make `invocations_per_app_minute.csv.gz` here from the shared one-day Azure Functions trace.

    python tests/data/traffic/azure-functions-2019/make_gz.py \\
        /work/shared/data/traffic/azure-functions-2019/invocations_per_app_minute.csv

Every row of every app, in the source's order, with LF line endings, gzipped with no time
stamp (the same bytes every run): 0.6 MB instead of 5 MB. Named `.csv.gz` because the
forecast commands read every `*.csv` of `tests/data/traffic` as a `timestamp,value` series,
and this is not one; `shadowdns simulate` and its benchmarks read it.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from pathlib import Path


def main() -> None:
    source = Path(sys.argv[1])
    target = Path(__file__).with_name("invocations_per_app_minute.csv.gz")
    text = io.StringIO()
    with source.open(newline="") as src:
        csv.writer(text, lineterminator="\n").writerows(csv.reader(src))
    target.write_bytes(gzip.compress(text.getvalue().encode(), compresslevel=9, mtime=0))


if __name__ == "__main__":
    main()
