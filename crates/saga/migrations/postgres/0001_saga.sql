CREATE TABLE IF NOT EXISTS saga_instances (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    idem_key TEXT NOT NULL,
    status TEXT NOT NULL,
    phase TEXT NOT NULL,
    step_cursor BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    in_flight BOOLEAN NOT NULL,
    recovered BOOLEAN NOT NULL DEFAULT FALSE,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    state TEXT NOT NULL,
    wake_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    wait_events TEXT,
    event_name TEXT,
    event_payload TEXT,
    resolution TEXT,
    reason TEXT,
    resource TEXT,
    resource_held BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (name, idem_key)
) WITH (fillfactor = 70);

CREATE INDEX IF NOT EXISTS saga_instances_due
    ON saga_instances (wake_at) WHERE status IN ('running', 'waiting') AND NOT paused;
CREATE INDEX IF NOT EXISTS saga_instances_active
    ON saga_instances (status, seq) WHERE status IN ('running', 'waiting', 'parked');
CREATE INDEX IF NOT EXISTS saga_instances_resource
    ON saga_instances (resource, seq) WHERE resource IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS saga_instances_resource_holder
    ON saga_instances (resource) WHERE resource_held;

CREATE TABLE IF NOT EXISTS saga_step_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY,
    saga_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    epoch BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS saga_step_log_saga ON saga_step_log (saga_id, id);
