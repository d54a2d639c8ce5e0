//! The schema: versioned migrations, applied once each in order under an
//! advisory lock, so replicas starting together do not race.

use super::*;

/// Versioned schema migrations, applied in order once each (recorded in
/// `tv_migrations`) under an advisory lock, so replicas starting together
/// do not race. Never edit a released entry: append a new one.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE tv_meta (name text PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE tv_subjects (subject bytea PRIMARY KEY, wrapped bytea NOT NULL);
     CREATE TABLE tv_tokens (
         token text PRIMARY KEY,
         subject bytea NOT NULL,
         record bytea NOT NULL,
         expires_at bigint);
     CREATE INDEX tv_tokens_by_subject ON tv_tokens (subject, token);
     CREATE TABLE tv_index (
         index_key bytea PRIMARY KEY,
         token text NOT NULL,
         expires_at bigint);
     CREATE TABLE tv_tombstones (hash bytea PRIMARY KEY, erased_at bigint NOT NULL);
     CREATE TABLE tv_audit (
         replica text NOT NULL,
         seq bigint NOT NULL,
         record bytea NOT NULL,
         PRIMARY KEY (replica, seq));",
    ),
    (
        2,
        "CREATE TABLE tv_purge_pending (
             erased_at bigint NOT NULL,
             subject bytea NOT NULL,
             PRIMARY KEY (erased_at, subject));",
    ),
];

/// An arbitrary constant: the advisory lock that serialises migrations.
pub(super) const MIGRATION_LOCK: i64 = 0x746f_6b65_6e76;

/// Applies the migrations not yet recorded, one transaction each.
pub(super) async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(engine)?;
    // The lock first, the migrations table under it: replicas starting
    // together then never race on creating it (outside the lock, the loser
    // of that race failed now and then with a catalog error).
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(engine)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tv_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(engine)?;
    let applied: HashSet<i32> = tx
        .query("SELECT version FROM tv_migrations", &[])
        .await
        .map_err(engine)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(engine)?;
        tx.execute(
            "INSERT INTO tv_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(engine)?;
        tracing::info!(version, "postgres schema migration applied");
    }
    tx.commit().await.map_err(engine)
}
