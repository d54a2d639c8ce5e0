//! Letter and digit classes (text, email local parts): which characters a
//! token replaces, and the class-preserving replacement.

use rand::Rng;

use super::layout::draw_until;

/// Character classes a token replaces; anything else is copied as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    Digit,
    LatinUpper,
    LatinLower,
    CyrillicUpper,
    CyrillicLower,
}

impl Class {
    pub(super) fn of(c: char) -> Option<Class> {
        match c {
            '0'..='9' => Some(Class::Digit),
            'A'..='Z' => Some(Class::LatinUpper),
            'a'..='z' => Some(Class::LatinLower),
            'А'..='Я' | 'Ё' => Some(Class::CyrillicUpper),
            'а'..='я' | 'ё' => Some(Class::CyrillicLower),
            _ => None,
        }
    }

    /// First character and size of the contiguous alphabet a token draws
    /// from. Ё and ё sit outside А–Я and а–я, so they are read but not
    /// drawn; all Cyrillic letters are two UTF-8 bytes, so byte lengths hold.
    fn alphabet(self) -> (char, u32) {
        match self {
            Class::Digit => ('0', 10),
            Class::LatinUpper => ('A', 26),
            Class::LatinLower => ('a', 26),
            Class::CyrillicUpper => ('А', 32),
            Class::CyrillicLower => ('а', 32),
        }
    }

    fn nth(self, index: u32) -> char {
        let (first, size) = self.alphabet();
        // Every alphabet is a run of valid scalar values, so this is Some.
        char::from_u32(u32::from(first) + index % size).unwrap_or(first)
    }

    pub(super) fn random<R: Rng + ?Sized>(self, rng: &mut R) -> char {
        let (_, size) = self.alphabet();
        self.nth(rng.random_range(0..size))
    }

    /// The character after `c` in this class's alphabet, wrapping around
    /// (Ё and ё, outside it, step to the first letter).
    pub(super) fn next(self, c: char) -> char {
        let (first, size) = self.alphabet();
        let index = u32::from(c)
            .checked_sub(u32::from(first))
            .filter(|&i| i < size)
            .map_or(0, |i| i + 1);
        self.nth(index)
    }
}

pub(super) fn is_replaceable(c: char) -> bool {
    Class::of(c).is_some()
}

/// A copy of `value` with each letter and digit of a [`Class`] replaced by a
/// random one of the same class, different from `value` whenever it has
/// such a character, and of the same byte length.
pub(super) fn replace_by_class<R: Rng + ?Sized>(value: &str, rng: &mut R) -> String {
    let mut token = String::with_capacity(value.len());
    if !value.chars().any(is_replaceable) {
        token.push_str(value);
        return token;
    }
    let draw = |t: &mut String| {
        t.clear();
        t.extend(
            value
                .chars()
                .map(|c| Class::of(c).map_or(c, |class| class.random(rng))),
        );
    };
    if !draw_until(&mut token, draw, |t| t.as_str() != value) {
        token = step_first_replaceable(value);
    }
    token
}

/// `value` with its first replaceable character stepped to the next of its
/// class: the deterministic repair of [`replace_by_class`].
fn step_first_replaceable(value: &str) -> String {
    let mut stepped = false;
    value
        .chars()
        .map(|c| match Class::of(c) {
            Some(class) if !stepped => {
                stepped = true;
                class.next(c)
            }
            _ => c,
        })
        .collect()
}
