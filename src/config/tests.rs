//! The unit tests of `crate::config`: every section's parsing, defaults
//! and checks, and what is derived from a config (the audit and ledger
//! paths, the scanner).

use super::*;

#[test]
fn empty_config_is_the_dev_default() {
    let config = Config::dev();
    assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    assert!(config.storage.sync_writes, "synced writes are the default");
    assert!(matches!(config.kek, KekConfig::Local { path: None }));
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    for (text, key) in [
        ("lisen = \"127.0.0.1:1\"", "lisen"),
        ("[storage]\nsync_write = false", "sync_write"),
        ("[kek]\nprovider = \"local\"\npth = \"k\"", "pth"),
        ("[limits]\nmax_items = 3", "max_items"),
        ("[audit]\npath = \"a.jsonl\"", "path"),
    ] {
        let err = Config::parse(text).expect_err(text);
        assert!(err.contains(key), "{err} should name {key}");
    }
}

#[test]
fn parse_errors_show_no_line_and_no_password() {
    for text in [
        "[storage.postgres]\ntls = \"postgres://tv:s3cr3t-pw@db:5432/tv\"",
        "[storage.postgres]\nurl = \"postgres://tv:s3cr3t-pw@db:5432/tv\" x",
        "[storage.postgres]\ntls = \"host=db password=s3cr3t-pw\"",
    ] {
        let error = Config::parse(text).expect_err(text);
        assert!(!error.contains("s3cr3t-pw"), "{error}");
        assert!(error.contains("line 2"), "{error}");
    }
}

#[test]
fn postgres_config_debug_shows_no_url() {
    let config = Config::parse(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://tv:s3cr3t-pw@db/tv\"",
    )
    .expect("parses");
    let shown = format!("{config:?}");
    assert!(shown.contains("PostgresConfig"), "{shown}");
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
}

#[test]
fn the_ledger_is_refused_in_the_data_dir_outside_dev_and_in_the_data_database() {
    let parse = |text: &str| Config::parse(text).expect("parse");
    let dev = Config::dev();
    assert_eq!(dev.ledger_problem(true), None, "--dev keeps its default");
    let unset = dev.ledger_problem(false).expect("unset is refused");
    assert!(unset.starts_with("erasure.ledger is not set"), "{unset}");
    for inside in [
        "/var/lib/tv/ledger.jsonl",
        "/var/lib/tv/sub/../x/ledger.jsonl",
    ] {
        let config = parse(&format!(
            "data_dir = \"/var/lib/tv\"\n[erasure]\nledger = \"{inside}\"\n"
        ));
        let problem = config.ledger_problem(false).expect("inside is refused");
        assert!(problem.contains("inside data_dir /var/lib/tv"), "{problem}");
    }
    let outside = parse(
        "data_dir = \"/var/lib/tv\"\n[erasure]\nledger = \"/var/lib/tv/../tv-ledger/l.jsonl\"\n",
    );
    assert_eq!(outside.ledger_problem(false), None);

    let pg = |ledger: &str| {
        parse(&format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://u@h:5432/db\"\n{ledger}"
        ))
    };
    let none = pg("")
        .check()
        .expect_err("postgres needs [erasure.postgres]");
    assert!(none.to_string().contains("[erasure.postgres]"), "{none}");
    let same = pg("[erasure.postgres]\nurl = \"postgres://other@h/db\"\n")
        .check()
        .expect_err("the data database is refused");
    assert!(
        same.to_string().contains("names the data database"),
        "{same}"
    );
    pg("[erasure.postgres]\nurl = \"postgres://u@h:5432/db_ledger\"\n")
        .check()
        .expect("a database of its own");
    assert!(
        pg("[erasure]\nledger = \"/l\"\n[erasure.postgres]\nurl = \"postgres://u@h/l\"\n")
            .check()
            .is_err()
    );
}

#[test]
fn full_config_parses() {
    let config = Config::parse(
        r#"
        listen = "0.0.0.0:6000"
        data_dir = "/var/lib/tokenvault"
        [storage]
        backend = "rocksdb"
        sync_writes = false
        [kek]
        provider = "local"
        path = "/etc/tokenvault/kek.key"
        [limits]
        max_batch_items = 10
        [[principals]]
        name = "chat"
        api_key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        allow = ["tokenize", "redact_text"]
        "#,
    )
    .expect("parses");
    config.check().expect("valid");
    assert!(!config.storage.sync_writes);
    assert_eq!(config.limits.max_batch_items, 10);
    assert_eq!(config.principals[0].allow, ["tokenize", "redact_text"]);
    assert_eq!(config.principals[0].alert_at_percent, 80);
    assert!(config.principals[0].reveal.is_empty());
}

#[test]
fn grpc_web_origins_must_be_origins() {
    let parse = |origins: &str| {
        Config::parse(&format!("[grpc_web]\ncors_allowed_origins = [{origins}]"))
            .expect("parses")
            .check()
    };
    assert!(parse(r#""https://console.example.com", "http://127.0.0.1:3000""#).is_ok());
    for bad in [
        r#""console.example.com""#,
        r#""https://x.example/app""#,
        r#""*""#,
    ] {
        let error = parse(bad).expect_err(bad).to_string();
        assert!(error.contains("grpc_web.cors_allowed_origins"), "{error}");
    }
}

#[test]
fn audit_file_defaults_to_the_data_dir() {
    let mut config = Config::dev();
    config.data_dir = PathBuf::from("/var/lib/tv");
    assert_eq!(
        config.audit_file(),
        PathBuf::from("/var/lib/tv/audit.jsonl")
    );
    let config = Config::parse("[audit]\nfile = \"/var/log/tv/audit.jsonl\"").expect("parses");
    assert_eq!(
        config.audit_file(),
        PathBuf::from("/var/log/tv/audit.jsonl")
    );
}

#[test]
fn vault_kek_parses_with_defaults_and_needs_exactly_one_auth() {
    let config = Config::parse(
        r#"
        [kek]
        provider = "vault"
        address = "https://vault:8200"
        key_name = "tokenvault"
        [kek.approle]
        role_id = "r"
        secret_id_file = "/run/secret-id"
        "#,
    )
    .expect("parses");
    config.check().expect("valid");
    let KekConfig::Vault {
        mount,
        timeout_ms,
        approle,
        ..
    } = &config.kek
    else {
        panic!("vault provider expected");
    };
    assert_eq!((mount.as_str(), *timeout_ms), ("transit", 2000));
    assert_eq!(approle.as_ref().map(|a| a.mount.as_str()), Some("approle"));

    let neither =
        Config::parse("[kek]\nprovider = \"vault\"\naddress = \"http://v\"\nkey_name = \"k\"")
            .expect("parses");
    assert!(neither
        .check()
        .unwrap_err()
        .to_string()
        .contains("exactly one of token_env"));
    let err = Config::parse(
        "[kek]\nprovider = \"vault\"\naddress = \"http://v\"\nkey_name = \"k\"\ntoken = \"s\"",
    )
    .expect_err("unknown key");
    assert!(err.contains("token"), "{err}");
    let err = Config::parse("[kek]\nprovider = \"hsm\"").expect_err("unknown provider");
    assert!(err.contains("hsm"), "{err}");
}

#[test]
fn detectors_parse_and_bad_ones_are_named() {
    let config = Config::parse(
        r#"
        [[detectors]]
        name = "employee-id"
        pattern = '\bEMP-\d{6}\b'
        format = "text"
        "#,
    )
    .expect("parses");
    config.check().expect("valid");
    let scanner = config.scanner().expect("scanner");
    let found = scanner.scan("ask EMP-123456 please");
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].start, found[0].end), (4, 14));

    for (detector, named) in [
        ("pattern = '(' \nformat = \"text\"", "invalid pattern"),
        ("pattern = 'x'\nformat = \"cardd\"", "unknown format"),
        (
            "pattern = 'x'\nformat = \"text\"\nvalidator = \"crc\"",
            "validator",
        ),
    ] {
        let text = format!("[[detectors]]\nname = \"d\"\n{detector}");
        let config = Config::parse(&text).expect(&text);
        let error = config.check().expect_err(&text).to_string();
        assert!(error.contains(named) && error.contains("\"d\""), "{error}");
    }
}

#[test]
fn formats_parse_feed_detectors_and_bad_ones_are_named() {
    let config = Config::parse(
        r#"
        [alphabets]
        base32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

        [[formats]]
        name = "loyalty_card"
        pattern = 'LC-(\d{4})-(\d{4})-([A-Z2-7]{2})'
        alphabets = ["numeric", "numeric", "base32"]
        keep = [1]

        [[detectors]]
        name = "loyalty"
        pattern = '\bLC-\d{4}-\d{4}-[A-Z2-7]{2}\b'
        format = "loyalty_card"

        [[principals]]
        name = "support"
        api_key_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
        allow = ["detokenize"]
        reveal = { loyalty_card = "masked" }
        "#,
    )
    .expect("parses");
    config.check().expect("valid");
    let found = config
        .scanner()
        .expect("scanner")
        .scan("card LC-1234-5678-AB!");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind.name(), "loyalty_card");
    assert_eq!((found[0].start, found[0].end), (5, 20));

    for (entry, expected) in [
        (
            "name = \"card\"\npattern = '(\\d{4})'\nalphabets = [\"numeric\"]",
            "built-in format",
        ),
        (
            "name = \"f\"\npattern = '(\\d{4})'\nalphabets = [\"digits\"]",
            "unknown alphabet",
        ),
        (
            "name = \"f\"\npattern = '(\\d{4}'\nalphabets = [\"numeric\"]",
            "invalid pattern",
        ),
    ] {
        let text = format!("[[formats]]\n{entry}");
        let config = Config::parse(&text).expect(&text);
        let error = config.check().expect_err(&text).to_string();
        assert!(
            error.contains(expected) && error.contains("format \""),
            "{error}"
        );
    }
    let principal = format!(
        "[[principals]]\nname = \"p\"\napi_key_sha256 = \"{}\"\nallow = []\nreveal = {{ loyalty = \"masked\" }}",
        "0".repeat(64)
    );
    let unknown = Config::parse(&principal).expect("parses");
    assert!(unknown
        .check()
        .unwrap_err()
        .to_string()
        .contains("unknown format \"loyalty\""));
}

#[test]
fn bad_principals_are_named() {
    let mut config = Config::dev();
    config.principals =
        Config::parse("[[principals]]\nname = \"x\"\napi_key_sha256 = \"abc\"\nallow = []")
            .expect("parses")
            .principals;
    assert!(config
        .check()
        .unwrap_err()
        .to_string()
        .contains("principals[0]"));
    config.principals[0].api_key_sha256 = Some("a".repeat(64));
    config.principals[0].allow = vec!["detokenise".into()];
    assert!(config
        .check()
        .unwrap_err()
        .to_string()
        .contains("detokenise"));
}

#[test]
fn policies_tls_and_actor_tokens_parse_and_bad_ones_are_named() {
    let config = Config::parse(
        r#"
        [tls]
        cert = "server.pem"
        key = "server.key"
        client_ca = "ca.pem"
        [actor_tokens]
        audience = "tokenvault"
        issuer = "https://idp"
        keys = [{ kid = "k1", alg = "ES256", public_key_pem = "k1.pem" }]
        [[principals]]
        name = "billing"
        mtls_subject = "urn:tokenvault:principal:billing"
        allow = ["detokenize", "restore_text"]
        reveal = { default = "masked", email = "full" }
        require_purpose = true
        max_detokenize_per_minute = 100
        max_detokenize_per_minute_per_actor = 10
        full_reveal_needs_second_factor = true
        without_second_factor = "deny"
        "#,
    )
    .expect("parses");
    config.check().expect("valid");
    let billing = &config.principals[0];
    assert_eq!(billing.reveal.get("email"), Some(&RevealConfig::Full));
    assert_eq!(billing.without_second_factor, SecondFactorFallback::Deny);

    let key = format!("api_key_sha256 = \"{}\"", "a".repeat(64));
    for (principal, named) in [
        (format!("{key}\nreveal = {{ cardd = \"full\" }}"), "cardd"),
        (format!("{key}\nalert_at_percent = 0"), "alert_at_percent"),
        (format!("{key}\nmax_detokenize_per_minute = 0"), "above 0"),
        ("mtls_subject = \"CN=x\"".to_string(), "client_ca"),
        ("".to_string(), "exactly one of"),
    ] {
        let text = format!("[[principals]]\nname = \"p\"\nallow = []\n{principal}");
        let config = Config::parse(&text).expect(&text);
        let error = config.check().expect_err(&text).to_string();
        assert!(error.contains(named) && error.contains("(p)"), "{error}");
    }
    let err =
        Config::parse("[[principals]]\nname = \"p\"\nallow = []\nreveal = { card = \"partial\" }")
            .expect_err("bad reveal");
    assert!(err.contains("partial"), "{err}");
}

/// `[actor_tokens] leeway_seconds` above 300 and a max age outside
/// 1..=86400 are refused at load; the defaults are 30 and 3600.
#[test]
fn actor_token_leeway_and_max_age_are_bounded() {
    let with = |extra: &str| {
        Config::parse(&format!(
            "[actor_tokens]\naudience = \"tv\"\nkeys = [{{ kid = \"k1\", alg = \"ES256\", public_key_pem = \"k1.pem\" }}]\n{extra}"
        ))
        .expect("parses")
    };
    let defaults = with("");
    defaults.check().expect("valid");
    let actor_tokens = defaults.actor_tokens.as_ref().expect("actor_tokens");
    assert_eq!(
        (actor_tokens.leeway_seconds, actor_tokens.max_age_seconds),
        (30, 3600)
    );
    with("leeway_seconds = 300").check().expect("at the bound");
    for (extra, named) in [
        ("leeway_seconds = 301", "leeway_seconds"),
        ("max_age_seconds = 0", "max_age_seconds"),
        ("max_age_seconds = 86401", "max_age_seconds"),
    ] {
        let error = with(extra).check().expect_err(extra).to_string();
        assert!(error.contains(named), "{extra}: {error}");
    }
}
