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
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let config: tokio_postgres::Config = admin.parse().expect("url");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    format!("postgres://{user}@{host}:{port}/{name}")
}

/// The config of one replica on `url`, sharing the KEK file `kek`.
pub fn replica_config(url: &str, kek: &std::path::Path, replica: &str) -> String {
    format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\nreplica = \"{replica}\"\npool_size = 8\n[kek]\nprovider = \"local\"\npath = \"{}\"\n{}",
        kek.display(),
        super::admin_principal_toml()
    )
}
