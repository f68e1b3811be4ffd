-- A date's tests of one direction, merged from sorted run files that ingest spilled to
-- disk, in the order of the private store's files, each test id once (the union views
-- can return a row twice): the copy first by test time, then uuid, then every column
-- in turn (`t`, the whole row, compares column by column, nulls last), as
-- `DaySpool.in_memory` keeps it. DuckDB sorts beyond its memory limit by spilling, so a
-- day of any size is written in bounded memory.
SELECT *
FROM read_parquet($runs) AS t
QUALIFY id IS NULL OR row_number() OVER (PARTITION BY id ORDER BY test_time, uuid, t) = 1
ORDER BY test_time, id, uuid, t
