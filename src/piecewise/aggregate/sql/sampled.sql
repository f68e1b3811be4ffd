-- The tests of @dates, sampled: with @one_per_client_day, of each
-- client's tests of a date and direction (all of them, wherever located), the one with
-- the lowest FARM_FINGERPRINT of its id (`pick`; a rule of its own, not M-Lab's
-- statistics' member choice: piecewise.ingest.sampling); tests without a client are all kept. Put in place of
-- "sampled" in braces in sql/cells.sql and sql/coarse_counts.sql (aggregate/cells_sql).
  SELECT *
  FROM {table}
  WHERE date BETWEEN @first_date AND @last_date
    AND date IN UNNEST(@dates)
  QUALIFY NOT @one_per_client_day
    OR client_ip IS NULL
    OR ROW_NUMBER() OVER (
      PARTITION BY direction, date, client_ip ORDER BY pick, mbps, min_rtt_ms
    ) = 1
