//! The SQL of the PostgreSQL store: the table's name, the migration, and
//! one statement per operation, each a single round trip that compares and
//! writes in one atomic step.
//!
//! Every time is the database's (`now()`), never the application's, so that
//! processes whose clocks differ still agree on what has expired. In one
//! statement outside a transaction `now()` is the statement's start; inside
//! a transaction ([`complete_on`](super::PostgresStore::complete_on)) it is
//! the transaction's start (see there).
//!
//! Parameters common to the statements: `$1` scope (text), `$2` digest
//! (bytea, 32 bytes).

use std::fmt;

/// The migration, as in the repository. `PostgresStore::migrate` runs this
/// very text (with the configured table's name), so the two cannot drift.
pub(super) const MIGRATION: &str =
    include_str!("../../../migrations/postgres/0001_idempotency_records.sql");

/// The name the migration file uses, replaced by the configured one.
const DEFAULT_NAME: &str = "idempotency_records";

/// The longest table name accepted (schema, dot and table): the
/// notification channel `<name>_changed` must fit PostgreSQL's 63 bytes.
const MAX_NAME: usize = 55;
/// The longest table part: the index `<table>_expires_at` must fit 63 bytes.
const MAX_PART: usize = 52;

/// Longest expiry written: 100 years, as the Redis store. `Duration::MAX`
/// ("keep it forever") then stays in range of `timestamptz` and `interval`.
pub(super) const MAX_EXPIRY_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// A validated table name: `[schema.]table`, each part lowercase ASCII
/// letters, digits and `_`, not starting with a digit. Lowercase only, so
/// that the name means the same quoted (as the store writes it) or unquoted
/// (as a person types it in `psql`).
#[derive(Clone, PartialEq, Eq)]
pub(super) struct TableName {
    schema: Option<String>,
    table: String,
}

impl TableName {
    pub(super) fn parse(name: &str) -> Result<Self, String> {
        if name.len() > MAX_NAME {
            return Err(format!("longer than {MAX_NAME} bytes"));
        }
        let part = |p: &str| -> Result<String, String> {
            let mut chars = p.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
            if !first_ok
                || !p
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(format!(
                    "{p:?} is not a lowercase SQL identifier ([a-z_][a-z0-9_]*)"
                ));
            }
            Ok(p.to_owned())
        };
        let (schema, table) = match name.split_once('.') {
            Some((s, t)) => (Some(part(s)?), part(t)?),
            None => (None, part(name)?),
        };
        if table.len() > MAX_PART {
            return Err(format!("table part longer than {MAX_PART} bytes"));
        }
        Ok(TableName { schema, table })
    }

    /// The name as SQL: `"schema"."table"` or `"table"`.
    fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".\"{}\"", self.table),
            None => format!("\"{}\"", self.table),
        }
    }

    /// The notification channel: `<name>_changed`.
    pub(super) fn channel(&self) -> String {
        format!("{self}_changed")
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// The migration for `name`: the file's text with the configured names,
/// after a transaction-scoped advisory lock (two processes migrating at
/// once would otherwise race in `CREATE TABLE IF NOT EXISTS`) and a longer
/// statement timeout than the store's (DDL waits for running writes).
pub(super) fn migration(name: &TableName, timeout_ms: u64) -> String {
    // In two steps through a placeholder: the index name contains the
    // default table name, which must not be replaced again inside it.
    const INDEX: &str = "\u{0}index\u{0}";
    let index = format!("\"{}_expires_at\"", name.table);
    let body = MIGRATION
        .replace(&format!("{DEFAULT_NAME}_expires_at"), INDEX)
        .replace(DEFAULT_NAME, &name.quoted())
        .replace(INDEX, &index);
    // A multi-statement simple query is one transaction: the lock and the
    // setting last until its end.
    format!(
        "SELECT pg_advisory_xact_lock(7655, hashtext('{name}'));\n\
         SET LOCAL statement_timeout = {timeout_ms};\n{body}"
    )
}

/// The statements of one table.
pub(super) struct Statements {
    pub(super) claim: String,
    pub(super) renew: String,
    pub(super) complete: String,
    pub(super) release: String,
    pub(super) get: String,
    pub(super) claim_held: String,
    pub(super) delete: String,
    pub(super) watch: String,
    pub(super) sweep: String,
}

/// `$n` milliseconds from now.
fn from_now(param: &str) -> String {
    format!("now() + {param}::bigint * interval '1 millisecond'")
}

impl Statements {
    pub(super) fn new(name: &TableName) -> Self {
        let t = name.quoted();
        let live_for = |p: &str| from_now(p);
        Statements {
            // $3 owner, $4 record (the claim), $5 lease (ms).
            //
            // Takes the row only where none is live. Without a live row the
            // CTE inserts (or takes over the expired row) and answers
            // `acquired`; with one, the SELECT returns it. One catch, in READ
            // COMMITTED: the whole statement reads one snapshot, taken
            // before a competing claim committed; ON CONFLICT then sees that
            // claim (it checks the newest row) but the SELECT does not, and
            // no row comes back. The store then runs the statement again,
            // with a new snapshot.
            //
            // The INSERT is skipped when the snapshot already shows a live
            // row (a replay, or a duplicate of a running claim): ON CONFLICT
            // DO UPDATE locks the conflicting row even when its WHERE fails,
            // which made every replay a row lock (a write) and made
            // concurrent replays of one key queue behind each other.
            claim: format!(
                "WITH claimed AS (
                   INSERT INTO {t} AS r (scope, digest, owner, record, expires_at)
                   SELECT $1, $2, $3, $4, {lease}
                    WHERE NOT EXISTS (
                      SELECT 1 FROM {t} l
                       WHERE l.scope = $1 AND l.digest = $2 AND l.expires_at > now())
                   ON CONFLICT (scope, digest) DO UPDATE
                     SET owner = EXCLUDED.owner, record = EXCLUDED.record,
                         expires_at = EXCLUDED.expires_at
                     WHERE r.expires_at <= now()
                   RETURNING 1
                 )
                 SELECT true AS acquired, NULL::bytea AS record FROM claimed
                 UNION ALL
                 SELECT false, r.record FROM {t} r
                  WHERE r.scope = $1 AND r.digest = $2 AND r.expires_at > now()
                    AND NOT EXISTS (SELECT 1 FROM claimed)",
                lease = live_for("$5"),
            ),
            // $3 owner, $4 lease (ms). Only the owner's live claim.
            renew: format!(
                "UPDATE {t} SET expires_at = {lease}
                  WHERE scope = $1 AND digest = $2 AND owner = $3 AND expires_at > now()",
                lease = live_for("$4"),
            ),
            // $3 owner, $4 record (completed), $5 ttl (ms), $6 channel, $7
            // payload (hex digest). Writes over the owner's claim, or where
            // no live row is (the lease ran out and nobody took over); never
            // over another owner's claim or a completed record (`owner` is
            // NULL then). Notifies in the same statement, only when a
            // duplicate waits: a NOTIFY per completion would wake every
            // process's listener once per request.
            complete: format!(
                "WITH done AS (
                   INSERT INTO {t} AS r (scope, digest, owner, record, expires_at)
                   VALUES ($1, $2, NULL, $4, {ttl})
                   ON CONFLICT (scope, digest) DO UPDATE
                     SET owner = NULL, record = EXCLUDED.record,
                         expires_at = EXCLUDED.expires_at
                     WHERE r.owner = $3 OR r.expires_at <= now()
                   RETURNING r.watched_until
                 ), notified AS (
                   SELECT pg_notify($6, $7) FROM done WHERE watched_until > now()
                 )
                 SELECT (SELECT count(*) FROM done) AS written,
                        (SELECT count(*) FROM notified) AS notified",
                ttl = live_for("$5"),
            ),
            // $3 owner, $4 channel, $5 payload. The claim becomes an expired
            // row rather than no row, so that a wake-up mark on it survives
            // for the claim that comes next; the sweeper deletes it later.
            release: format!(
                "WITH released AS (
                   UPDATE {t} SET owner = NULL, record = NULL, expires_at = '-infinity'
                    WHERE scope = $1 AND digest = $2 AND owner = $3 AND expires_at > now()
                   RETURNING watched_until
                 ), notified AS (
                   SELECT pg_notify($4, $5) FROM released WHERE watched_until > now()
                 )
                 SELECT (SELECT count(*) FROM released) AS released,
                        (SELECT count(*) FROM notified) AS notified"
            ),
            get: format!(
                "SELECT record FROM {t}
                  WHERE scope = $1 AND digest = $2 AND expires_at > now()"
            ),
            // $3 lock id. The in-transaction claim (`held.rs`): the live
            // record, or, only where there is none, the key's
            // transaction-scoped advisory lock, tried.
            claim_held: format!(
                "SELECT r.record,
                        CASE WHEN r.record IS NULL THEN pg_try_advisory_xact_lock($3) END AS locked
                   FROM (SELECT (SELECT record FROM {t}
                                  WHERE scope = $1 AND digest = $2 AND expires_at > now())
                                AS record) r"
            ),
            // $3 channel, $4 payload. As release, for any live record.
            delete: format!(
                "WITH deleted AS (
                   UPDATE {t} SET owner = NULL, record = NULL, expires_at = '-infinity'
                    WHERE scope = $1 AND digest = $2 AND expires_at > now()
                   RETURNING watched_until
                 ), notified AS (
                   SELECT pg_notify($3, $4) FROM deleted WHERE watched_until > now()
                 )
                 SELECT (SELECT count(*) FROM deleted) AS deleted,
                        (SELECT count(*) FROM notified) AS notified"
            ),
            // $3 how long (ms). Creates an expired row carrying only the mark
            // if there is none (a claim takes it over and keeps the mark);
            // never shortens another waiter's mark.
            watch: format!(
                "INSERT INTO {t} AS r (scope, digest, owner, record, expires_at, watched_until)
                 VALUES ($1, $2, NULL, NULL, '-infinity', {until})
                 ON CONFLICT (scope, digest) DO UPDATE
                   SET watched_until = EXCLUDED.watched_until
                   WHERE r.watched_until IS NULL OR r.watched_until < EXCLUDED.watched_until",
                until = live_for("$3"),
            ),
            // $1 batch size. The outer WHERE repeats the condition on
            // purpose: a row that a claim took over between the inner SELECT
            // and the DELETE is rechecked in its new version (PostgreSQL
            // does not recheck the ctid), which is live and must stay.
            // SKIP LOCKED: never wait for rows a claim is writing.
            sweep: format!(
                "DELETE FROM {t}
                  WHERE ctid = ANY(ARRAY(
                          SELECT ctid FROM {t}
                           WHERE expires_at < now()
                             AND (watched_until IS NULL OR watched_until < now())
                           LIMIT $1 FOR UPDATE SKIP LOCKED))
                    AND expires_at < now()
                    AND (watched_until IS NULL OR watched_until < now())"
            ),
        }
    }
}

/// Statements written out with their values, for the simple-query protocol,
/// which sends several statements in one flight but takes no parameters
/// (the waiting duplicate's flight, see `held.rs`). Bytes are written as
/// hex and text as escape strings, so no value is ever read as SQL.
impl TableName {
    /// `SELECT record` of `id`'s live record.
    pub(super) fn read_record(&self, id: &crate::RecordId) -> String {
        format!(
            "SELECT record FROM {} WHERE scope = {} AND digest = {} AND expires_at > now()",
            self.quoted(),
            text_literal(id.scope()),
            bytea_literal(id.digest())
        )
    }
}

/// `decode('…', 'hex')`: bytes as a literal.
fn bytea_literal(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2 + 20);
    s.push_str("decode('");
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s.push_str("', 'hex')");
    s
}

/// Text as a literal: an escape string (`E'…'`), read the same whatever
/// `standard_conforming_strings` says. A literal, unlike an expression such
/// as `convert_from(…)`, takes the collation of the column it is compared
/// with, so the primary key serves `scope = …`; with `convert_from` the
/// planner could not use it, and the read scanned the whole table (1.2 ms
/// at 6,000 records, and growing with them).
pub(super) fn text_literal(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 3);
    s.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\'' => s.push_str("''"),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

/// A duration as the milliseconds the statements take, at least 1 and at
/// most [`MAX_EXPIRY_MS`].
pub(super) fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis())
        .unwrap_or(i64::MAX)
        .clamp(1, MAX_EXPIRY_MS)
}
