"""The test sampling keeps: BigQuery's FARM_FINGERPRINT of the test id, computed here."""

from __future__ import annotations

import pyarrow as pa
import pytest

from piecewise.ingest.sampling import fingerprints, with_pick


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The values BigQuery's documentation gives for FARM_FINGERPRINT.
        ("alphabet", -2427165924636348523),
        ("1footrue", -1541654101129638711),
        ("2applefalse", 2794438866806483259),
        ("3true", -4880158226897771312),
    ],
)
def test_the_fingerprint_is_bigquerys_farm_fingerprint(text: str, expected: int) -> None:
    assert fingerprints(pa.array([text])).to_pylist() == [expected]


def test_a_null_id_has_no_fingerprint_and_a_pick_is_added_only_when_missing() -> None:
    table = pa.table({"id": pa.array(["ndt-1", None], pa.string())})
    picked = with_pick(table)
    assert picked.column("pick").to_pylist()[1] is None
    assert picked.column("pick").type == pa.int64()
    assert with_pick(picked) is picked
