CREATE TABLE IF NOT EXISTS saga_instances (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    idem_key TEXT NOT NULL,
    status TEXT NOT NULL,
    phase TEXT NOT NULL,
    step_cursor INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    in_flight INTEGER NOT NULL,
    recovered INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    wake_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    wait_events TEXT,
    event_name TEXT,
    event_payload TEXT,
    resolution TEXT,
    reason TEXT,
    resource TEXT,
    resource_held INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (name, idem_key)
);

CREATE INDEX IF NOT EXISTS saga_instances_due
    ON saga_instances (wake_at) WHERE status IN ('running', 'waiting') AND NOT paused;
CREATE INDEX IF NOT EXISTS saga_instances_active
    ON saga_instances (status, seq) WHERE status IN ('running', 'waiting', 'parked');
CREATE INDEX IF NOT EXISTS saga_instances_resource
    ON saga_instances (resource, seq) WHERE resource IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS saga_instances_resource_holder
    ON saga_instances (resource) WHERE resource_held;

CREATE TABLE IF NOT EXISTS saga_step_log (
    id INTEGER PRIMARY KEY,
    saga_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    epoch INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS saga_step_log_saga ON saga_step_log (saga_id, id);
