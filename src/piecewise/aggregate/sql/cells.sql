-- Statistics and histogram of every cell of one layer and one period kind: per area,
-- period, direction and ISP (each ISP, and every ISP together as @all_isps).
-- GoogleSQL; DuckDB runs it transpiled by sqlglot (piecewise.aggregate.cells_sql).
-- The sampled tests of @dates (sql/sampled.sql) come in place of "sampled" in braces;
-- {table} and {area} are identifiers from the validated config and {shares} one line
-- per configured threshold and use case (engines/cells_sql.share_sql); every value is a
-- query parameter. "evening" in braces is empty, or for an evening twin's cells
-- (piecewise.core.hours) the condition that keeps the sampled tests of the evening hours
-- alone (engines/cells_sql.EVENING).
-- APPROX_QUANTILES(x, 100)[OFFSET(k)] is the k-th percentile: approximate in BigQuery,
-- exact (linear interpolation, quantile_cont) in DuckDB.
WITH sampled AS ({sampled}),

tests AS (
  SELECT
    direction,
    {period_start} AS period,
    {area} AS area,
    isp,
    mbps,
    min_rtt_ms,
    loss_rate,
    client_ip,
    -- piecewise.core.histogram.bucket_of: log-spaced buckets, the ends clamped
    CAST(LEAST(GREATEST(FLOOR(LN(mbps / @low) / LN(@ratio)), 0), @buckets - 1) AS INT64)
      AS bucket
  FROM sampled
  WHERE {area} IS NOT NULL
    AND {area} NOT IN UNNEST(@pseudo_areas)
    {evening}
),

stats AS (
  SELECT
    area,
    period,
    direction,
    IF(GROUPING(isp) = 1, @all_isps, isp) AS isp,
    COUNT(*) AS tests,
    COUNT(DISTINCT client_ip) AS clients,
    APPROX_QUANTILES(mbps, 100)[OFFSET(10)] AS p10,
    APPROX_QUANTILES(mbps, 100)[OFFSET(25)] AS p25,
    APPROX_QUANTILES(mbps, 100)[OFFSET(50)] AS median,
    APPROX_QUANTILES(mbps, 100)[OFFSET(75)] AS p75,
    APPROX_QUANTILES(mbps, 100)[OFFSET(90)] AS p90,
    AVG(mbps) AS mean,
    EXP(AVG(LN(mbps))) AS geomean,
    APPROX_QUANTILES(min_rtt_ms, 100)[SAFE_OFFSET(50)] AS rtt_median,
    APPROX_QUANTILES(min_rtt_ms, 100)[SAFE_OFFSET(90)] AS rtt_p90,
    APPROX_QUANTILES(loss_rate, 100)[SAFE_OFFSET(50)] AS loss_median,
    {shares}
  FROM tests
  GROUP BY GROUPING SETS ((area, period, direction), (area, period, direction, isp))
),

buckets AS (
  SELECT
    area,
    period,
    direction,
    IF(GROUPING(isp) = 1, @all_isps, isp) AS isp,
    bucket,
    COUNT(*) AS count
  FROM tests
  GROUP BY GROUPING SETS ((area, period, direction, bucket), (area, period, direction, isp, bucket))
),

histograms AS (
  SELECT
    area,
    period,
    direction,
    isp,
    ARRAY_AGG(STRUCT(bucket AS bucket, count AS count) ORDER BY bucket) AS histogram
  FROM buckets
  GROUP BY area, period, direction, isp
)

SELECT stats.*, histograms.histogram
FROM stats
JOIN histograms USING (area, period, direction, isp)
