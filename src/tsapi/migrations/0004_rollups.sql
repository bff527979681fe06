-- Rollups: per sensor, per bucket of each width (seconds), the partial aggregates that every
-- aggregate function can be merged from. Only complete buckets are materialized, by tsapi's
-- refresher; newer rows are aggregated from readings at query time.
CREATE TABLE IF NOT EXISTS tsapi_rollup (
    width_s integer NOT NULL,
    sensor uuid NOT NULL,
    bucket timestamptz NOT NULL,
    count bigint NOT NULL,
    sum numeric NOT NULL,
    min numeric NOT NULL,
    max numeric NOT NULL,
    first_ts timestamptz NOT NULL,
    first_value numeric NOT NULL,
    last_ts timestamptz NOT NULL,
    last_value numeric NOT NULL,
    PRIMARY KEY (width_s, sensor, bucket)
);
CREATE INDEX IF NOT EXISTS tsapi_rollup_bucket_idx ON tsapi_rollup (width_s, bucket);

-- The same across all sensors, so that a whole-fleet aggregate reads one row per bucket.
CREATE TABLE IF NOT EXISTS tsapi_rollup_all (
    width_s integer NOT NULL,
    bucket timestamptz NOT NULL,
    count bigint NOT NULL,
    sum numeric NOT NULL,
    min numeric NOT NULL,
    max numeric NOT NULL,
    first_ts timestamptz NOT NULL,
    first_value numeric NOT NULL,
    last_ts timestamptz NOT NULL,
    last_value numeric NOT NULL,
    PRIMARY KEY (width_s, bucket)
);

-- Per width: rows older than `published` are logged when written (see tsapi_rollup_log);
-- rollup rows exist for the buckets before `materialized`.
CREATE TABLE IF NOT EXISTS tsapi_rollup_state (
    width_s integer PRIMARY KEY,
    published timestamptz NOT NULL,
    materialized timestamptz NOT NULL
);

-- Time ranges (hi inclusive) written after their buckets were published: the buckets they touch
-- are answered from readings until the refresher has recomputed them.
CREATE TABLE IF NOT EXISTS tsapi_rollup_log (
    lo timestamptz NOT NULL,
    hi timestamptz NOT NULL
);

-- Per sensor, over the rows the finest rollup has materialized: how many, the first and last
-- instants, the last value, and the metadata of that last reading.
CREATE TABLE IF NOT EXISTS tsapi_sensors (
    sensor uuid PRIMARY KEY,
    count bigint NOT NULL,
    first_ts timestamptz NOT NULL,
    last_ts timestamptz NOT NULL,
    last_value numeric NOT NULL,
    metadata jsonb
);
CREATE INDEX IF NOT EXISTS tsapi_sensors_metadata_idx ON tsapi_sensors USING gin (metadata jsonb_path_ops);

-- Recompute, in this transaction's snapshot, every bucket that is due: those between
-- `materialized` and `published`, and those the log names. Finer widths are done first, and a
-- coarser width is summed from the finest one that divides it.
CREATE OR REPLACE FUNCTION tsapi_materialize_rollups() RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    origin constant timestamptz := '0001-01-01 00:00:00+00';
    logged tstzmultirange;
    state record;
    width interval;
    source_width integer;
    due tstzrange;
    lo timestamptz;
    hi timestamptz;
    written integer := 0;
    n integer;
    changed uuid[] := '{}';
BEGIN
    WITH taken AS (DELETE FROM tsapi_rollup_log RETURNING tsapi_rollup_log.lo, tsapi_rollup_log.hi)
    SELECT coalesce(range_agg(tstzrange(taken.lo, taken.hi, '[]')), '{}') INTO logged FROM taken;
    FOR state IN SELECT * FROM tsapi_rollup_state ORDER BY width_s LOOP
        width := make_interval(secs => state.width_s);
        FOR due IN
            SELECT unnest(
                (logged * tstzmultirange(tstzrange(origin, state.published)))
                + tstzmultirange(tstzrange(state.materialized, state.published)))
        LOOP
            lo := date_bin(width, lower(due), origin);
            -- The last instant in the range, whether its upper bound is inclusive (logged) or not.
            hi := upper(due) - CASE WHEN upper_inc(due) THEN interval '0' ELSE interval '1 microsecond' END;
            hi := least(date_bin(width, hi, origin) + width, state.published);
            CONTINUE WHEN lo >= hi;
            IF source_width IS NULL THEN
                -- The finest width: its rows also keep tsapi_sensors up to date.
                WITH gone AS (
                    DELETE FROM tsapi_rollup
                    WHERE width_s = state.width_s AND bucket >= lo AND bucket < hi
                    RETURNING sensor, count
                )
                UPDATE tsapi_sensors s SET count = s.count - g.count
                FROM (SELECT sensor, sum(count) AS count FROM gone GROUP BY sensor) AS g
                WHERE s.sensor = g.sensor;
                WITH made AS (
                    INSERT INTO tsapi_rollup
                    SELECT state.width_s, sensor, date_bin(width, ts, origin), count(*), sum(value),
                           min(value), max(value), min(ts),
                           (array_agg(value ORDER BY ts, value))[1], max(ts),
                           (array_agg(value ORDER BY ts DESC, value DESC))[1]
                    FROM readings
                    WHERE ts >= lo AND ts < hi AND sensor IS NOT NULL
                    GROUP BY sensor, date_bin(width, ts, origin)
                    RETURNING sensor, count, first_ts, last_ts, last_value
                ), upserted AS (
                    INSERT INTO tsapi_sensors (sensor, count, first_ts, last_ts, last_value)
                    SELECT sensor, sum(count), min(first_ts), max(last_ts),
                           (array_agg(last_value ORDER BY last_ts DESC, last_value DESC))[1]
                    FROM made GROUP BY sensor
                    ON CONFLICT (sensor) DO UPDATE SET
                        count = tsapi_sensors.count + excluded.count,
                        first_ts = least(tsapi_sensors.first_ts, excluded.first_ts),
                        last_ts = greatest(tsapi_sensors.last_ts, excluded.last_ts),
                        last_value = CASE
                            WHEN (excluded.last_ts, excluded.last_value)
                                 > (tsapi_sensors.last_ts, tsapi_sensors.last_value)
                            THEN excluded.last_value ELSE tsapi_sensors.last_value END
                    RETURNING sensor
                )
                SELECT changed || coalesce(array_agg(sensor), '{}') INTO changed FROM upserted;
            ELSE
                DELETE FROM tsapi_rollup
                WHERE width_s = state.width_s AND bucket >= lo AND bucket < hi;
            END IF;
            IF source_width IS NOT NULL AND state.width_s % source_width <> 0 THEN
                INSERT INTO tsapi_rollup
                SELECT state.width_s, sensor, date_bin(width, ts, origin), count(*), sum(value),
                       min(value), max(value), min(ts), (array_agg(value ORDER BY ts, value))[1],
                       max(ts), (array_agg(value ORDER BY ts DESC, value DESC))[1]
                FROM readings
                WHERE ts >= lo AND ts < hi AND sensor IS NOT NULL
                GROUP BY sensor, date_bin(width, ts, origin);
            ELSIF source_width IS NOT NULL THEN
                INSERT INTO tsapi_rollup
                SELECT state.width_s, sensor, date_bin(width, bucket, origin), sum(count), sum(sum),
                       min(min), max(max), min(first_ts),
                       (array_agg(first_value ORDER BY first_ts, first_value))[1],
                       max(last_ts),
                       (array_agg(last_value ORDER BY last_ts DESC, last_value DESC))[1]
                FROM tsapi_rollup
                WHERE width_s = source_width AND bucket >= lo AND bucket < hi
                GROUP BY sensor, date_bin(width, bucket, origin);
            END IF;
            GET DIAGNOSTICS n = ROW_COUNT;
            written := written + n;
            DELETE FROM tsapi_rollup_all
            WHERE width_s = state.width_s AND bucket >= lo AND bucket < hi;
            INSERT INTO tsapi_rollup_all
            SELECT state.width_s, bucket, sum(count), sum(sum), min(min), max(max), min(first_ts),
                   (array_agg(first_value ORDER BY first_ts, first_value))[1], max(last_ts),
                   (array_agg(last_value ORDER BY last_ts DESC, last_value DESC))[1]
            FROM tsapi_rollup
            WHERE width_s = state.width_s AND bucket >= lo AND bucket < hi
            GROUP BY bucket;
        END LOOP;
        UPDATE tsapi_rollup_state SET materialized = published WHERE width_s = state.width_s;
        source_width := state.width_s;
    END LOOP;
    -- The metadata of each changed sensor's last reading (of those with its last value).
    UPDATE tsapi_sensors s SET metadata = (
        SELECT r.metadata FROM readings r
        WHERE r.sensor = s.sensor AND r.ts = s.last_ts AND r.value = s.last_value
        ORDER BY r.metadata::text LIMIT 1)
    WHERE s.sensor = ANY(changed);
    RETURN written;
END
$$;
