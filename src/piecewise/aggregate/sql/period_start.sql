-- The first day of the @kind period holding a test's date (piecewise.core.periods.start_of).
-- Put in place of "period_start" in braces in sql/cells.sql and sql/coarse_counts.sql
-- (aggregate/cells_sql).
CASE @kind
      WHEN 'day' THEN date
      WHEN 'month' THEN DATE_TRUNC(date, MONTH)
      WHEN 'quarter' THEN DATE_TRUNC(date, QUARTER)
      ELSE DATE_TRUNC(date, YEAR)
    END