-- Partitions are made as tables of their own, then attached. CREATE TABLE ... PARTITION OF locks
-- readings against every reader and writer until its transaction ends; ATTACH PARTITION takes a
-- lock that only other schema changes wait for. tsapi makes the partitions a streamed body needs
-- on a connection of their own, committed at once, while the body's transaction, which has
-- already written to readings, goes on: ATTACH does not wait for it, as PARTITION OF would.
-- Attaching creates the partition's indexes from readings' own.
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
    name text;
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
        name := 'readings_p' || to_char(lower_bound AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS');
        EXECUTE format('CREATE TABLE %I (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       name);
        EXECUTE format('ALTER TABLE readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       name, lower_bound, upper_bound);
        lowers := lowers || lower_bound;
        uppers := uppers || upper_bound;
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;
