//! Shared layout helpers: digit groups and separators, rendering a token
//! into the value's layout, and the rejection-sampling draw loop.

use rand::Rng;

use super::FormatError;

/// Draws before giving up on rejection sampling. A draw is rejected with
/// probability at most 1/10 (a Luhn, INN or OGRN pass; a one-digit text
/// drawing itself), so a working CSPRNG exhausts them with probability below
/// 10⁻³². The bound exists only so that a broken generator cannot hang a
/// request.
const MAX_DRAWS: usize = 32;

/// The digits of a value whose other characters are separators, and the
/// lengths of the digit groups the separators split it into.
pub(super) struct Grouped {
    pub(super) digits: Vec<u8>,
    pub(super) groups: Vec<usize>,
}

/// Splits `value` into digit groups. Separators must sit between digits, in
/// runs of at most `max_run`; anything else is an invalid character.
pub(super) fn parse_groups(
    value: &str,
    what: &'static str,
    is_separator: fn(char) -> bool,
    max_run: usize,
) -> Result<Grouped, FormatError> {
    let mut grouped = Grouped {
        digits: Vec::with_capacity(value.len()),
        groups: Vec::new(),
    };
    let mut group = 0;
    let mut run = 0;
    for c in value.chars() {
        if let Some(digit) = ascii_digit(c) {
            if run > 0 {
                grouped.groups.push(group);
                group = 0;
                run = 0;
            }
            grouped.digits.push(digit);
            group += 1;
        } else if is_separator(c) {
            run += 1;
            if group == 0 || run > max_run {
                return Err(FormatError::InvalidLayout { what });
            }
        } else {
            return Err(FormatError::InvalidCharacter { what });
        }
    }
    if run > 0 {
        return Err(FormatError::InvalidLayout { what });
    }
    if group > 0 {
        grouped.groups.push(group);
    }
    Ok(grouped)
}

/// A value of ASCII digits only, as digit values.
pub(super) fn parse_plain_digits(value: &str, what: &'static str) -> Result<Vec<u8>, FormatError> {
    value
        .chars()
        .map(|c| ascii_digit(c).ok_or(FormatError::InvalidCharacter { what }))
        .collect()
}

/// The value of an ASCII digit (`char::to_digit` would take only ASCII too,
/// but this keeps the `u8` the checks want).
pub(super) fn ascii_digit(c: char) -> Option<u8> {
    c.is_ascii_digit().then(|| c as u8 - b'0')
}

pub(super) fn digit_char(digit: u8) -> char {
    char::from(b'0' + digit % 10)
}

/// Copies `layout`, replacing each character for which `is_slot` holds with
/// the next character of `fill`. Slots and fill are ASCII, so every other
/// character keeps its byte position.
pub(super) fn render(
    layout: &str,
    is_slot: impl Fn(char) -> bool,
    mut fill: impl Iterator<Item = char>,
) -> String {
    let mut token = String::with_capacity(layout.len());
    for c in layout.chars() {
        if is_slot(c) {
            // The fill was parsed from this very layout and has one character
            // per slot; the fallback only keeps a bug from copying the value.
            token.push(fill.next().unwrap_or('0'));
        } else {
            token.push(c);
        }
    }
    token
}

/// `layout` with its ASCII digits replaced, in order, by `digits`.
pub(super) fn render_digits(layout: &str, digits: &[u8]) -> String {
    render(
        layout,
        |c| c.is_ascii_digit(),
        digits.iter().map(|&d| digit_char(d)),
    )
}

pub(super) fn fill_random_digits<R: Rng + ?Sized>(digits: &mut [u8], rng: &mut R) {
    for digit in digits {
        *digit = rng.random_range(0..10);
    }
}

pub(super) fn next_digit(digit: &mut u8) {
    *digit = (*digit + 1) % 10;
}

/// Redraws `candidate` with `draw` until `accept` holds, at most
/// [`MAX_DRAWS`] times. False means every draw was rejected and the caller
/// must repair the candidate itself.
pub(super) fn draw_until<T: ?Sized>(
    candidate: &mut T,
    mut draw: impl FnMut(&mut T),
    accept: impl Fn(&T) -> bool,
) -> bool {
    for _ in 0..MAX_DRAWS {
        draw(candidate);
        if accept(candidate) {
            return true;
        }
    }
    false
}

/// Draws `digits[random]` until `accept` holds; if that never happens, steps
/// `digits[repair_at]` to the next digit. Each caller picks `repair_at` so
/// that this one step is enough: a control digit of a check that accepts
/// exactly one value for it, a digit whose every change moves the Luhn sum,
/// or any drawn digit when the only rule is "differ from the value".
pub(super) fn draw_digits<R: Rng + ?Sized>(
    digits: &mut [u8],
    random: std::ops::Range<usize>,
    repair_at: usize,
    accept: impl Fn(&[u8]) -> bool,
    rng: &mut R,
) {
    let accepted = draw_until(
        digits,
        |d| {
            if let Some(part) = d.get_mut(random.clone()) {
                fill_random_digits(part, rng);
            }
        },
        accept,
    );
    if !accepted {
        if let Some(digit) = digits.get_mut(repair_at) {
            next_digit(digit);
        }
    }
}
