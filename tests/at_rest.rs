//! Nothing sensitive at rest: after tokenizing 10,000 known values for 100
//! subjects, no file under the data directory (WAL, SST, manifest, logs)
//! and no line of the server's log holds any value or subject id.

mod common;

use aho_corasick::AhoCorasick;
use common::{detokenize, item, luhn_complete, tokenize, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SUBJECTS: usize = 100;
const VALUES_PER_SUBJECT: usize = 100;

/// Distinct, recognisable values of several formats.
fn value(rng: &mut StdRng, subject: usize, n: usize) -> (String, &'static str) {
    match n % 5 {
        0 => (
            luhn_complete(&format!("4{:014}", rng.random_range(0..10u64.pow(14)))),
            "card",
        ),
        1 => (
            format!(
                "client{subject:03}x{n:03}.{}@mail-example.ru",
                rng.random_range(1000..9999)
            ),
            "email",
        ),
        2 => (
            format!(
                "+7 9{:02} {:03}-{:02}-{:02}",
                rng.random_range(0..100),
                rng.random_range(0..1000),
                rng.random_range(0..100),
                rng.random_range(0..100)
            ),
            "phone",
        ),
        3 => (
            format!(
                "{:04} {:06}",
                rng.random_range(1000..9999),
                rng.random_range(100000..999999)
            ),
            "ru_passport",
        ),
        _ => (
            format!(
                "Customer Name {subject:03}-{n:03} Zqx{}",
                rng.random_range(100000..999999)
            ),
            "text",
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_or_subject_id_is_stored_or_logged_in_the_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let mut rng = StdRng::seed_from_u64(20261125);
    let mut needles: Vec<String> = Vec::new();
    let mut sample = Vec::new();

    for s in 0..SUBJECTS {
        let subject = format!("subject-{s:03}-{:08x}", rng.random::<u32>());
        let values: Vec<(String, &str)> = (0..VALUES_PER_SUBJECT)
            .map(|n| value(&mut rng, s, n))
            .collect();
        let items = values.iter().map(|(v, f)| item(v, f)).collect();
        let tokens = tokenize(&mut client, &subject, items).await;
        sample.push((
            tokens[s % VALUES_PER_SUBJECT].clone(),
            values[s % VALUES_PER_SUBJECT].0.clone(),
        ));
        needles.push(subject);
        needles.extend(values.into_iter().map(|(v, _)| v));
    }
    assert_eq!(needles.len(), SUBJECTS * (VALUES_PER_SUBJECT + 1));

    // The data is really there: a sample round-trips.
    let tokens: Vec<String> = sample.iter().map(|(t, _)| t.clone()).collect();
    for (result, (_, value)) in detokenize(&mut client, &tokens)
        .await
        .into_iter()
        .zip(&sample)
    {
        assert_eq!(&result.value, value);
    }
    server.stop().await;

    let matcher = AhoCorasick::new(&needles).expect("automaton");
    let mut files = common::files_under(&server.data_dir());
    assert!(
        files.iter().any(|f| f.to_string_lossy().ends_with(".log")),
        "the WAL is searched"
    );
    files.push(server.log_path());
    let mut bytes_searched = 0;
    for file in files {
        let bytes = std::fs::read(&file).expect("read");
        bytes_searched += bytes.len();
        if let Some(found) = matcher.find(&bytes) {
            panic!(
                "{} holds needle #{} in the clear at byte {}",
                file.display(),
                found.pattern().as_usize(),
                found.start()
            );
        }
    }
    assert!(
        bytes_searched > 500_000,
        "only {bytes_searched} bytes searched: was anything stored?"
    );
}

/// Every path under `dir` (directories, files, sockets) with its mode.
fn modes_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        out.push((path.clone(), meta.permissions().mode()));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                stack.push(entry.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn every_file_the_server_creates_is_owner_only() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root).expect("root");
    let kek = root.join("kek.key");
    std::fs::write(&kek, [7u8; 32]).expect("kek");
    // The ledger and the audit file outside the data directory, in
    // directories the server creates.
    let (ledger_dir, audit_dir) = (root.join("ledger"), root.join("audit"));
    std::fs::create_dir_all(&audit_dir).expect("audit dir");
    let config = format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n[erasure]\nledger = \"{}\"\n[audit]\nfile = \"{}\"\n{}",
        kek.display(),
        ledger_dir.join("nested/erasure-ledger.jsonl").display(),
        audit_dir.join("audit.jsonl").display(),
        common::admin_principal_toml()
    );
    let mut server = Server::start_with_config(root, &config);
    let mut client = server.client().await;
    let tokens = tokenize(
        &mut client,
        "subject-modes-1",
        vec![item("4111 1111 1111 1111", "card")],
    )
    .await;
    detokenize(&mut client, &tokens).await;
    client
        .forget_subject(tokenvault::pb::ForgetSubjectRequest {
            subject_id: "subject-modes-1".into(),
            reason: "test".into(),
        })
        .await
        .expect("forget");

    // While it runs: the admin socket too.
    let socket = server.data_dir().join("admin.sock");
    let socket_mode = modes_under(&socket)[0].1;
    assert!(
        std::fs::symlink_metadata(&socket)
            .expect("socket")
            .file_type()
            .is_socket(),
        "admin socket"
    );
    assert_eq!(
        socket_mode & 0o077,
        0,
        "admin.sock has mode {socket_mode:o}"
    );

    let mut seen = 0;
    for top in [server.data_dir(), ledger_dir, audit_dir.join("audit.jsonl")] {
        for (path, mode) in modes_under(&top) {
            assert_eq!(
                mode & 0o077,
                0,
                "{} has mode {:o}: group or others can reach it",
                path.display(),
                mode & 0o7777
            );
            seen += 1;
        }
    }
    assert!(seen > 10, "only {seen} paths checked");
    server.stop().await;
}
