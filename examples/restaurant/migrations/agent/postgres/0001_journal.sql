-- The print agent's fiscal journal: the intent is written before the first
-- byte goes to the printer, the outcome after. An intent without an outcome
-- after a crash is reconciled from the device, never printed blindly again.
-- The outcome is written in the same transaction as the message that
-- reports it (the agent's outbox), so a result waits here until the link to
-- the cloud is back, and is never lost.
CREATE TABLE agent_journal (
    sale_key    TEXT PRIMARY KEY,
    printer_id  TEXT NOT NULL,
    saga_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    intent_at   BIGINT NOT NULL,
    outcome     TEXT,
    outcome_at  BIGINT
);

-- Print jobs received from the cloud, recorded (deduplicated by the inbox)
-- before the message is acknowledged.
CREATE TABLE agent_jobs (
    sale_key     TEXT PRIMARY KEY,
    saga_id      TEXT NOT NULL,
    printer_id   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    done         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX agent_jobs_pending ON agent_jobs (done, received_at);
