//! The built-in detectors: the candidate regex, and the rules that turn a
//! candidate span into findings of each kind (PII-RULES.md).
//!
//! Candidates come in three shapes from one regex pass:
//! - email-shaped (`local@domain`): trimmed, checked not to be part of a
//!   URL nor an `.invalid` token domain, then validated;
//! - IBAN-shaped (two capitals, two digits, then alphanumerics with single
//!   spaces): cut back at a space until it validates;
//! - a *number chunk*: digit groups joined by short separators (spaces,
//!   no-break spaces, `-`, `.`, `/`, `:`, brackets, `№`, the word `номер`),
//!   with an optional leading `+`. Every run of consecutive groups is a
//!   possible value; each kind looks at runs of its digit count and layout.
//!
//! Nothing here logs or keeps text.

use regex::Regex;

use super::context::Cue;
use super::{phones, Scanner};
use crate::token::format::{validate, Format};
use crate::token::template::TokenFormat;

/// Priorities: which of two overlapping candidates wins.
/// A value that carries its own strong proof: a BIK with its account, an
/// IBAN, an email.
const PRIORITY_PROVEN: u8 = 100;
/// An account next to a BIK it passes the key check with.
const PRIORITY_ACCOUNT_BIK: u8 = 95;
/// A checksum-valid (or passport) value introduced by its context word.
const PRIORITY_CONTEXT: u8 = 90;
/// An operator-defined detector's match.
pub(super) const PRIORITY_CUSTOM: u8 = 85;
/// A card introduced by a card word.
const PRIORITY_CARD_CONTEXT: u8 = 84;
/// A Luhn-valid card with a known IIN and a card layout.
const PRIORITY_CARD: u8 = 80;
/// A checksum-valid value in its distinctive layout, no context word.
const PRIORITY_LAYOUT: u8 = 70;
/// A phone number.
pub(super) const PRIORITY_PHONE: u8 = 60;

/// Longest digit run any kind takes: a BIK and its account.
const MAX_DIGITS: usize = 29;
/// Shortest: a national phone number (`451 5986`).
const MIN_DIGITS: usize = 7;
/// How far (bytes) from an account a BIK is looked for.
const BIK_DISTANCE: usize = 160;

/// A possible finding before overlaps are resolved.
#[derive(Clone, Debug)]
pub(super) struct Candidate {
    pub(super) kind: TokenFormat,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) priority: u8,
}

/// The one regex all built-in candidates come from.
pub(super) fn candidate_regex() -> Regex {
    const PATTERN: &str = concat!(
        // email: an atext-ish local part, @, dotted Unicode domain labels
        r"[\p{L}\p{N}!#$%&'*+/=?^_`{|}~.\-]+@[\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)+",
        // iban: country, check digits, 11 to 30 more with single spaces
        r"|[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
        // number chunk: digit groups with short separators between
        r"|\+?[0-9]+(?:(?:[ \u{a0}\-./:()]{1,3}| ?№ ?| [нН]омер )[0-9]+)*",
    );
    Regex::new(PATTERN).expect("the candidate pattern is a constant that compiles")
}

/// One digit group of a number chunk: byte span and digit count.
#[derive(Clone, Copy, Debug)]
struct Group {
    start: usize,
    end: usize,
}

impl Group {
    fn len(self) -> usize {
        self.end - self.start
    }
}

/// A number chunk: its groups, and whether a `+` precedes the first.
struct Chunk {
    start: usize,
    plus: bool,
    groups: Vec<Group>,
}

/// All built-in candidates of `text`.
pub(super) fn builtin_candidates(scanner: &Scanner, text: &str, out: &mut Vec<Candidate>) {
    let mut chunks = Vec::new();
    let mut at = 0;
    while let Some(m) = scanner.candidates.find_at(text, at) {
        let matched = m.as_str();
        at = m.end();
        if matched.contains('@') {
            if scanner.enabled(Format::Email) {
                email(text, m.start(), m.end(), out);
            }
        } else if matched.starts_with(|c: char| c.is_ascii_uppercase()) {
            // An IBAN-shaped match can run on over a word into a number
            // (`1Z057KFB0896991767 OGRN 3197…`): what it does not take as
            // an IBAN is searched again, from the IBAN's end or else from
            // the match's second byte (its first is an ASCII letter). A
            // match is at most 64 bytes, so each byte is searched a
            // bounded number of times.
            let iban_end = iban(text, m.start(), m.end());
            match iban_end {
                Some(end) if scanner.enabled(Format::Iban) => {
                    out.push(Candidate {
                        kind: Format::Iban.into(),
                        start: m.start(),
                        end,
                        priority: PRIORITY_PROVEN,
                    });
                    at = end;
                }
                _ => at = m.start() + 1,
            }
        } else {
            chunks.push(chunk(text, m.start(), m.end()));
        }
    }
    // Spans of the digit groups that may be BIKs (9 digits, `04…`), in
    // text order, for accounts to find theirs by binary search.
    let biks: Vec<Group> = chunks
        .iter()
        .flat_map(|c| &c.groups)
        .filter(|g| g.len() == 9 && text.as_bytes()[g.start..].starts_with(b"04"))
        .copied()
        .collect();
    for chunk in &chunks {
        numbers(scanner, text, chunk, &biks, out);
    }
}

pub(super) fn char_before(text: &str, at: usize) -> Option<char> {
    text.get(..at).and_then(|s| s.chars().next_back())
}

pub(super) fn char_after(text: &str, at: usize) -> Option<char> {
    text.get(at..).and_then(|s| s.chars().next())
}

/// Whether the whitespace-delimited word around byte `at` is a URL.
fn in_url(text: &str, at: usize) -> bool {
    const MAX_URL_CHARS: usize = 256;
    let head = text.get(..at).unwrap_or("");
    let mut word_start = head.len();
    for (i, c) in head.char_indices().rev().take(MAX_URL_CHARS) {
        if c.is_whitespace() {
            break;
        }
        word_start = i;
    }
    let word = &head[word_start..];
    let lower = word.to_ascii_lowercase();
    lower.contains("://") || lower.starts_with("www.")
}

// ---------------------------------------------------------------------------
// email

fn email(text: &str, start: usize, end: usize, out: &mut Vec<Candidate>) {
    let matched = &text[start..end];
    // A local part starts with a letter or digit in chat text: `'`, `/`,
    // `-`... before it are quoting or a URL path.
    let Some(skip) = matched.find(|c: char| c.is_alphanumeric()) else {
        return;
    };
    let start = start + skip;
    let mut end = end;
    while text[start..end].ends_with('-') {
        end -= 1;
    }
    let value = &text[start..end];
    let Some((local, domain)) = value.split_once('@') else {
        return;
    };
    if local.is_empty() || in_url(text, start) {
        return;
    }
    if char_before(text, start).is_some_and(|c| c == '/' || c == ':' || c == '@') {
        return;
    }
    if char_after(text, end).is_some_and(|c| matches!(c, '/' | ':' | '@')) {
        return;
    }
    let tld = domain.rsplit('.').next().unwrap_or("");
    // `.invalid` is what email tokens end with (RFC 2606); a numeric "TLD"
    // is a version or an address, not a mail domain.
    if tld.eq_ignore_ascii_case("invalid")
        || !tld.chars().all(char::is_alphabetic)
        || tld.chars().count() < 2
    {
        return;
    }
    if validate(Format::Email, value).is_ok() {
        out.push(Candidate {
            kind: Format::Email.into(),
            start,
            end,
            priority: PRIORITY_PROVEN,
        });
    }
}

// ---------------------------------------------------------------------------
// iban

/// The end of the IBAN starting at `start`, if the IBAN-shaped match
/// `start..end` begins with one.
fn iban(text: &str, start: usize, end: usize) -> Option<usize> {
    if char_before(text, start).is_some_and(char::is_alphanumeric) || in_url(text, start) {
        return None;
    }
    // Longest first: the match may run on into the next capitalized word.
    let matched = &text[start..end];
    let mut ends: Vec<usize> = matched.match_indices(' ').map(|(i, _)| start + i).collect();
    ends.push(end);
    for &cut in ends.iter().rev() {
        if char_after(text, cut).is_some_and(char::is_alphanumeric) {
            continue;
        }
        if validate(Format::Iban, &text[start..cut]).is_ok() {
            return Some(cut);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// number chunks

fn chunk(text: &str, start: usize, end: usize) -> Chunk {
    let bytes = text.as_bytes();
    let plus = bytes.get(start) == Some(&b'+');
    let mut groups = Vec::new();
    let mut at = start;
    while at < end {
        if bytes[at].is_ascii_digit() {
            let from = at;
            while at < end && bytes[at].is_ascii_digit() {
                at += 1;
            }
            groups.push(Group {
                start: from,
                end: at,
            });
        } else {
            at += 1;
        }
    }
    Chunk {
        start,
        plus,
        groups,
    }
}

/// Runs of groups `i..=j` of every chunk, checked against each kind.
fn numbers(scanner: &Scanner, text: &str, chunk: &Chunk, biks: &[Group], out: &mut Vec<Candidate>) {
    // A chunk glued to a word, a path or a parameter (`RA123…`, `/order/8…`,
    // `?id=…`) is part of something else; its later groups may still stand
    // alone (`ИНН/КПП 7707083893/770701001`).
    if in_url(text, chunk.start) {
        return;
    }
    let glued = char_before(text, chunk.start).is_some_and(|c| {
        c.is_alphanumeric() || matches!(c, '_' | '/' | '=' | '&' | '?' | '\\' | '@')
    });
    let groups = &chunk.groups;
    let mut lens: Vec<usize> = Vec::with_capacity(8);
    for i in 0..groups.len() {
        if i == 0 && glued {
            continue;
        }
        let phone_only = i == 0 && chunk.plus;
        // The keyword before the run depends only on where it starts:
        // looked up once, and only for a run long enough to be a value.
        let mut cue = None;
        lens.clear();
        let mut digits = 0;
        for j in i..groups.len() {
            digits += groups[j].len();
            if digits > MAX_DIGITS {
                break;
            }
            lens.push(groups[j].len());
            let end = groups[j].end;
            if digits < MIN_DIGITS {
                continue;
            }
            // A letter or digit right after the run makes it part of a
            // word, except a phone's extension (`…4508x769`).
            let extension = phones::extension_end(text, end);
            if extension.is_none()
                && char_after(text, end).is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                continue;
            }
            let value_start = if phone_only {
                chunk.start
            } else {
                groups[i].start
            };
            let cue = *cue.get_or_insert_with(|| scanner.context.cue_before(text, value_start));
            let run = Run {
                text,
                start: groups[i].start,
                end,
                lens: &lens,
                digits,
            };
            if run.is_amount() || cue == Some(Cue::NotPii) {
                continue;
            }
            let phone_ok = scanner.enabled(Format::Phone) && !introduces_other_kind(cue);
            if phone_only || extension.is_some() {
                // Only a phone has an extension; a `+` is only a phone's.
                let phone_end = extension.unwrap_or(end);
                if phone_ok && phone_only {
                    phones::phone(&run, chunk.start, phone_end, out);
                } else if phone_ok {
                    phones::phone(&run, run.start, phone_end, out);
                    phones::national(&run, cue, phone_end, out);
                }
                continue;
            }
            if phone_ok {
                phones::national(&run, cue, end, out);
            }
            run_candidates(scanner, &run, cue, biks, out);
        }
    }
}

/// A run of digit groups: `text[start..end]`, group lengths and digit count.
pub(super) struct Run<'a> {
    pub(super) text: &'a str,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) lens: &'a [usize],
    pub(super) digits: usize,
}

impl Run<'_> {
    pub(super) fn value(&self) -> &str {
        &self.text[self.start..self.end]
    }

    pub(super) fn digit_values(&self) -> Vec<u8> {
        self.value()
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect()
    }

    /// The separators between the groups, in order.
    pub(super) fn separators(&self) -> impl Iterator<Item = &str> {
        self.value()
            .split(|c: char| c.is_ascii_digit())
            .filter(|s| !s.is_empty())
    }

    fn valid(&self, kind: Format) -> bool {
        validate(kind, self.value()).is_ok()
    }

    fn candidate(&self, kind: Format, priority: u8) -> Candidate {
        Candidate {
            kind: kind.into(),
            start: self.start,
            end: self.end,
            priority,
        }
    }

    /// Next to a currency or a percent: an amount, not an identifier.
    fn is_amount(&self) -> bool {
        const AFTER: &[&str] = &[
            "руб", "Руб", "РУБ", "р.", "₽", "$", "usd", "USD", "eur", "EUR", "€", "rub", "RUB",
            "тыс", "млн", "%", "коп",
        ];
        let rest = self.text.get(self.end..).unwrap_or("");
        let rest = rest.trim_start_matches([' ', '\u{a0}']);
        AFTER.iter().any(|c| rest.starts_with(c))
            || char_before(self.text, self.start).is_some_and(|c| matches!(c, '$' | '€' | '£'))
    }
}

/// Whether the context word names a kind with its own check or layout
/// (INN, OGRN, SNILS, account, SSN, IBAN): a number it introduces is not
/// a card or a phone, even if it happens to pass their rules.
fn introduces_other_kind(cue: Option<Cue>) -> bool {
    matches!(
        cue,
        Some(Cue::Kind(
            Format::RuInn
                | Format::RuOgrn
                | Format::RuSnils
                | Format::RuBankAccount
                | Format::UsSsn
                | Format::Iban
        ))
    )
}

fn run_candidates(
    scanner: &Scanner,
    run: &Run<'_>,
    cue: Option<Cue>,
    biks: &[Group],
    out: &mut Vec<Candidate>,
) {
    let n = run.digits;
    let generic_ok = !introduces_other_kind(cue);
    let on = |kind| scanner.enabled(kind);
    if n == 9 && on(Format::UsSsn) {
        ssn(run, cue, out);
    }
    if n == 10
        && on(Format::RuPassport)
        && cue == Some(Cue::Kind(Format::RuPassport))
        && run.valid(Format::RuPassport)
    {
        out.push(run.candidate(Format::RuPassport, PRIORITY_CONTEXT));
    }
    if (n == 10 || n == 12)
        && on(Format::RuInn)
        && cue == Some(Cue::Kind(Format::RuInn))
        && run.valid(Format::RuInn)
    {
        out.push(run.candidate(Format::RuInn, PRIORITY_CONTEXT));
    }
    if n == 11 {
        if on(Format::Phone) && generic_ok {
            phones::phone(run, run.start, run.end, out);
        }
        if on(Format::RuSnils) {
            snils(run, cue, out);
        }
    }
    if (n == 13 || n == 15) && on(Format::RuOgrn) && run.valid(Format::RuOgrn) {
        let priority = if cue == Some(Cue::Kind(Format::RuOgrn)) {
            PRIORITY_CONTEXT
        } else {
            PRIORITY_LAYOUT
        };
        out.push(run.candidate(Format::RuOgrn, priority));
    }
    if (12..=19).contains(&n) && on(Format::Card) && generic_ok {
        card(run, cue, out);
    }
    if (n == 20 || n == 29) && on(Format::RuBankAccount) {
        bank_account(run, cue, biks, out);
    }
}

// ---------------------------------------------------------------------------
// card

/// Issuer prefixes of PII-RULES.md and the lengths each brand uses.
fn card_brand_ok(d: &[u8]) -> bool {
    let p2 = u32::from(d[0]) * 10 + u32::from(d[1]);
    let p4 = p2 * 100 + u32::from(d[2]) * 10 + u32::from(d[3]);
    let n = d.len();
    match d[0] {
        4 => matches!(n, 13 | 16 | 19),
        5 => (51..=55).contains(&p2) && n == 16 || p2 == 50 || (56..=59).contains(&p2),
        2 => (2200..=2204).contains(&p4) || (2221..=2720).contains(&p4) && n == 16,
        6 => true,
        3 => match p2 {
            34 | 37 => n == 15,
            36 => n == 14,
            35 => (3528..=3589).contains(&p4) && n >= 16,
            _ => false,
        },
        _ => false,
    }
}

/// A card: a Luhn-valid number in a card layout. After a card word
/// (`card`, `cc`, `карта`…) any network and length of the format (12 to
/// 19 digits) will do: JCB `3598 8993 2305 3410`, UnionPay, Diners
/// `30288610434735`, a 12-digit Maestro. Without one, the issuer prefix
/// and its lengths must match too (PII-RULES.md), so that a stray
/// Luhn-valid number (one in ten are) is not taken for a card.
fn card(run: &Run<'_>, cue: Option<Cue>, out: &mut Vec<Candidate>) {
    let with_word = cue == Some(Cue::Kind(Format::Card));
    let layout_ok = match run.lens {
        [n] => (13..=19).contains(n) || with_word && *n == 12,
        [4, 4, 4, 4] | [4, 6, 5] | [4, 6, 4] => true,
        [4, 4, 4, 4, 3] => true,
        // Shorter cards in groups: only as a whole number, never the head
        // of a longer one (`4111 1165 4184 1111`, a token that fails Luhn,
        // may have a head of 12 that passes).
        [4, 4, 4] | [4, 4, 4, 1] | [4, 4, 4, 3] | [4, 4, 5] => {
            with_word && !continues_with_digits(run.text, run.end)
        }
        _ => false,
    };
    if !layout_ok {
        return;
    }
    let mut separators = run.separators();
    if let Some(first) = separators.next() {
        if !matches!(first, " " | "-" | "\u{a0}") || separators.any(|s| s != first) {
            return;
        }
    }
    let digits = run.digit_values();
    if !with_word && !card_brand_ok(&digits) {
        return;
    }
    // 19 digits in groups of four are MIR or Maestro; a Visa followed by
    // its CVC would look the same.
    if run.lens == [4, 4, 4, 4, 3] && !matches!(digits[0], 2 | 5 | 6) {
        return;
    }
    if run.valid(Format::Card) {
        let priority = if with_word {
            PRIORITY_CARD_CONTEXT
        } else {
            PRIORITY_CARD
        };
        out.push(run.candidate(Format::Card, priority));
    }
}

/// Whether another digit group follows byte `end` (a separator, then a
/// digit): the run is the head of a longer number.
fn continues_with_digits(text: &str, end: usize) -> bool {
    let rest = text.get(end..).unwrap_or("");
    let mut chars = rest.chars();
    matches!(chars.next(), Some(' ' | '-' | '\u{a0}'))
        && chars.next().is_some_and(|c| c.is_ascii_digit())
}

// ---------------------------------------------------------------------------
// snils, ssn

fn snils(run: &Run<'_>, cue: Option<Cue>, out: &mut Vec<Candidate>) {
    if !run.valid(Format::RuSnils) {
        return;
    }
    let with_context = cue == Some(Cue::Kind(Format::RuSnils));
    if with_context {
        out.push(run.candidate(Format::RuSnils, PRIORITY_CONTEXT));
    } else if run.lens == [3, 3, 3, 2] {
        // 001-001-998 and below pass any control digits: no proof alone.
        let number = run.digit_values()[..9]
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d));
        if number > crate::token::checks::SNILS_LAST_UNCHECKED {
            out.push(run.candidate(Format::RuSnils, PRIORITY_LAYOUT));
        }
    }
}

fn ssn(run: &Run<'_>, cue: Option<Cue>, out: &mut Vec<Candidate>) {
    if !run.valid(Format::UsSsn) {
        return;
    }
    if cue == Some(Cue::Kind(Format::UsSsn)) {
        out.push(run.candidate(Format::UsSsn, PRIORITY_CONTEXT));
    } else if run.lens == [3, 2, 4] && cue.is_none() {
        out.push(run.candidate(Format::UsSsn, PRIORITY_LAYOUT));
    }
}

// ---------------------------------------------------------------------------
// bank account

/// Account classes (first three digits) of PII-RULES.md and their
/// neighbours: 301–303 interbank, 405–409 client accounts, 420–426 deposits.
fn account_class_ok(d: &[u8]) -> bool {
    let class = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    matches!(class, 301..=303 | 405..=409 | 420..=426)
}

fn bank_account(run: &Run<'_>, cue: Option<Cue>, biks: &[Group], out: &mut Vec<Candidate>) {
    if run.digits == 29 {
        // BIK and account written together: the format checks the key.
        if run.lens.first() == Some(&9) && run.valid(Format::RuBankAccount) {
            out.push(run.candidate(Format::RuBankAccount, PRIORITY_PROVEN));
        }
        return;
    }
    if !run.valid(Format::RuBankAccount) {
        return;
    }
    let account = run.digit_values();
    let from = biks.partition_point(|g| g.end + BIK_DISTANCE < run.start);
    for group in biks[from..]
        .iter()
        .take_while(|g| g.start <= run.end + BIK_DISTANCE)
    {
        let bik: Vec<u8> = run.text.as_bytes()[group.start..group.end]
            .iter()
            .map(|b| b - b'0')
            .collect();
        if crate::token::checks::bank_account_key_valid(&bik, &account) {
            out.push(run.candidate(Format::RuBankAccount, PRIORITY_ACCOUNT_BIK));
            return;
        }
    }
    // A BIK nearby that the account fails may be another bank's (`БИК
    // банка …` of a payee mentioned earlier), so the class-and-context rule
    // still applies. This makes a tokenized account next to its BIK
    // detectable again: account tokens carry no failing check of their own.
    if account_class_ok(&account) && cue == Some(Cue::Kind(Format::RuBankAccount)) {
        out.push(run.candidate(Format::RuBankAccount, PRIORITY_CONTEXT));
    }
}
