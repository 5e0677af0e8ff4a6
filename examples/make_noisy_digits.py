"""Write scikit-learn's digits as a Parquet table with a share of the labels flipped.

Where DuckDB is installed (``pip install -e ".[warehouse]"``) the same table is also loaded into
``warehouse.duckdb`` beside it, as table ``digits``: the source of ``pipelines/digits_duckdb.toml``.
So this one command prepares the data of every example pipeline that needs no server.

The flipped rows are recorded in the ``true_label`` and ``is_flipped`` columns, which ``cleanpipe
flag`` should be told to ignore (``--exclude true_label,is_flipped``) and which let you check its
flags against the truth.

Usage::

    python examples/make_noisy_digits.py [--noise 0.3] [--seed 0] [--out examples/data/digits_noisy.parquet]
                                         [--no-warehouse]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits


def noisy_digits(noise: float = 0.3, seed: int = 0) -> pa.Table:
    """Digits with ``noise`` of the labels flipped uniformly to another class, as an Arrow table."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < noise
    # Adding 1..9 modulo 10 moves a label to a uniformly chosen other class.
    noisy = np.where(flip, (y + rng.integers(1, 10, len(y))) % 10, y)
    cols = {f"pixel_{i}": X[:, i].astype(np.float32) for i in range(X.shape[1])}
    cols.update(row_id=np.arange(len(y)), label=noisy, true_label=y, is_flipped=flip)
    return pa.table(cols)


def load_warehouse(parquet: Path, database: Path) -> bool:
    """Load ``parquet`` into ``database`` as table ``digits`` (replaced); False without DuckDB."""
    try:
        import duckdb  # optional: the [warehouse] extra
    except ImportError:
        return False
    con = duckdb.connect(str(database))
    try:
        con.execute("CREATE OR REPLACE TABLE digits AS SELECT * FROM read_parquet(?)", [str(parquet)])
    finally:
        con.close()
    return True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "data" / "digits_noisy.parquet"))
    parser.add_argument("--no-warehouse", action="store_true",
                        help="do not load the table into warehouse.duckdb beside --out")
    args = parser.parse_args(argv)
    table = noisy_digits(args.noise, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, args.out)
    print(f"wrote {args.out}: {table.num_rows} rows, {int(np.sum(table['is_flipped']))} labels flipped")
    database = Path(args.out).parent / "warehouse.duckdb"
    if not args.no_warehouse and load_warehouse(Path(args.out), database):
        print(f"loaded it into {database} as table digits")


if __name__ == "__main__":
    main()
