-- Idempotency keys: per identity (the API key's id, or '' without auth) and client-chosen key, a
-- digest of the request and the answer it got. A key is written in the same transaction as the
-- readings its request inserted, so a request is either done with its answer recorded, or not
-- done at all: a retry with the same key answers the recorded answer and inserts nothing again.
-- Rows older than idempotency_retention are purged by tsapi.
CREATE TABLE IF NOT EXISTS tsapi_idempotency (
    identity text NOT NULL,
    key text NOT NULL,
    request_sha256 bytea NOT NULL,
    status integer NOT NULL,
    content_type text NOT NULL,
    body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (identity, key)
);
CREATE INDEX IF NOT EXISTS tsapi_idempotency_created_at_idx ON tsapi_idempotency (created_at);
