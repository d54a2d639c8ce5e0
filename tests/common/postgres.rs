//! The PostgreSQL server of the shared-store tests: tests/setup-machine.sh
//! starts one on 127.0.0.1:55432; `TOKENVAULT_TEST_PG_URL` points
//! elsewhere. Each test gets a fresh database. An unreachable server fails
//! the test with a message that says how to start one.

/// The default of `TOKENVAULT_TEST_PG_URL` (tests/setup-machine.sh).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:55432/postgres";

/// Creates a fresh database on the test server and returns its URL.
pub async fn fresh_database() -> String {
    let admin = std::env::var("TOKENVAULT_TEST_PG_URL").unwrap_or(DEFAULT_URL.into());
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin} ({e}): run tests/setup-machine.sh, or set TOKENVAULT_TEST_PG_URL"
            )
        });
    tokio::spawn(connection);
    let name = format!("tv_it_{}", hex::encode(rand::random::<[u8; 8]>()));
    // And the erasure ledger's database of its own (see [`replica_config`]).
    for db in [name.clone(), format!("{name}_ledger")] {
        client
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create database");
    }
    let config: tokio_postgres::Config = admin.parse().expect("url");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    format!("postgres://{user}@{host}:{port}/{name}")
}

/// The config of one replica on `url`, sharing the KEK file `kek`; the
/// erasure ledger is in the database `<name>_ledger` that
/// [`fresh_database`] made beside it.
pub fn replica_config(url: &str, kek: &std::path::Path, replica: &str) -> String {
    replica_config_with_kek(url, &local_kek_toml(kek), replica)
}

/// The `[kek]` section of the local provider with its key file `kek`.
pub fn local_kek_toml(kek: &std::path::Path) -> String {
    format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n",
        kek.display()
    )
}

/// [`replica_config`] with the `[kek]` section given as TOML.
pub fn replica_config_with_kek(url: &str, kek_toml: &str, replica: &str) -> String {
    format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\nreplica = \"{replica}\"\npool_size = 8\n[erasure.postgres]\nurl = \"{}\"\n{kek_toml}{}",
        ledger_url(url),
        super::admin_principal_toml()
    )
}

/// The URL of the erasure ledger's database beside the one at `url`.
pub fn ledger_url(url: &str) -> String {
    format!("{url}_ledger")
}

/// `pg_dump` of the database at `url` into `file` (custom format).
pub fn pg_dump(url: &str, file: &std::path::Path) {
    let output = std::process::Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(file)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run pg_dump ({e}): install the PostgreSQL client"));
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Drops the database at `url`, creates it again under the same name and
/// restores `dump` (from [`pg_dump`]) into it: a restore from backup.
pub async fn drop_and_restore(url: &str, dump: &std::path::Path) {
    let config: tokio_postgres::Config = url.parse().expect("url");
    let name = config.get_dbname().expect("a database name").to_string();
    let admin = std::env::var("TOKENVAULT_TEST_PG_URL").unwrap_or(DEFAULT_URL.into());
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(connection);
    // One statement a call: neither may run inside a transaction block.
    for sql in [
        format!("DROP DATABASE {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        client
            .batch_execute(&sql)
            .await
            .expect("drop and create the database");
    }
    let output = std::process::Command::new("pg_restore")
        .args(["--exit-on-error", "--dbname"])
        .arg(url)
        .arg(dump)
        .output()
        .unwrap_or_else(|e| panic!("cannot run pg_restore ({e}): install the PostgreSQL client"));
    assert!(
        output.status.success(),
        "pg_restore failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The raw key rows of the store at `url` (`tv_subjects.wrapped`), as a
/// dump, a base backup or a dead tuple holds them.
pub async fn key_rows(url: &str) -> Vec<tokenvault::kek::WrappedKey> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    let rows = client
        .query("SELECT wrapped FROM tv_subjects", &[])
        .await
        .expect("key rows");
    rows.iter()
        .map(|row| {
            tokenvault::kek::WrappedKey::decode(row.get::<_, &[u8]>(0)).expect("a wrapped key")
        })
        .collect()
}
