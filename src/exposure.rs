//! What a config would expose beyond this machine: a plaintext gRPC or
//! HTTP/JSON port,
//! a plaintext connection to Vault / OpenBao (whose transit answers carry
//! data keys) or to PostgreSQL (which carries sealed values, keyed hashes
//! and the audit log), and a key file picked by default beside the data.
//!
//! `serve` runs [`check`] before it opens anything and refuses to start on
//! a refusal; `config check` lists the refusals as problems and the
//! warnings as warnings. A plaintext connection is fine on loopback
//! (127.0.0.0/8, ::1, `localhost`, a Unix socket); off loopback it needs
//! TLS, or the top-level `allow_plaintext_on_non_loopback = true` (for a
//! service mesh whose sidecars terminate mTLS), and then it is a warning
//! logged at every start. `serve --dev` is loopback only, whatever else.
//!
//! This module only reads the config; it opens no file and connects to
//! nothing, and its messages name hosts and addresses, never a password
//! (a PostgreSQL URL is parsed, not shown).

use std::net::IpAddr;

use crate::config::{Config, KekConfig};

/// The name of the setting that lets plaintext off loopback through.
pub const ALLOW_PLAINTEXT: &str = "allow_plaintext_on_non_loopback";

/// What [`check`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Exposure {
    /// Each one stops `serve` and fails `config check`.
    pub refused: Vec<String>,
    /// Plaintext off loopback that the config allows: logged at start.
    pub warnings: Vec<String>,
}

/// The exposure of `config` as `serve` would run it (`dev`: `serve --dev`,
/// after the `--listen` override).
pub fn check(config: &Config, dev: bool) -> Exposure {
    let mut found = Exposure::default();
    let listen = config.listen;
    if dev {
        if !listen.ip().is_loopback() {
            found.refused.push(format!(
                "listen {listen}: serve --dev is loopback only (no TLS, and a full-reveal admin key); use 127.0.0.1 or ::1, or a config with [tls]"
            ));
        }
    } else {
        if matches!(config.kek, KekConfig::Local { path: None }) {
            found.refused.push(
                "kek: the config names no key-encryption key: set [kek] (provider = \"vault\", or \"local\" with a path); <data_dir>/kek.key is the default of serve --dev only"
                    .to_string(),
            );
        }
        if config.tls.is_none() && !listen.ip().is_loopback() {
            found.plaintext(
                config,
                format!("listen {listen}: not a loopback address and no [tls]: the gRPC port would carry API keys and values without TLS; set [tls] cert and key"),
            );
        }
    }
    if let Some(http) = &config.http {
        let listen = http.listen;
        // With [tls] the HTTP port takes the same TLS and client CA.
        if config.tls.is_none() && !listen.ip().is_loopback() {
            found.plaintext(
                config,
                format!("http.listen {listen}: not a loopback address: the HTTP/JSON port would carry API keys and values without TLS"),
            );
        }
    }
    if let KekConfig::Vault { address, .. } = &config.kek {
        if let Some(host) = plaintext_http_host(address) {
            if !is_loopback_host(&host) {
                found.plaintext(
                    config,
                    format!("kek.address: http:// to {host}, not loopback: transit answers carry data keys; use https:// (without TLS they cross the network in the clear)"),
                );
            }
        }
    }
    let store = config.storage.postgres_options().ok().flatten();
    let ledger = match config.ledger_location() {
        Ok(crate::erasure::LedgerLocation::Postgres(options)) => Some(options),
        _ => None,
    };
    for (section, options) in [("storage.postgres", store), ("erasure.postgres", ledger)] {
        for host in options.map(|o| plaintext_hosts(&o)).unwrap_or_default() {
            found.plaintext(
                config,
                format!("{section}: a connection to {host} without TLS (tls = false; sslmode in the URL does not turn it on): set tls = true"),
            );
        }
    }
    found
}

impl Exposure {
    /// A plaintext connection off loopback: refused, or a warning when
    /// the config allows it.
    fn plaintext(&mut self, config: &Config, what: String) {
        if config.allow_plaintext_on_non_loopback {
            self.warnings
                .push(format!("{what} [allowed by {ALLOW_PLAINTEXT}]"));
        } else {
            self.refused.push(format!(
                "{what} (or set {ALLOW_PLAINTEXT} = true behind a mesh that terminates TLS)"
            ));
        }
    }
}

/// Whether a host name or address is this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of an `http://` URL, or None for another scheme or a URL that
/// does not parse (the provider reports that).
fn plaintext_http_host(address: &str) -> Option<String> {
    let url = url::Url::parse(address).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    url.host_str().map(str::to_string)
}

/// The non-loopback hosts a PostgreSQL connection (the store's or the
/// erasure ledger's) would reach without TLS. Unix sockets are local. A
/// URL that cannot be read here (an unset `url_env`, a URL that does not
/// parse) is reported by the config's own checks, not here.
fn plaintext_hosts(options: &crate::store::postgres::PostgresOptions) -> Vec<String> {
    if options.tls {
        return Vec::new();
    }
    let Ok(parsed) = options.url.parse::<tokio_postgres::Config>() else {
        return Vec::new();
    };
    let mut hosts: Vec<String> = parsed
        .get_hostaddrs()
        .iter()
        .filter(|ip| !ip.is_loopback())
        .map(IpAddr::to_string)
        .collect();
    // With hostaddr, the host names are only for TLS and are not dialled.
    if parsed.get_hostaddrs().is_empty() {
        hosts.extend(parsed.get_hosts().iter().filter_map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) if !is_loopback_host(name) => {
                Some(name.clone())
            }
            _ => None,
        }));
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(&format!(
            "{text}\n[kek]\nprovider = \"local\"\npath = \"/k\"\n"
        ))
        .expect("parses")
    }

    fn with_kek(text: &str) -> Config {
        Config::parse(text).expect("parses")
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
            "db.localhost",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "0.0.0.0",
            "10.0.0.1",
            "::",
            "vault",
            "localhost.example.com",
            "128.0.0.1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn a_non_loopback_listen_needs_tls_or_the_allowance() {
        assert_eq!(check(&config(""), false), Exposure::default());
        assert_eq!(
            check(&config("listen = \"[::1]:1\""), false),
            Exposure::default()
        );
        let refused = check(&config("listen = \"0.0.0.0:50051\""), false);
        assert_eq!(refused.refused.len(), 1, "{refused:?}");
        assert!(refused.refused[0].contains("0.0.0.0:50051") && refused.refused[0].contains("TLS"));
        let tls = config("listen = \"0.0.0.0:50051\"\n[tls]\ncert = \"c\"\nkey = \"k\"");
        assert_eq!(check(&tls, false), Exposure::default());
        let allowed = check(
            &config("listen = \"0.0.0.0:50051\"\nallow_plaintext_on_non_loopback = true"),
            false,
        );
        assert!(allowed.refused.is_empty());
        assert_eq!(allowed.warnings.len(), 1);
    }

    #[test]
    fn a_plaintext_http_port_is_refused_off_loopback_and_one_under_tls_is_not() {
        let loopback = config("[http]\nlisten = \"127.0.0.1:8080\"");
        assert_eq!(check(&loopback, false), Exposure::default());
        let open = check(&config("[http]\nlisten = \"0.0.0.0:8080\""), false);
        assert_eq!(open.refused.len(), 1, "{open:?}");
        assert!(
            open.refused[0].starts_with("http.listen 0.0.0.0:8080"),
            "{open:?}"
        );
        let allowed = check(
            &config("allow_plaintext_on_non_loopback = true\n[http]\nlisten = \"0.0.0.0:8080\""),
            false,
        );
        assert!(
            allowed.refused.is_empty() && allowed.warnings.len() == 1,
            "{allowed:?}"
        );
        // With [tls] the HTTP port is served under it: nothing to refuse
        // off loopback either.
        let under_tls = check(
            &config("[tls]\ncert = \"c\"\nkey = \"k\"\n[http]\nlisten = \"0.0.0.0:8080\""),
            false,
        );
        assert!(
            !under_tls
                .refused
                .iter()
                .any(|r| r.starts_with("http.listen")),
            "{under_tls:?}"
        );
    }

    #[test]
    fn dev_is_loopback_only_even_with_the_allowance() {
        let mut dev = Config::dev();
        assert_eq!(check(&dev, true), Exposure::default());
        dev.listen = "0.0.0.0:50051".parse().expect("addr");
        dev.allow_plaintext_on_non_loopback = true;
        let found = check(&dev, true);
        assert!(found.refused[0].contains("loopback only"), "{found:?}");
    }

    #[test]
    fn no_kek_is_refused_outside_dev() {
        let found = check(&with_kek(""), false);
        assert!(found.refused[0].contains("[kek]"), "{found:?}");
        let found = check(&with_kek("[kek]\nprovider = \"local\""), false);
        assert!(found.refused[0].contains("[kek]"), "{found:?}");
        assert_eq!(check(&Config::dev(), true), Exposure::default());
    }

    #[test]
    fn vault_over_http_is_loopback_only() {
        let vault = |address: &str| {
            with_kek(&format!(
                "[kek]\nprovider = \"vault\"\naddress = \"{address}\"\nkey_name = \"k\"\ntoken_env = \"T\""
            ))
        };
        for ok in [
            "https://vault:8200",
            "http://127.0.0.1:8200",
            "http://localhost:8200",
            "http://[::1]:8200",
        ] {
            assert_eq!(check(&vault(ok), false), Exposure::default(), "{ok}");
        }
        let found = check(&vault("http://vault.internal:8200"), false);
        assert!(found.refused[0].contains("vault.internal"), "{found:?}");
    }

    #[test]
    fn postgres_without_tls_is_loopback_only() {
        let pg = |url: &str, tls: bool| {
            config(&format!(
                "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{url}\"\ntls = {tls}"
            ))
        };
        for ok in [
            ("postgres://tv@127.0.0.1:5432/tv", false),
            ("postgres://tv@localhost/tv", false),
            ("host=/run/postgresql dbname=tv", false),
            ("postgres://tv@db.internal/tv", true),
        ] {
            assert_eq!(check(&pg(ok.0, ok.1), false), Exposure::default(), "{ok:?}");
        }
        for (url, host) in [
            (
                "postgres://tv:pw@db.internal:5432/tv?sslmode=require",
                "db.internal",
            ),
            ("host=localhost,10.1.2.3 dbname=tv", "10.1.2.3"),
            ("host=localhost hostaddr=10.9.9.9 dbname=tv", "10.9.9.9"),
        ] {
            let found = check(&pg(url, false), false);
            assert_eq!(found.refused.len(), 1, "{url}: {found:?}");
            assert!(found.refused[0].contains(host), "{found:?}");
            assert!(!found.refused[0].contains("pw@"), "{found:?}");
        }
    }

    #[test]
    fn the_ledgers_database_without_tls_is_loopback_only_too() {
        let pg = |ledger_url: &str, tls: bool| {
            config(&format!(
                "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://tv@127.0.0.1/tv\"\n[erasure.postgres]\nurl = \"{ledger_url}\"\ntls = {tls}"
            ))
        };
        assert_eq!(
            check(&pg("postgres://tv@127.0.0.1/tv_ledger", false), false),
            Exposure::default()
        );
        assert_eq!(
            check(&pg("postgres://tv@ledger.internal/tv_ledger", true), false),
            Exposure::default()
        );
        let found = check(
            &pg("postgres://tv:pw@ledger.internal/tv_ledger", false),
            false,
        );
        assert_eq!(found.refused.len(), 1, "{found:?}");
        assert!(
            found.refused[0].starts_with("erasure.postgres")
                && found.refused[0].contains("ledger.internal"),
            "{found:?}"
        );
        assert!(!found.refused[0].contains("pw@"), "{found:?}");
    }
}
