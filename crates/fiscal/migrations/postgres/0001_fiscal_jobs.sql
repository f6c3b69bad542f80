CREATE TABLE IF NOT EXISTS fiscal_jobs (
    job_id     TEXT PRIMARY KEY,
    printer_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    job        TEXT NOT NULL,
    state      TEXT NOT NULL,
    attempt    BIGINT NOT NULL,
    baseline   TEXT,
    outcome    TEXT,
    doc_no     BIGINT,
    amount     BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS fiscal_jobs_printer_state ON fiscal_jobs (printer_id, state);
