//! Criterion benches of token generation per format (validation included,
//! as on the Tokenize path).

use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;

use tokenvault::token::format::{generate_token, Format};
use tokenvault::token::template::{Template, TemplateSpec};

const SAMPLES: &[(&str, &str)] = &[
    ("card", "4111 1111 1111 1111"),
    ("phone", "+7 (916) 123-45-67"),
    ("email", "ivan.petrov@mail.ru"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("ru_passport", "4506 123456"),
    ("ru_snils", "112-233-445 95"),
    ("ru_inn", "500100732259"),
    ("ru_ogrn", "1027700132195"),
    ("ru_bank_account", "044525225 40702810938000000001"),
    ("us_ssn", "123-45-6789"),
    ("text", "Иван Petrov, 42 года"),
    ("opaque", "any value at all"),
];

fn token_generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("generate_token");
    let mut rng = rand::rng();
    for (name, value) in SAMPLES {
        let format = Format::from_name(name).expect("known format");
        group.bench_function(*name, |b| {
            b.iter(|| generate_token(format, value, &mut rng).expect("valid sample"))
        });
    }
    // An operator-defined `[[formats]]` template, as in the README.
    let spec = TemplateSpec {
        name: "loyalty_card".into(),
        pattern: r"LC-(\d{4})-(\d{4})-([A-Z2-7]{2})".into(),
        alphabets: vec![
            "numeric".into(),
            "numeric".into(),
            "alphanumeric_upper".into(),
        ],
        keep: vec![1],
    };
    let template = Template::new(&spec, &BTreeMap::new()).expect("valid template");
    group.bench_function("template_loyalty_card", |b| {
        b.iter(|| {
            template
                .generate_token("LC-1234-5678-AB", &mut rng)
                .expect("valid sample")
        })
    });
    group.finish();
}

criterion_group!(benches, token_generation);
criterion_main!(benches);
