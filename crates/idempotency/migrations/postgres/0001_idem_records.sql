-- Idempotency records: one row per (tenant, principal, operation, client key).
CREATE TABLE IF NOT EXISTS idem_records (
    tenant      TEXT    NOT NULL,
    principal   TEXT    NOT NULL,
    operation   TEXT    NOT NULL,
    client_key  TEXT    NOT NULL,
    fingerprint BYTEA   NOT NULL,
    -- Fencing token of the current (or last) holder.
    lease_token BIGINT  NOT NULL,
    -- Milliseconds since the Unix epoch; the holder's lease runs out then.
    lease_until BIGINT  NOT NULL,
    -- Last recovery point recorded by a holder.
    phase       TEXT,
    phase_state BYTEA,
    completed   BOOLEAN NOT NULL DEFAULT FALSE,
    -- The stored response, encoded.
    response    BYTEA,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    PRIMARY KEY (tenant, principal, operation, client_key)
);

CREATE INDEX IF NOT EXISTS idem_records_expires_at ON idem_records (expires_at);
