-- The region's tests of one direction for a date range, from one of M-Lab's unified
-- views (`measurement-lab.ndt.unified_downloads` / `unified_uploads`), shaped as
-- Piecewise's unified row (piecewise.core.schema.UNIFIED). Only the columns the pipeline
-- uses are read; the date filter is on the partition column. `{table}` is a table id
-- from the validated configuration; every value is a query parameter.
SELECT
  id,
  date,
  STRUCT(
    a.UUID AS UUID,
    a.TestTime AS TestTime,
    @direction AS Direction,
    a.MeanThroughputMbps AS MeanThroughputMbps,
    a.MinRTT AS MinRTT,
    a.LossRate AS LossRate
  ) AS a,
  STRUCT(
    client.IP AS IP,
    STRUCT(
      client.Geo.ContinentCode AS ContinentCode,
      client.Geo.CountryCode AS CountryCode,
      client.Geo.Subdivision1ISOCode AS Subdivision1ISOCode,
      client.Geo.City AS City,
      client.Geo.Latitude AS Latitude,
      client.Geo.Longitude AS Longitude,
      client.Geo.AccuracyRadiusKm AS AccuracyRadiusKm
    ) AS Geo,
    STRUCT(
      client.Network.ASNumber AS ASNumber,
      client.Network.ASName AS ASName
    ) AS Network
  ) AS client,
  STRUCT(server.Site AS Site) AS server
FROM `{table}`
WHERE date BETWEEN @start_date AND @end_date
  AND (
    NOT @use_bbox
    OR (
      client.Geo.Latitude BETWEEN @south AND @north
      AND client.Geo.Longitude BETWEEN @west AND @east
    )
  )
  AND (@country = '' OR client.Geo.CountryCode = @country)
  AND (ARRAY_LENGTH(@subdivisions) = 0 OR client.Geo.Subdivision1ISOCode IN UNNEST(@subdivisions))
