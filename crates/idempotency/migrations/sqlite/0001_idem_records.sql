-- Idempotency records: one row per (tenant, principal, operation, client key).
CREATE TABLE IF NOT EXISTS idem_records (
    tenant      TEXT    NOT NULL,
    principal   TEXT    NOT NULL,
    operation   TEXT    NOT NULL,
    client_key  TEXT    NOT NULL,
    fingerprint BLOB   NOT NULL,
    -- Fencing token of the current (or last) holder.
    lease_token INTEGER NOT NULL,
    -- Milliseconds since the Unix epoch; the holder's lease runs out then.
    lease_until INTEGER NOT NULL,
    -- Last recovery point recorded by a holder.
    phase       TEXT,
    phase_state BLOB,
    completed   INTEGER NOT NULL DEFAULT 0,
    -- The stored response, encoded.
    response    BLOB,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, principal, operation, client_key)
);

CREATE INDEX IF NOT EXISTS idem_records_expires_at ON idem_records (expires_at);
