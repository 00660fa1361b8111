-- The table of idempotent's PostgreSQL store. `PostgresStore::migrate()`
-- runs this same file (compiled in), with the configured table name in place
-- of idempotency_records; run it yourself with your migration tool instead
-- if you prefer. Running it again changes nothing.
--
-- One row per record identity (scope, SHA-256 of principal and key; the raw
-- key is never stored). A row whose expires_at has passed is no record at
-- all: every operation ignores it, a claim takes it over, and the store's
-- sweeper deletes it.
CREATE TABLE IF NOT EXISTS idempotency_records (
    -- The handler's scope.
    scope         text        NOT NULL,
    -- SHA-256 of the principal and the key (`RecordId::digest`, 32 bytes).
    digest        bytea       NOT NULL,
    -- The claim's owner token (16 bytes) while in progress, so that renew,
    -- complete and release compare it in the same statement as the write;
    -- NULL once completed.
    owner         bytea,
    -- The record's versioned binary encoding (`Record::encode`); NULL on a
    -- row that only marks a wake-up (below) or a released claim.
    record        bytea,
    -- When the claim's lease or the completed record's TTL runs out, by the
    -- database's clock.
    expires_at    timestamptz NOT NULL,
    -- Until when a duplicate in some process waits for this record: its
    -- completion, release or deletion is then sent with pg_notify.
    watched_until timestamptz,
    PRIMARY KEY (scope, digest)
);

-- For the sweeper, which deletes expired rows in batches.
CREATE INDEX IF NOT EXISTS idempotency_records_expires_at
    ON idempotency_records (expires_at);
