-- Print jobs for the restaurants' agents. The id is the sale key
-- (`{payment}/receipt`, `{refund}/reversal`), so enqueueing twice is a no-op
-- and the printer sees one key per sale.
CREATE TABLE app_print_jobs (
    id             TEXT PRIMARY KEY,
    restaurant_id  TEXT NOT NULL,
    printer_id     TEXT NOT NULL,
    -- The saga that waits for the outcome.
    saga_id        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    payload        TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'queued',
    outcome        TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX app_print_jobs_queue ON app_print_jobs (restaurant_id, status, created_at);
