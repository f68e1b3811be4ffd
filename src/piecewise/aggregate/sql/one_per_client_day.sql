-- One test per client, date and direction, as M-Lab's statistics pipeline keeps heavy
-- testers from skewing results: the test with the lowest FARM_FINGERPRINT of its id
-- (`pick`, computed at ingest: piecewise.ingest.sampling). Tests without a client are all kept.
-- The same rule as sql/cells.sql's for BigQuery (a test without an id, so without a
-- pick, is ordered by its throughput and round trip, which both engines read).
SELECT *
FROM tests
QUALIFY client_ip IS NULL
    OR row_number() OVER (
        PARTITION BY direction, "date", client_ip
        ORDER BY pick NULLS FIRST, mbps, min_rtt_ms NULLS FIRST
    ) = 1
