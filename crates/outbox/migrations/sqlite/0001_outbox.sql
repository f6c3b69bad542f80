-- Outbox rows. A claimed row's available_at is pushed to its lease expiry,
-- so "claimable" is one indexed condition: delivered_at IS NULL AND available_at <= now.
CREATE TABLE outbox_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            BLOB NOT NULL UNIQUE,
    exchange      TEXT NOT NULL,
    routing_key   TEXT NOT NULL,
    partition_key TEXT,
    headers       TEXT NOT NULL,
    payload       BLOB NOT NULL,
    content_type  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    available_at  INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_token   INTEGER,
    delivered_at  INTEGER,
    last_error    TEXT
);
CREATE INDEX outbox_messages_claimable ON outbox_messages (available_at, seq) WHERE delivered_at IS NULL;
CREATE INDEX outbox_messages_partition ON outbox_messages (partition_key, seq)
    WHERE delivered_at IS NULL AND partition_key IS NOT NULL;
CREATE INDEX outbox_messages_delivered ON outbox_messages (delivered_at) WHERE delivered_at IS NOT NULL;

CREATE TABLE outbox_dead_letters (
    dead_seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id            BLOB NOT NULL UNIQUE,
    exchange      TEXT NOT NULL,
    routing_key   TEXT NOT NULL,
    partition_key TEXT,
    headers       TEXT NOT NULL,
    payload       BLOB NOT NULL,
    content_type  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    attempts      INTEGER NOT NULL,
    last_error    TEXT NOT NULL,
    dead_at       INTEGER NOT NULL
);

-- Consumer-side deduplication.
CREATE TABLE inbox_messages (
    consumer    TEXT NOT NULL,
    message_id  BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_messages_received ON inbox_messages (received_at);
