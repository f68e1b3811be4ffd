-- The cells of one layer as an analyst would write them in DuckDB: every period kind,
-- with and without the ISP, in one GROUPING SETS query; no sampling, suppression or
-- files. `tests` is a view of the located tests of the layer (its area as `area`).
-- Parameters: $download_1, $upload_1, $download_2, $upload_2 (the two thresholds' speeds);
-- The two use-case placeholders below hold one line per use case (its limits as
-- parameters $download_uN, $upload_uN, $rtt_uN, $loss_uN), empty without use cases.
WITH t AS (
    SELECT
        direction, area, isp, client_ip, mbps, min_rtt_ms, loss_rate,
        date AS day,
        date_trunc('month', date) AS month,
        date_trunc('quarter', date) AS quarter,
        date_trunc('year', date) AS year,
        mbps >= CASE direction WHEN 'download' THEN $download_1 ELSE $upload_1 END AS ok_1,
        mbps >= CASE direction WHEN 'download' THEN $download_2 ELSE $upload_2 END AS ok_2{use_case_tests}
    FROM tests
)
SELECT
    direction, area, isp, day, month, quarter, year,
    count(*) AS tests,
    count(DISTINCT client_ip) AS clients,
    quantile_cont(mbps, [0.1, 0.25, 0.5, 0.75, 0.9]) AS quantiles,
    avg(mbps) AS mean,
    exp(avg(ln(greatest(mbps, 1e-9)))) AS geomean,
    quantile_cont(min_rtt_ms, [0.5, 0.9]) AS rtt,
    quantile_cont(loss_rate, 0.5) AS loss_median,
    avg(ok_1::INTEGER) AS share_1,
    avg(ok_2::INTEGER) AS share_2{use_case_shares}
FROM t
GROUP BY GROUPING SETS (
    (direction, area, day), (direction, area, month),
    (direction, area, quarter), (direction, area, year),
    (direction, area, isp, day), (direction, area, isp, month),
    (direction, area, isp, quarter), (direction, area, isp, year)
)
-- Tests of no known ISP count in the all-ISP cells only, as in Piecewise.
HAVING GROUPING(isp) = 1 OR isp IS NOT NULL
