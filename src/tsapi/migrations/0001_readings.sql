-- The tutorial's readings table. A table the tutorial already made is adopted as it is, gaining only
-- what is missing. Otherwise it becomes a hypertable where TimescaleDB is preloaded, or a table
-- natively range-partitioned on ts whose partitions tsapi creates as rows arrive.
DO $$
DECLARE
    width interval := current_setting('tsapi.partition_interval')::interval;
    -- The preloaded TimescaleDB loader defines timescaledb.disable_load in every session. Unlike
    -- shared_preload_libraries, which only superusers may read, any role can see it.
    timescale boolean := EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')
        OR (EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb')
            AND current_setting('timescaledb.disable_load', true) IS NOT NULL);
BEGIN
    IF to_regclass('readings') IS NOT NULL THEN
        RETURN;
    END IF;
    IF timescale THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        CREATE TABLE readings (
            ts timestamptz NOT NULL DEFAULT now(),
            sensor uuid NOT NULL,
            metadata jsonb,
            value numeric NOT NULL
        );
        PERFORM create_hypertable('readings', 'ts', chunk_time_interval => width);
    ELSE
        CREATE TABLE readings (
            ts timestamptz NOT NULL DEFAULT now(),
            sensor uuid NOT NULL,
            metadata jsonb,
            value numeric NOT NULL
        ) PARTITION BY RANGE (ts);
    END IF;
END
$$;

ALTER TABLE readings ADD COLUMN IF NOT EXISTS sensor uuid;
ALTER TABLE readings ADD COLUMN IF NOT EXISTS metadata jsonb;

DO $$
DECLARE
    wrong text;
BEGIN
    SELECT string_agg(CASE WHEN c.data_type IS NULL THEN format('column %s is missing', name)
                           ELSE format('column %s is %s, not %s', name, c.data_type, expected)
                      END, '; ')
    INTO wrong
    FROM (VALUES ('ts', 'timestamp with time zone'), ('sensor', 'uuid'), ('metadata', 'jsonb'),
                 ('value', 'numeric')) AS want(name, expected)
    LEFT JOIN information_schema.columns c
        ON c.table_schema = current_schema() AND c.table_name = 'readings' AND c.column_name = name
    WHERE c.data_type IS DISTINCT FROM expected;
    IF wrong IS NOT NULL THEN
        RAISE EXCEPTION 'the existing readings table cannot be adopted: %', wrong
            USING HINT = 'Rename that table, or point tsapi at another database.';
    END IF;
END
$$;

-- "One sensor over a time range" and "newest first", each served by an index in every partition.
CREATE INDEX IF NOT EXISTS readings_sensor_ts_idx ON readings (sensor, ts DESC);
CREATE INDEX IF NOT EXISTS readings_ts_idx ON readings (ts DESC);
