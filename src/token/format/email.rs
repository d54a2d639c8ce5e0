//! The `email` format: addresses, and tokens on an `.invalid` domain.

use rand::Rng;

use super::classes::replace_by_class;
use super::FormatError;

/// RFC 2606 top-level domain appended to email token domains.
const EMAIL_TOKEN_SUFFIX: &str = ".invalid";
/// RFC 5321 limits: whole address (a path of 256 minus the brackets), local
/// part, domain label.
const MAX_EMAIL_BYTES: usize = 254;
const MAX_LOCAL_PART_BYTES: usize = 64;
const MAX_DOMAIN_LABEL_BYTES: usize = 63;

/// RFC 5322 `atext` (plus RFC 6531 non-ASCII letters and digits): what a
/// dot-atom local part is made of besides its dots.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && c.is_alphanumeric())
}

/// Splits a valid address into its local part and domain.
pub(super) fn parse_email(value: &str) -> Result<(&str, &str), FormatError> {
    if value.len() > MAX_EMAIL_BYTES {
        return Err(FormatError::InvalidLength {
            expected: "an address of at most 254 bytes",
        });
    }
    let Some((local, domain)) = value.split_once('@') else {
        return Err(FormatError::InvalidPart {
            expected: "an address of the form local@domain",
        });
    };
    check_local_part(local)?;
    check_domain(domain)?;
    Ok((local, domain))
}

fn check_local_part(local: &str) -> Result<(), FormatError> {
    const WHAT: &str = "email local part";
    if local.is_empty() || local.len() > MAX_LOCAL_PART_BYTES {
        return Err(FormatError::InvalidLength {
            expected: "a local part of 1 to 64 bytes",
        });
    }
    if !local.chars().all(|c| c == '.' || is_atext(c)) {
        return Err(FormatError::InvalidCharacter { what: WHAT });
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(FormatError::InvalidLayout { what: WHAT });
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), FormatError> {
    const WHAT: &str = "email domain";
    if !domain.contains('.') {
        return Err(FormatError::InvalidPart {
            expected: "a domain with at least one dot",
        });
    }
    for label in domain.split('.') {
        if !label.chars().all(|c| c == '-' || c.is_alphanumeric()) {
            return Err(FormatError::InvalidCharacter { what: WHAT });
        }
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return Err(FormatError::InvalidLayout { what: WHAT });
        }
        if label.len() > MAX_DOMAIN_LABEL_BYTES {
            return Err(FormatError::InvalidLength {
                expected: "domain labels of at most 63 bytes",
            });
        }
    }
    Ok(())
}

pub(super) fn email_token<R: Rng + ?Sized>((local, domain): (&str, &str), rng: &mut R) -> String {
    let mut token = replace_by_class(local, rng);
    token.reserve(1 + domain.len() + EMAIL_TOKEN_SUFFIX.len());
    token.push('@');
    token.push_str(domain);
    token.push_str(EMAIL_TOKEN_SUFFIX);
    token
}
