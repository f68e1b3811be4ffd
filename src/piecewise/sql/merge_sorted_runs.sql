-- A date's tests of one direction, merged from sorted run files that ingest spilled to
-- disk, in the order of the private store's files. DuckDB sorts beyond its memory limit
-- by spilling, so a day of any size is written in bounded memory.
SELECT *
FROM read_parquet($runs)
ORDER BY test_time, id, uuid
