-- The native partitions of readings with their bounds, and a function that creates those missing
-- for given timestamps. Periods are aligned on the Unix epoch (UTC midnight for whole days).
-- Concurrent callers are serialised by an advisory lock, so writers racing into a new period
-- create its partition once. A period overlapping partitions made with another width is clamped
-- to the gap between them.
CREATE OR REPLACE VIEW tsapi_partitions AS
SELECT c.relname AS name, bounds[1]::timestamptz AS lower, bounds[2]::timestamptz AS upper,
       c.reltuples::bigint AS row_estimate, pg_total_relation_size(c.oid) AS bytes
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS bounds
WHERE i.inhparent = to_regclass('readings');

CREATE OR REPLACE FUNCTION tsapi_ensure_partitions(stamps timestamptz[], width interval)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    seconds numeric := extract(epoch FROM width);
    stamp timestamptz;
    lowers timestamptz[];
    uppers timestamptz[];
    lower_bound timestamptz;
    upper_bound timestamptz;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('tsapi_ensure_partitions'));
    SELECT coalesce(array_agg(lower), '{}'), coalesce(array_agg(upper), '{}')
    INTO lowers, uppers
    FROM tsapi_partitions;
    FOR stamp IN SELECT DISTINCT s FROM unnest(stamps) AS s ORDER BY 1 LOOP
        CONTINUE WHEN EXISTS (
            SELECT FROM unnest(lowers, uppers) AS p(lo, up) WHERE lo <= stamp AND stamp < up
        );
        lower_bound := timestamptz 'epoch'
            + make_interval(secs => floor(extract(epoch FROM stamp) / seconds) * seconds);
        upper_bound := lower_bound + width;
        SELECT greatest(lower_bound, max(up)) INTO lower_bound
        FROM unnest(lowers, uppers) AS p(lo, up) WHERE up <= stamp;
        SELECT least(upper_bound, min(lo)) INTO upper_bound
        FROM unnest(lowers, uppers) AS p(lo, up) WHERE lo > stamp;
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
            'readings_p' || to_char(lower_bound AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS'),
            lower_bound, upper_bound);
        lowers := lowers || lower_bound;
        uppers := uppers || upper_bound;
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;
