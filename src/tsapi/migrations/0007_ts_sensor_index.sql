-- Pages of GET /readings are ordered by ts, then sensor (then value and metadata, which only
-- exact duplicates share; see query.py). Ordered by ts alone, the index left every row sharing the
-- page's timestamps to be read and sorted: a fleet reporting at the same instant made "the newest
-- 100" read and sort a thousand rows. In this order, a page reads about its own rows.
CREATE INDEX IF NOT EXISTS readings_ts_sensor_idx ON readings (ts DESC, sensor DESC NULLS LAST);
DROP INDEX IF EXISTS readings_ts_idx;
