//! Criterion benches of the per-value crypto on the Tokenize/Detokenize
//! hot path: sealing, opening, index MACs, subject hashing, DEK derivation.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tokenvault::crypto::{open, seal, token_aad, SecretKey, SubjectHash, SubjectKeys, SystemKeys};

fn sealing(c: &mut Criterion) {
    let keys = SubjectKeys::from_dek(&SecretKey::generate().expect("random"));
    let ready = keys.seal_key();
    // A key used once: the key schedule expanded for every value, as the
    // vault did before it kept a SealingKey per subject.
    let once = SecretKey::generate().expect("random");
    let subject = SubjectHash([7; 32]);
    let mut group = c.benchmark_group("seal");
    for size in [16usize, 64, 1024] {
        let value = vec![b'4'; size];
        let aad = token_aad("4111 11•• •••• 1111", "card", &subject);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &value, |b, value| {
            b.iter(|| ready.seal(&aad, value).expect("seal"))
        });
        // Opening consumes the sealed value (decrypted in place); the copy
        // it opens is made outside the timing.
        let sealed = ready.seal(&aad, &value).expect("seal");
        group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, sealed| {
            b.iter_batched(
                || sealed.clone(),
                |sealed| ready.open(&aad, sealed).expect("open"),
                BatchSize::SmallInput,
            )
        });
        let sealed = seal(&once, &aad, &value).expect("seal");
        group.bench_with_input(
            BenchmarkId::new("open_key_used_once", size),
            &sealed,
            |b, sealed| {
                b.iter_batched(
                    || sealed.clone(),
                    |sealed| open(&once, &aad, sealed).expect("open"),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let dek = SecretKey::generate().expect("random");
    let keys = SubjectKeys::from_dek(&dek);
    let system = SystemKeys::from_system_key(&SecretKey::generate().expect("random"));
    let subject = SubjectHash([7; 32]);
    c.bench_function("index_key", |b| {
        b.iter(|| keys.index_key(&subject, "card", "4111111111111111"))
    });
    c.bench_function("subject_hash", |b| {
        b.iter(|| system.subject_hash("customer-0042"))
    });
    c.bench_function("subject_keys_from_dek", |b| {
        b.iter(|| SubjectKeys::from_dek(&dek))
    });
}

criterion_group!(benches, sealing, hashing);
criterion_main!(benches);
