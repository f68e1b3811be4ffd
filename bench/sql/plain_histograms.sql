-- The throughput histograms of the same cells: log-spaced buckets, low * ratio ** b.
-- Parameters: $low, $ratio, $buckets.
WITH t AS (
    SELECT
        direction, area, isp,
        date AS day,
        date_trunc('month', date) AS month,
        date_trunc('quarter', date) AS quarter,
        date_trunc('year', date) AS year,
        least(greatest(floor(ln(greatest(mbps, 1e-12) / $low) / ln($ratio)), 0), $buckets - 1)::INTEGER
            AS bucket
    FROM tests
)
SELECT direction, area, isp, day, month, quarter, year, bucket, count(*) AS count
FROM t
GROUP BY GROUPING SETS (
    (direction, area, day, bucket), (direction, area, month, bucket),
    (direction, area, quarter, bucket), (direction, area, year, bucket),
    (direction, area, isp, day, bucket), (direction, area, isp, month, bucket),
    (direction, area, isp, quarter, bucket), (direction, area, isp, year, bucket)
)
-- Tests of no known ISP count in the all-ISP cells only, as in Piecewise.
HAVING GROUPING(isp) = 1 OR isp IS NOT NULL
