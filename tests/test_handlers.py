"""The functions' handlers without the functions (piecewise.handlers): a block of a
backfill that keeps failing is given up after a few attempts, not read (and billed)
again for the day Pub/Sub keeps delivering it."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest

from piecewise.core.config import parse_config
from piecewise.handlers import MAX_BLOCK_ATTEMPTS, BlockFailed, handle_ingest_date
from piecewise.ingest.backfill import DateMessage, new_batch
from piecewise.pipeline import DateIngester
from piecewise.storage.manifest import Manifest
from piecewise.storage.store import Stores
from test_pipeline import config_text

DAY = dt.date(2025, 3, 1)


def test_a_block_that_keeps_failing_is_given_up_after_a_few_attempts(
    tmp_path: Path, demo_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    export = tmp_path / "downloads.jsonl"  # a value no reader takes: the block fails
    row = {"id": "a", "date": DAY.isoformat(), "a": {"MinRTT": "fast"}}
    export.write_text(json.dumps(row) + "\n")
    text = config_text(demo_data).replace(
        'kind = "synthetic"\nseed = 11\ntests_per_day = 400',
        f'kind = "files"\ndownloads = "{export}"',
    )
    config = parse_config(text, base_dir=tmp_path)
    now = dt.datetime(2025, 3, 3, 6, tzinfo=dt.UTC)
    message = DateMessage((DAY,), new_batch(now), 1, now).to_bytes()
    for _ in range(MAX_BLOCK_ATTEMPTS - 1):
        with pytest.raises(BlockFailed, match="cannot read"):
            handle_ingest_date(config, message)  # delivered again by Pub/Sub
    caplog.set_level(logging.ERROR, logger="piecewise.handlers")
    answer = handle_ingest_date(config, message)  # acknowledged: no more deliveries
    assert answer["given_up"] is True and answer["status"] == {DAY.isoformat(): "failed"}
    assert f"failed {MAX_BLOCK_ATTEMPTS} times: given up" in caplog.text
    private = Stores.of(config).private
    assert Manifest(private).dates() == []  # nothing recorded: the next run plans it
    assert private.list("locks/") == []
    # Delivered once more all the same (a duplicate): not read again.
    export.unlink()  # a read would fail otherwise than by giving up
    assert handle_ingest_date(config, message)["given_up"] is True


def test_an_attempt_stopped_at_the_timeout_counts(
    tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt is counted as it starts: a block whose reading is stopped each time
    (the function's timeout) is not delivered and read for ever either."""
    config = parse_config(config_text(demo_data), base_dir=tmp_path)
    now = dt.datetime(2025, 3, 3, 6, tzinfo=dt.UTC)
    message = DateMessage((DAY,), new_batch(now), 1, now).to_bytes()

    def stopped(*args: object, **kwargs: object) -> None:
        raise TimeoutError("the function's time is up")  # as the platform stops it

    monkeypatch.setattr(DateIngester, "ingest_block", stopped)
    for _ in range(MAX_BLOCK_ATTEMPTS):
        with pytest.raises(TimeoutError):
            handle_ingest_date(config, message)
    assert handle_ingest_date(config, message)["given_up"] is True


def test_a_start_alone_runs_to_yesterday_in_a_study_still_going(
    tmp_path: Path, demo_data: Path
) -> None:
    """A start alone, while the study's end is still ahead: to yesterday, not to
    `periods.end` (which is not over yet)."""
    from piecewise.handlers import handle_ingest

    config = parse_config(config_text(demo_data), base_dir=tmp_path)  # 2025-03-25 to 04-06
    answer, status = handle_ingest(config, {"start": "2025-03-31"}, today=dt.date(2025, 4, 3))
    assert status == 200, answer
    assert sorted(Manifest(Stores.of(config).private).dates()) == [
        dt.date(2025, 3, 31),
        dt.date(2025, 4, 1),
        dt.date(2025, 4, 2),
    ]


def test_a_start_alone_runs_to_the_end_of_a_study_over_before(
    tmp_path: Path, demo_data: Path
) -> None:
    """A start alone ran to yesterday: once a study's end was past, the ingest function
    refused it naming `end`, which the body did not give. It runs to `periods.end`."""
    from piecewise.handlers import handle_ingest

    config = parse_config(config_text(demo_data), base_dir=tmp_path)  # 2025-03-25 to 04-06
    today = dt.date(2026, 12, 7)
    answer, status = handle_ingest(config, {"start": "2025-04-05"}, today=today)
    assert status == 200, answer
    assert sorted(Manifest(Stores.of(config).private).dates()) == [
        dt.date(2025, 4, 5),
        dt.date(2025, 4, 6),
    ]
    for body, parameter, said in (
        ({"start": "2025-04-08"}, "start", "start 2025-04-08 is after periods.end"),
        ({"end": "2025-03-01"}, "end", "end 2025-03-01 is before periods.start"),
        ({"start": "2025-04-01", "end": "2025-04-09"}, "end", "end 2025-04-09 is after"),
        ({"start": "2025-03-20", "end": "2025-03-26"}, "start", "is before periods.start"),
        # A malformed start alone was parsed as an end, and named so.
        ({"start": "2025-4-05"}, "start", "start must be a date as YYYY-MM-DD"),
    ):
        answer, status = handle_ingest(config, body, today=today)
        assert status == 400 and answer["parameter"] == parameter, answer
        assert said in answer["error"], answer
