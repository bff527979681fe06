-- API keys. Only a SHA-256 digest of each key's secret is kept: the key itself is shown once, by
-- `tsapi keys create`. A revoked key stays listed (revoked_at) rather than being deleted, so that
-- who had access, and until when, remains known; and so that once a key has existed, auth = "auto"
-- keeps requiring keys even after the last one is revoked.
CREATE TABLE IF NOT EXISTS tsapi_api_keys (
    id text PRIMARY KEY,
    name text,
    scope text NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    sensors uuid[],  -- NULL: every sensor
    secret_sha256 bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
