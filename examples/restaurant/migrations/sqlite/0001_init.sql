-- The reference server's own tables (prefix app_). The crates' tables live
-- beside them in the same database with their own prefixes and migrations.

CREATE TABLE app_restaurants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- API keys are stored as SHA-256 of the key: keys are 32 random bytes, so a
-- fast hash is enough (no password stretching needed) and lookups stay O(1).
CREATE TABLE app_api_keys (
    key_hash       TEXT PRIMARY KEY,
    restaurant_id  TEXT REFERENCES app_restaurants(id),
    role           TEXT NOT NULL CHECK (role IN ('restaurant', 'operator')),
    label          TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE app_printers (
    id             TEXT PRIMARY KEY,
    restaurant_id  TEXT NOT NULL REFERENCES app_restaurants(id),
    address        TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT '{}',
    updated_at     BIGINT NOT NULL
);

CREATE TABLE app_payments (
    id               TEXT PRIMARY KEY,
    restaurant_id    TEXT NOT NULL REFERENCES app_restaurants(id),
    idempotency_key  TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    order_ref        TEXT NOT NULL,
    amount           BIGINT NOT NULL CHECK (amount > 0),
    currency         TEXT NOT NULL,
    method           TEXT NOT NULL,
    printer_id       TEXT NOT NULL REFERENCES app_printers(id),
    lines            TEXT NOT NULL,
    status           TEXT NOT NULL,
    reason           TEXT,
    provider_ref     TEXT,
    receipt          TEXT,
    traceparent      TEXT,
    correlation_id   TEXT,
    saga_id          TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (restaurant_id, idempotency_key)
);
CREATE INDEX app_payments_list ON app_payments (restaurant_id, created_at);

CREATE TABLE app_refunds (
    id               TEXT PRIMARY KEY,
    payment_id       TEXT NOT NULL REFERENCES app_payments(id),
    restaurant_id    TEXT NOT NULL REFERENCES app_restaurants(id),
    idempotency_key  TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    amount           BIGINT NOT NULL CHECK (amount > 0),
    reason           TEXT NOT NULL,
    status           TEXT NOT NULL,
    provider_ref     TEXT,
    reversal         TEXT,
    traceparent      TEXT,
    correlation_id   TEXT,
    saga_id          TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (restaurant_id, idempotency_key)
);
CREATE INDEX app_refunds_payment ON app_refunds (payment_id);

-- The events log behind GET /v1/events: ids grow, so a client resumes from
-- the last id it saw.
CREATE TABLE app_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    restaurant_id  TEXT NOT NULL,
    kind           TEXT NOT NULL,
    subject        TEXT NOT NULL,
    data           TEXT NOT NULL,
    at             BIGINT NOT NULL
);
CREATE INDEX app_events_restaurant ON app_events (restaurant_id, id);
CREATE INDEX app_events_subject ON app_events (subject, id);
