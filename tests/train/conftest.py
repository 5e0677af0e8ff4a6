"""Small labelled tables for the training tests (tiny, so every test trains in well under a second)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from train_tables import make_table


@pytest.fixture
def table() -> pa.Table:
    return make_table()
