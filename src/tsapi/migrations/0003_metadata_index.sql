-- GET /readings?metadata={...} filters with `metadata @> $1`; a GIN index with jsonb_path_ops
-- (smaller and faster than the default operator class, and @> is the only operator tsapi uses)
-- lets PostgreSQL find the matching rows without reading every row. On an existing large table
-- this build blocks writes to readings until it is done.
CREATE INDEX IF NOT EXISTS readings_metadata_idx ON readings USING gin (metadata jsonb_path_ops);
