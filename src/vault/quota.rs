//! Counting new values against the new-value limits (`policy::quota`), and
//! the shared window counters the detokenize limits use across replicas.
//!
//! A call's new values (items that get a new token: deterministic values
//! without a stored token, and every random-mode item) are charged to the
//! window counters before anything is stored; a charge over a limit stores
//! nothing and is refused with its alert. Counter keys are the principal's
//! name and keyed hashes (of the subject, the shape, the actor) under a key
//! derived from the system key: never a subject id, a value or an actor
//! name.
//!
//! A shape is a format with the characters its tokens keep. It is found by
//! drawing a few tokens for the value: the characters every draw kept are
//! the shape, the others are drawn, and the shape's space is the product of
//! their alphabets (an estimate: a format's own rules, such as a card
//! token's failed Luhn check, are not counted).

use std::sync::Arc;

use super::{TokenizeItem, Vault, VaultError};
use crate::config::NewValueLimits;
use crate::crypto::{SecretKey, SubjectHash};
use crate::policy::quota::{NewValueCaller, QuotaAlert, QuotaScope, ResolvedLimits};
use crate::store::counters::{window_start, Charge, Charged, WindowCounters};
use crate::token::format::Format;
use crate::token::template::TokenFormat;

/// The principal of `serve --dev`'s admin key: its new-value limits are a
/// bulk importer's.
pub const DEV_ADMIN_PRINCIPAL: &str = "dev-admin";

/// Tokens drawn to tell kept characters from drawn ones: a drawn digit is
/// taken for kept with probability 10^-4.
const SHAPE_PROBES: usize = 4;

/// The vault's counters and limits.
pub struct Quotas {
    pub(super) counters: Arc<dyn WindowCounters>,
    /// Derived from the system key: counter keys are hashed with it.
    key: SecretKey,
    pub(super) limits: NewValueLimits,
}

impl Quotas {
    pub fn new(counters: Arc<dyn WindowCounters>, system_key: &SecretKey) -> Self {
        Quotas {
            counters,
            key: system_key.derive(b"tokenvault rate counter keys v1"),
            limits: NewValueLimits::default(),
        }
    }

    fn hex_mac(&self, parts: &[&[u8]]) -> String {
        hex::encode(&self.key.mac(parts)[..16])
    }
}

/// The shape of `value` in `format`: a key (kept characters, a marker per
/// drawn one) and the number of tokens of that shape. None when the space
/// is too large to matter (opaque tokens) or the value has no token.
pub(crate) fn shape_of(format: &TokenFormat, value: &str) -> Option<(String, f64)> {
    if matches!(format, TokenFormat::Builtin(Format::Opaque)) {
        return None;
    }
    let chars: Vec<char> = value.chars().collect();
    let mut drawn = vec![false; chars.len()];
    let mut rng = rand::rng();
    for _ in 0..SHAPE_PROBES {
        let token = format.generate_token(value, &mut rng).ok()?;
        for (i, (v, t)) in chars.iter().zip(token.chars()).enumerate() {
            if *v != t {
                drawn[i] = true;
            }
        }
    }
    let mut key = String::with_capacity(value.len() + 16);
    key.push_str(format.name());
    key.push('\u{0}');
    let mut space = 1.0f64;
    for (c, drawn) in chars.iter().zip(drawn) {
        if drawn {
            space *= alphabet_size(*c);
            key.push('\u{1}');
        } else {
            key.push(*c);
        }
    }
    Some((key, space))
}

/// How many characters a drawn character of `c`'s class can be.
fn alphabet_size(c: char) -> f64 {
    match c {
        'a'..='z' | 'A'..='Z' => 26.0,
        'а'..='я' | 'А'..='Я' | 'ё' | 'Ё' => 33.0,
        _ => 10.0,
    }
}

impl Vault {
    /// Sets the new-value limits (from `[new_value_limits]`).
    pub fn set_new_value_limits(&mut self, limits: NewValueLimits) {
        self.quotas.limits = limits;
    }

    /// The window counters (for the detokenize limits' shared windows).
    pub fn counters(&self) -> Arc<dyn WindowCounters> {
        Arc::clone(&self.quotas.counters)
    }

    /// The key counter keys are hashed with (derived from the system key).
    pub fn counter_key(&self) -> &SecretKey {
        &self.quotas.key
    }

    /// Uses `counters` for the limits (the store's shared or persisted
    /// ones).
    pub fn set_counters(&mut self, counters: Arc<dyn WindowCounters>) {
        self.quotas.counters = counters;
    }

    /// Charges the new values among `pending` (positions into `items`) to
    /// the caller's limits: Ok with the warnings to audit, or the refusal
    /// (nothing charged).
    pub(super) async fn charge_new_values(
        &self,
        caller: &NewValueCaller,
        subject: SubjectHash,
        items: &[TokenizeItem],
        formats: &[TokenFormat],
        pending: &[usize],
    ) -> Result<Vec<QuotaAlert>, VaultError> {
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let limits = ResolvedLimits::of(&self.quotas.limits, &caller.principal);
        let now = crate::clock::unix_now();
        let window_seconds = i64::try_from(limits.window_seconds).unwrap_or(i64::MAX);
        let window = window_start(now, window_seconds);
        let values = pending.len() as u64;
        let subject_hex = self.quotas.hex_mac(&[b"subject", subject.as_bytes()]);
        let principal = caller.principal.as_bytes();
        let mut charges = vec![
            Charge {
                key: format!("nv/sp/{subject_hex}/{}", caller.principal),
                window_start: window,
                window_seconds,
                amount: values,
                limit: limits.per_subject_per_principal,
            },
            Charge {
                key: format!("nv/s/{subject_hex}"),
                window_start: window,
                window_seconds,
                amount: values,
                limit: limits.per_subject,
            },
            Charge {
                key: format!("nv/p/{}", caller.principal),
                window_start: window,
                window_seconds,
                amount: values,
                limit: limits.per_principal,
            },
        ];
        let mut scopes = vec![
            QuotaScope::SubjectPerPrincipal,
            QuotaScope::Subject,
            QuotaScope::Principal,
        ];
        // Shapes whose quota is below the principal's total; others are
        // bounded by that total already.
        let mut shapes: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for &i in pending {
            if let Some((shape, space)) = shape_of(&formats[i], &items[i].value) {
                let quota = limits.shape_quota(space);
                if quota < limits.per_principal {
                    shapes.entry(shape).or_insert((0, quota)).0 += 1;
                }
            }
        }
        for (shape, (amount, quota)) in shapes {
            charges.push(Charge {
                key: format!(
                    "nv/shape/{}/{}",
                    self.quotas
                        .hex_mac(&[b"shape", principal, shape.as_bytes()]),
                    caller.principal
                ),
                window_start: window,
                window_seconds,
                amount,
                limit: quota,
            });
            scopes.push(QuotaScope::Shape);
        }
        let alert = |exceeded, index: usize, used| QuotaAlert {
            exceeded,
            scope: scopes[index],
            principal: Arc::clone(&caller.principal),
            actor: caller.actor.clone(),
            rpc: caller.rpc,
            subject,
            values: charges[index].amount,
            used,
            limit: charges[index].limit,
            window_seconds: limits.window_seconds,
        };
        match self.quotas.counters.charge(&charges, now).await? {
            Charged::Refused { index, used } => {
                let refused = alert(true, index, used);
                refused.raise();
                Err(VaultError::NewValuesLimited(refused))
            }
            Charged::Admitted(after) => {
                let mut warnings = Vec::new();
                for (index, after) in after.into_iter().enumerate() {
                    let before = after - charges[index].amount;
                    if limits.crosses_warning(before, after, charges[index].limit) {
                        let warning = alert(false, index, before);
                        warning.raise();
                        warnings.push(warning);
                    }
                }
                Ok(warnings)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::template::TokenFormat;

    #[test]
    fn a_cards_shape_is_its_first_six_and_last_four() {
        let card = TokenFormat::Builtin(Format::Card);
        let (shape, space) = shape_of(&card, "4276380000025671").expect("shape");
        let (other, _) = shape_of(&card, "4276389990055671").expect("shape");
        assert_eq!(shape, other, "same first six and last four, same shape");
        assert_eq!(space, 1e6);
        let (third, _) = shape_of(&card, "4276380000025689").expect("shape");
        assert_ne!(shape, third);
        assert!(shape_of(&TokenFormat::Builtin(Format::Opaque), "anything").is_none());
        let (_, small) = shape_of(&TokenFormat::Builtin(Format::Text), "ab").expect("shape");
        assert_eq!(small, 676.0);
    }
}
