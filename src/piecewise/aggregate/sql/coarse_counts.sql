-- Tests located too roughly to count in the areas of one layer (piecewise.core.location), by
-- the area their point falls in, period, direction and ISP (each ISP, and every ISP
-- together as @all_isps): the `coarse` count of the cells. GoogleSQL; DuckDB runs it
-- transpiled by sqlglot, as sql/cells.sql. The sampled tests, the table and the evening's
-- condition come in as there, {rough} is an identifier from the validated config;
-- every value is a query parameter.
WITH sampled AS ({sampled}),

tests AS (
  SELECT
    direction,
    {period_start} AS period,
    {rough} AS area,
    isp
  FROM sampled
  WHERE TRUE
    {evening}
)

SELECT
  area,
  period,
  direction,
  IF(GROUPING(isp) = 1, @all_isps, isp) AS isp,
  COUNT(*) AS coarse
FROM tests
WHERE area IS NOT NULL
GROUP BY GROUPING SETS ((area, period, direction), (area, period, direction, isp))
