//! Context words: the few words before a candidate that say what it is.
//!
//! A bare 10-digit number may be an INN, a passport or an order id; the
//! word that introduces it decides (PII-RULES.md). This module looks at a
//! bounded window before the candidate ([`WINDOW_CHARS`] characters),
//! lowercased with `ё` read as `е`, and finds the keyword that introduces
//! the candidate:
//!
//! - a keyword counts only when no digit stands between it and the
//!   candidate, so `заказ 123, тел. 8 916 …` does not make the phone an
//!   order: the keyword belongs to the nearest number after it;
//! - of the counting keywords the last *strong* one wins; *weak* ones
//!   (`№`, `номер`, `no.`) only count when no strong one precedes them, so
//!   `заказ № 4506123456` is an order and `№ 4506 123456` a passport;
//! - at one position the longest keyword wins (`счёт-фактура` is an
//!   invoice, not a `счёт`).
//!
//! It never logs and never keeps any of the text it looks at.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::token::format::Format;

/// How far back, in characters, a keyword may stand before its candidate.
pub(crate) const WINDOW_CHARS: usize = 40;

/// What a keyword says about the number after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cue {
    /// The number is a value of this format.
    Kind(Format),
    /// The number is something that is not PII: an order, a tracking
    /// number, an invoice, an amount, a product code...
    NotPii,
}

/// One keyword: lowercase text (`ё` written `е`), its cue, whether it is
/// weak, and whether it must end at a word boundary (short words that
/// would otherwise match inside longer ones).
struct Keyword {
    text: &'static str,
    cue: Cue,
    weak: bool,
    whole: bool,
}

const fn kw(text: &'static str, cue: Cue) -> Keyword {
    Keyword {
        text,
        cue,
        weak: false,
        whole: false,
    }
}

const fn whole(text: &'static str, cue: Cue) -> Keyword {
    Keyword {
        text,
        cue,
        weak: false,
        whole: true,
    }
}

const fn weak(text: &'static str, cue: Cue) -> Keyword {
    Keyword {
        text,
        cue,
        weak: true,
        whole: false,
    }
}

const CARD: Cue = Cue::Kind(Format::Card);
const PHONE: Cue = Cue::Kind(Format::Phone);
const PASSPORT: Cue = Cue::Kind(Format::RuPassport);
const SNILS: Cue = Cue::Kind(Format::RuSnils);
const INN: Cue = Cue::Kind(Format::RuInn);
const OGRN: Cue = Cue::Kind(Format::RuOgrn);
const ACCOUNT: Cue = Cue::Kind(Format::RuBankAccount);
const SSN: Cue = Cue::Kind(Format::UsSsn);
const IBAN: Cue = Cue::Kind(Format::Iban);
const NOT: Cue = Cue::NotPii;

/// The built-in keywords, Russian and English.
const KEYWORDS: &[Keyword] = &[
    // card
    kw("карт", CARD),
    kw("card", CARD),
    whole("cc", CARD),
    kw("visa", CARD),
    kw("mastercard", CARD),
    whole("мир", CARD),
    kw("maestro", CARD),
    kw("amex", CARD),
    // phone
    kw("телефон", PHONE),
    whole("тел", PHONE),
    kw("phone", PHONE),
    kw("telephone", PHONE),
    kw("звон", PHONE),
    kw("позвон", PHONE),
    kw("перезвон", PHONE),
    kw("call", PHONE),
    kw("mobile", PHONE),
    kw("мобильн", PHONE),
    kw("связ", PHONE),
    kw("whatsapp", PHONE),
    kw("reach", PHONE),
    whole("fax", PHONE),
    kw("факс", PHONE),
    whole("cell", PHONE),
    whole("desk", PHONE),
    whole("tel", PHONE),
    kw("dial", PHONE),
    whole("sms", PHONE),
    whole("смс", PHONE),
    kw("messag", PHONE),
    kw("answering", PHONE),
    kw("viber", PHONE),
    kw("telegram", PHONE),
    kw("телеграм", PHONE),
    // passport
    kw("паспорт", PASSPORT),
    kw("passport", PASSPORT),
    kw("серия", PASSPORT),
    kw("серии", PASSPORT),
    kw("выдан", PASSPORT),
    weak("номер", PASSPORT),
    weak("№", PASSPORT),
    weak("no.", PASSPORT),
    // snils
    kw("снилс", SNILS),
    kw("snils", SNILS),
    kw("страхов", SNILS),
    // inn
    whole("инн", INN),
    whole("inn", INN),
    kw("tax id", INN),
    whole("tin", INN),
    kw("налогоплат", INN),
    // ogrn
    kw("огрн", OGRN),
    kw("ogrn", OGRN),
    // bank account
    whole("р/с", ACCOUNT),
    whole("р/сч", ACCOUNT),
    whole("к/с", ACCOUNT),
    kw("расчетн", ACCOUNT),
    kw("счет", ACCOUNT),
    kw("account", ACCOUNT),
    kw("корр", ACCOUNT),
    kw("лицев", ACCOUNT),
    // iban: a bare "IBAN" before an account-like number
    kw("iban", IBAN),
    // us ssn
    whole("ssn", SSN),
    kw("social security", SSN),
    // not PII
    kw("заказ", NOT),
    kw("order", NOT),
    kw("трек", NOT),
    kw("track", NOT),
    kw("отслеж", NOT),
    kw("накладн", NOT),
    kw("invoice", NOT),
    kw("счет-фактур", NOT),
    kw("счет на оплату", NOT),
    kw("фактур", NOT),
    kw("артикул", NOT),
    whole("арт", NOT),
    whole("sku", NOT),
    kw("код", NOT),
    kw("code", NOT),
    whole("item", NOT),
    kw("посылк", NOT),
    kw("parcel", NOT),
    kw("отправлени", NOT),
    kw("shipment", NOT),
    kw("тикет", NOT),
    kw("ticket", NOT),
    kw("обращени", NOT),
    kw("заявк", NOT),
    kw("request", NOT),
    whole("case", NOT),
    kw("договор", NOT),
    kw("contract", NOT),
    kw("платеж", NOT),
    kw("payment", NOT),
    kw("transaction", NOT),
    kw("транзакц", NOT),
    kw("штрихкод", NOT),
    kw("barcode", NOT),
    whole("ean", NOT),
    kw("сумм", NOT),
    kw("amount", NOT),
    whole("total", NOT),
    kw("итого", NOT),
    whole("ref", NOT),
    kw("reference", NOT),
    kw("serial", NOT),
    kw("серийн", NOT),
    kw("промокод", NOT),
    kw("верси", NOT),
    kw("version", NOT),
    whole("id", NOT),
    kw("бик", NOT),
    whole("bik", NOT),
];

/// The keyword automaton over the built-in keywords.
pub(crate) struct Context {
    automaton: AhoCorasick,
    /// Cue, weakness and whole-word flag per pattern, in pattern order.
    meta: Vec<(Cue, bool, bool)>,
}

impl Context {
    pub(crate) fn new() -> Context {
        let patterns = KEYWORDS.iter().map(|k| k.text);
        let meta = KEYWORDS.iter().map(|k| (k.cue, k.weak, k.whole)).collect();
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)
            .expect("keyword patterns are plain strings well below the automaton's size limits");
        Context { automaton, meta }
    }

    /// The cue of the keyword introducing a candidate that starts at byte
    /// `start` of `text`, if any (see the module doc for the rules).
    pub(crate) fn cue_before(&self, text: &str, start: usize) -> Option<Cue> {
        let window = window_lowercase(text, start);
        let mut strong = None;
        let mut weak = None;
        for hit in self.automaton.find_iter(&window) {
            let (cue, is_weak, is_whole) = self.meta[hit.pattern().as_usize()];
            // A keyword starts a word, and not one inside an address
            // (`мир` of `ivan@мир.рф`).
            let before = window[..hit.start()].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '_')) {
                continue;
            }
            let rest = &window[hit.end()..];
            if is_whole && rest.chars().next().is_some_and(char::is_alphabetic) {
                continue;
            }
            if rest.bytes().any(|b| b.is_ascii_digit()) {
                // A number stands between: the keyword is that number's.
                continue;
            }
            if sentence_ends_in(&window, hit.end()) {
                // The keyword was about something else.
                continue;
            }
            if is_weak {
                weak = Some(cue);
            } else {
                strong = Some(cue);
            }
        }
        strong.or(weak)
    }
}

/// Longest word a dot may follow and still end an abbreviation (`тел.`,
/// `моб.`, `no.`, `ext.`) rather than a sentence.
const MAX_ABBREVIATION_CHARS: usize = 4;

/// Whether a sentence ends in `window[from..]` (what lies between a
/// keyword ending at `from` and the candidate): a line break, `!`, `?` or
/// `;`, or a dot before a space unless it ends an abbreviation.
fn sentence_ends_in(window: &str, from: usize) -> bool {
    let rest = &window[from..];
    // A label or a question that the value answers, even on the next line
    // (`Phone:\n(08) 8747 6301`, `What's your credit card? 3522…`): its
    // final `:` or `?` does not end what the keyword is about.
    let answered = rest.trim_end_matches(|c: char| c.is_whitespace() || c == '(');
    let rest = answered.strip_suffix([':', '?']).unwrap_or(rest);
    rest.contains(['\n', '!', '?', ';'])
        || rest.match_indices('.').any(|(at, _)| {
            let after = &rest[at + 1..];
            if !(after.is_empty() || after.starts_with(char::is_whitespace)) {
                return false;
            }
            // The whole word before the dot, keyword included.
            let word = window[..from + at]
                .rsplit(|c: char| !c.is_alphabetic())
                .next()
                .unwrap_or("");
            word.chars().count() > MAX_ABBREVIATION_CHARS
        })
}

/// The window before byte `start` of `text`, normalized for keyword search.
pub(crate) fn window_lowercase(text: &str, start: usize) -> String {
    normalize(window_before(text, start))
}

/// At most [`WINDOW_CHARS`] characters of `text` before byte `start`, which
/// must be a char boundary.
fn window_before(text: &str, start: usize) -> &str {
    let head = text.get(..start).unwrap_or("");
    let from = head
        .char_indices()
        .rev()
        .nth(WINDOW_CHARS - 1)
        .map_or(0, |(at, _)| at);
    &head[from..]
}

/// Lowercase, with `ё` read as `е`: how keywords are written.
pub(crate) fn normalize(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c == 'ё' { 'е' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(text: &str) -> Option<Cue> {
        Context::new().cue_before(text, text.len())
    }

    #[test]
    fn nearest_strong_keyword_wins() {
        assert_eq!(cue("паспорт 4506 123456, ИНН "), Some(INN));
        assert_eq!(cue("Номер заказа "), Some(NOT));
        assert_eq!(cue("заказ № "), Some(NOT));
        assert_eq!(cue("№ "), Some(PASSPORT));
        assert_eq!(cue("Счёт-фактура № "), Some(NOT));
        assert_eq!(cue("Расчётный счёт "), Some(ACCOUNT));
        assert_eq!(cue("SNILS no. "), Some(SNILS));
    }

    #[test]
    fn keyword_before_another_number_does_not_count() {
        assert_eq!(cue("заказ 12345, "), None);
        assert_eq!(cue("длинный "), None);
        assert_eq!(
            cue("трек, отслеживайте на сайте. Перезвоните на "),
            Some(PHONE)
        );
        assert_eq!(cue("Не могу оплатить заказ. № "), Some(PASSPORT));
        assert_eq!(cue("тел. "), Some(PHONE));
        assert_eq!(cue("Не могу оплатить заказ. "), None);
        assert_eq!(cue("<дмитрий.п@мир.рф. "), None);
        assert_eq!(cue("Иннокентий "), None);
    }

    #[test]
    fn label_introduces_the_value_on_the_next_line() {
        assert_eq!(cue("Personal Info:\nPhone:\n"), Some(PHONE));
        assert_eq!(cue("Phone:\n("), Some(PHONE));
        assert_eq!(cue("my phone broke.\nOrder "), Some(NOT));
        assert_eq!(cue("phone\n"), None);
        assert_eq!(cue("call me\nlater: "), None);
        assert_eq!(cue("What's your credit card? "), Some(CARD));
        assert_eq!(cue("your card number?\n"), Some(CARD));
        assert_eq!(cue("Is this your card? I lost it, "), None);
    }

    #[test]
    fn phone_and_card_words_of_other_writers() {
        assert_eq!(cue("They're not answering at "), Some(PHONE));
        assert_eq!(cue("stop receiving messages to "), Some(PHONE));
        assert_eq!(cue("Fax: "), Some(PHONE));
        assert_eq!(cue("last billed amount for cc "), Some(CARD));
        assert_eq!(cue("accurate "), None);
        assert_eq!(cue("faxed "), None);
    }

    #[test]
    fn window_is_bounded_and_on_char_boundaries() {
        let text = "паспорт ".to_owned() + &"ж".repeat(WINDOW_CHARS);
        assert_eq!(cue(&text), None);
        assert_eq!(window_before("ёж", 2), "ё");
    }
}
