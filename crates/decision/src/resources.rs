//! Resource vectors in exact integer milli-units.
//!
//! Agents advertise capacity and tasks request amounts of four kinds of resource. The wire
//! protocol carries them as floating-point *units* (1.5 cpu cores), but every stored and compared
//! amount is an integer count of *milli-units* (1500). Reservations are added and removed in Redis
//! with `HINCRBY`, thousands of times per agent; with floats the reserved total would drift away
//! from zero after a reserve/release cycle, with integers it returns exactly to where it was.
//!
//! Amounts are capped at [`MAX_AMOUNT`] whole units so that milli-unit values stay below 2^53 and
//! are therefore represented exactly by the doubles that Lua scripts in Redis compute with.
//!
//! The kind enum lives in `resources/kind.rs` and the fit and load rules in `resources/load.rs`;
//! both are re-exported here, so callers only ever name `decision::resources`.

mod kind;
mod load;

use std::collections::BTreeMap;

pub use kind::ResourceKind;
pub use load::{fits_within, peak_utilization, utilization};

/// Largest amount of any one resource, in whole units.
///
/// `1e12 * 1000 = 1e15 < 2^53`, so every milli-unit value (and the sum of two of them) is an
/// exact integer in an IEEE double, which is the only number type Redis Lua has.
pub const MAX_AMOUNT: f64 = 1e12;

/// Milli-units per whole unit.
const MILLI_PER_UNIT: f64 = 1000.0;

/// Why a resource map from the wire was rejected.
///
/// Each variant has a stable [`reason_code`](ResourceError::reason_code) so replies to clients
/// can be matched on without parsing the human-readable message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// The name is not one of the known [`ResourceKind`]s.
    #[error("unknown resource kind {0:?} (expected one of cpu, memory, tokens, time)")]
    UnknownKind(String),
    /// The amount is NaN or infinite.
    #[error("resource {0} must be a finite number")]
    NotFinite(ResourceKind),
    /// The amount is below zero.
    #[error("resource {0} must not be negative (got {1})")]
    Negative(ResourceKind, f64),
    /// The amount is above [`MAX_AMOUNT`].
    #[error("resource {0} is too large (got {1}, maximum is {MAX_AMOUNT})")]
    TooLarge(ResourceKind, f64),
    /// The same kind appears twice under different spellings (`"cpu"` and `"CPU"`); rejected
    /// rather than picking one silently.
    #[error("resource {0} is given more than once")]
    Duplicate(ResourceKind),
}

impl ResourceError {
    /// A stable machine-readable code for replies and metrics labels.
    pub fn reason_code(&self) -> &'static str {
        match self {
            ResourceError::UnknownKind(_) => "unknown_resource",
            ResourceError::NotFinite(_) => "resource_not_finite",
            ResourceError::Negative(..) => "negative_resource",
            ResourceError::TooLarge(..) => "resource_too_large",
            ResourceError::Duplicate(_) => "duplicate_resource",
        }
    }
}

/// An amount of each resource kind, in milli-units (1.5 units = 1500).
///
/// Used for agent capacity, amounts reserved on an agent, and what a task requires. A kind that
/// is absent is simply zero: an agent with zero capacity of a kind cannot take any task needing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU, milli-cores.
    pub cpu: u64,
    /// Memory, milli-units.
    pub memory: u64,
    /// Tokens, milli-tokens.
    pub tokens: u64,
    /// Time, milli-seconds.
    pub time: u64,
}

impl Resources {
    /// The milli-unit amount of one kind.
    pub fn get(&self, kind: ResourceKind) -> u64 {
        match kind {
            ResourceKind::Cpu => self.cpu,
            ResourceKind::Memory => self.memory,
            ResourceKind::Tokens => self.tokens,
            ResourceKind::Time => self.time,
        }
    }

    /// Sets the milli-unit amount of one kind.
    pub fn set(&mut self, kind: ResourceKind, milli: u64) {
        match kind {
            ResourceKind::Cpu => self.cpu = milli,
            ResourceKind::Memory => self.memory = milli,
            ResourceKind::Tokens => self.tokens = milli,
            ResourceKind::Time => self.time = milli,
        }
    }

    /// Every kind with its milli-unit amount, in [`ResourceKind::ALL`] order (zeros included).
    pub fn iter(&self) -> impl Iterator<Item = (ResourceKind, u64)> + '_ {
        ResourceKind::ALL
            .into_iter()
            .map(|kind| (kind, self.get(kind)))
    }

    /// True when every kind is zero.
    pub fn is_zero(&self) -> bool {
        self.iter().all(|(_, milli)| milli == 0)
    }

    /// Validates and converts a wire map of whole units into milli-units.
    ///
    /// Every entry is checked (a bad entry is never silently dropped) and the first error in key
    /// order is reported, so the same bad input always yields the same error.
    pub fn from_units(map: &BTreeMap<String, f64>) -> Result<Resources, ResourceError> {
        let mut out = Resources::default();
        let mut seen: Vec<ResourceKind> = Vec::with_capacity(ResourceKind::ALL.len());
        for (name, &value) in map {
            let kind = ResourceKind::parse(name)
                .ok_or_else(|| ResourceError::UnknownKind(name.clone()))?;
            if seen.contains(&kind) {
                return Err(ResourceError::Duplicate(kind));
            }
            seen.push(kind);
            out.set(kind, units_to_milli(kind, value)?);
        }
        Ok(out)
    }

    /// Converts back to whole units for the wire.
    ///
    /// All four kinds are present, zeros included, so an advertised capacity is explicit about
    /// what the agent does *not* have.
    pub fn to_units(&self) -> BTreeMap<String, f64> {
        self.iter()
            .map(|(kind, milli)| (kind.as_str().to_owned(), milli as f64 / MILLI_PER_UNIT))
            .collect()
    }

    /// Kind-wise sum, clamped at `u64::MAX` (never reached for validated amounts).
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        self.zip_with(other, u64::saturating_add)
    }

    /// Kind-wise difference, clamped at zero so a duplicated release cannot underflow.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        self.zip_with(other, u64::saturating_sub)
    }

    fn zip_with(&self, other: &Resources, op: impl Fn(u64, u64) -> u64) -> Resources {
        let mut out = Resources::default();
        for kind in ResourceKind::ALL {
            out.set(kind, op(self.get(kind), other.get(kind)));
        }
        out
    }
}

/// Validates one wire amount and converts it to milli-units.
fn units_to_milli(kind: ResourceKind, value: f64) -> Result<u64, ResourceError> {
    if !value.is_finite() {
        return Err(ResourceError::NotFinite(kind));
    }
    if value < 0.0 {
        return Err(ResourceError::Negative(kind, value));
    }
    if value > MAX_AMOUNT {
        return Err(ResourceError::TooLarge(kind, value));
    }
    // In range [0, 1e15] after scaling, so the cast neither saturates nor loses integers.
    Ok((value * MILLI_PER_UNIT).round() as u64)
}

/// Free-function form of [`Resources::from_units`].
pub fn from_units(map: &BTreeMap<String, f64>) -> Result<Resources, ResourceError> {
    Resources::from_units(map)
}

/// Free-function form of [`Resources::saturating_add`].
pub fn saturating_add(a: &Resources, b: &Resources) -> Resources {
    a.saturating_add(b)
}

/// Free-function form of [`Resources::saturating_sub`].
pub fn saturating_sub(a: &Resources, b: &Resources) -> Resources {
    a.saturating_sub(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(entries: &[(&str, f64)]) -> BTreeMap<String, f64> {
        entries.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
    }

    fn res(cpu: u64, memory: u64, tokens: u64, time: u64) -> Resources {
        Resources {
            cpu,
            memory,
            tokens,
            time,
        }
    }

    #[test]
    fn get_set_and_iter_agree() {
        let mut r = Resources::default();
        for (i, kind) in ResourceKind::ALL.into_iter().enumerate() {
            r.set(kind, (i as u64 + 1) * 10);
        }
        assert_eq!(r, res(10, 20, 30, 40));
        let listed: Vec<_> = r.iter().collect();
        assert_eq!(listed.len(), 4);
        for (kind, milli) in listed {
            assert_eq!(r.get(kind), milli);
        }
    }

    #[test]
    fn from_units_converts_to_milli() {
        let r = Resources::from_units(&units(&[("cpu", 1.5), ("memory", 512.0)])).unwrap();
        assert_eq!(r, res(1500, 512_000, 0, 0));
    }

    #[test]
    fn from_units_rounds_to_nearest_milli() {
        let r = from_units(&units(&[("cpu", 0.0015), ("time", 0.1 + 0.2)])).unwrap();
        assert_eq!(r.cpu, 2);
        assert_eq!(r.time, 300);
    }

    #[test]
    fn from_units_accepts_upper_case_names() {
        let r = Resources::from_units(&units(&[("CPU", 2.0), ("TOKENS", 100.0)])).unwrap();
        assert_eq!(r, res(2000, 0, 100_000, 0));
    }

    #[test]
    fn from_units_empty_is_zero() {
        let r = Resources::from_units(&BTreeMap::new()).unwrap();
        assert!(r.is_zero());
    }

    #[test]
    fn from_units_rejects_unknown_kind() {
        let err = Resources::from_units(&units(&[("gpu", 1.0)])).unwrap_err();
        assert_eq!(err, ResourceError::UnknownKind("gpu".into()));
        assert_eq!(err.reason_code(), "unknown_resource");
    }

    #[test]
    fn from_units_rejects_non_finite() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = Resources::from_units(&units(&[("cpu", bad)])).unwrap_err();
            assert_eq!(err, ResourceError::NotFinite(ResourceKind::Cpu));
            assert_eq!(err.reason_code(), "resource_not_finite");
        }
    }

    #[test]
    fn from_units_rejects_negative() {
        let err = Resources::from_units(&units(&[("memory", -1.0)])).unwrap_err();
        assert_eq!(err, ResourceError::Negative(ResourceKind::Memory, -1.0));
        assert_eq!(err.reason_code(), "negative_resource");
    }

    #[test]
    fn from_units_accepts_negative_zero_as_zero() {
        let r = Resources::from_units(&units(&[("cpu", -0.0)])).unwrap();
        assert_eq!(r.cpu, 0);
    }

    #[test]
    fn from_units_bounds_at_max_amount() {
        let r = Resources::from_units(&units(&[("tokens", MAX_AMOUNT)])).unwrap();
        assert_eq!(r.tokens, 1_000_000_000_000_000);
        assert!(r.tokens < (1u64 << 53));
        let err = Resources::from_units(&units(&[("tokens", MAX_AMOUNT * 2.0)])).unwrap_err();
        assert_eq!(
            err,
            ResourceError::TooLarge(ResourceKind::Tokens, MAX_AMOUNT * 2.0)
        );
        assert_eq!(err.reason_code(), "resource_too_large");
    }

    #[test]
    fn from_units_checks_every_entry() {
        // A good entry first must not hide a bad one later.
        let err = Resources::from_units(&units(&[("cpu", 1.0), ("time", -5.0)])).unwrap_err();
        assert_eq!(err, ResourceError::Negative(ResourceKind::Time, -5.0));
    }

    #[test]
    fn from_units_reports_first_error_in_key_order() {
        let err = Resources::from_units(&units(&[("zzz", 1.0), ("cpu", f64::NAN)])).unwrap_err();
        assert_eq!(err, ResourceError::NotFinite(ResourceKind::Cpu));
    }

    #[test]
    fn from_units_rejects_duplicate_spellings() {
        let err = Resources::from_units(&units(&[("CPU", 1.0), ("cpu", 2.0)])).unwrap_err();
        assert_eq!(err, ResourceError::Duplicate(ResourceKind::Cpu));
        assert_eq!(err.reason_code(), "duplicate_resource");
    }

    #[test]
    fn error_messages_name_the_problem() {
        let msg = ResourceError::TooLarge(ResourceKind::Cpu, 2e12).to_string();
        assert!(msg.contains("cpu") && msg.contains("too large"), "{msg}");
        let msg = ResourceError::UnknownKind("gpu".into()).to_string();
        assert!(msg.contains("gpu"), "{msg}");
    }

    #[test]
    fn to_units_lists_all_kinds() {
        let m = res(1500, 0, 0, 250).to_units();
        assert_eq!(m.len(), 4);
        assert_eq!(m["cpu"], 1.5);
        assert_eq!(m["memory"], 0.0);
        assert_eq!(m["time"], 0.25);
    }

    #[test]
    fn units_round_trip() {
        let input = units(&[
            ("cpu", 0.125),
            ("memory", 4096.0),
            ("tokens", 1e9),
            ("time", 30.0),
        ]);
        let r = Resources::from_units(&input).unwrap();
        assert_eq!(r.to_units(), input);
        assert_eq!(Resources::from_units(&r.to_units()).unwrap(), r);
    }

    #[test]
    fn add_then_sub_is_exact() {
        let base = res(100, 200, 300, 400);
        let delta = Resources::from_units(&units(&[("cpu", 0.1), ("time", 0.7)])).unwrap();
        let mut acc = base;
        for _ in 0..1000 {
            acc = saturating_add(&acc, &delta);
        }
        for _ in 0..1000 {
            acc = saturating_sub(&acc, &delta);
        }
        assert_eq!(acc, base);
    }

    #[test]
    fn saturating_math_clamps() {
        let big = res(u64::MAX, 0, 0, 0);
        assert_eq!(big.saturating_add(&res(1, 0, 0, 0)).cpu, u64::MAX);
        assert_eq!(
            res(1, 2, 3, 4).saturating_sub(&res(5, 1, 5, 4)),
            res(0, 1, 0, 0)
        );
    }
}
