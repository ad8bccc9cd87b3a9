//! Checked conversions of the `Client` constructor's arguments: wrong types raise `TypeError`,
//! values out of range `ValueError`, each naming the argument and what it accepts; never an
//! `OverflowError` or a panic (a duration past what a clock can add would panic later).
//!
//! The options' bounds are here; the table of options (`options.rs`) says which applies to which.

use std::time::Duration;

use elasticache_client::Counter;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt};

/// Upper bound of every duration argument, in seconds (a day).
pub const MAX_SECONDS: f64 = 86_400.0;
/// Linux refuses a TCP keepalive idle time outside 1..=32767 s, at connect time.
pub const KEEPALIVE_SECONDS: (f64, f64) = (1.0, 32_767.0);
/// More connections to one node than a host has ports is a typo.
pub const MAX_POOL_SIZE: u64 = 65_535;
/// Beyond this a node would never be marked down in practice.
pub const MAX_RETRY_ATTEMPTS: u64 = 1_000;
/// The protocol's hard limit on a value, 1 GiB (`elasticache_proto::MAX_VALUE_LEN_LIMIT`): a
/// larger `max_value_length` would let a hostile reply make the client allocate without bound.
pub const MAX_VALUE_LENGTH: u64 = 1 << 30;
/// A smaller `max_value_length` would refuse most pickled values.
pub const MIN_VALUE_LENGTH: u64 = 1024;
/// The most `max_large_value_length` allows (a value read is allocated whole before its
/// chunks come, so a bound is always in force).
pub const MAX_LARGE_VALUE_LENGTH: u64 = 1 << 40;
/// `max_large_value_length`'s default, 64 MiB (`elasticache_client::DEFAULT_MAX_LARGE_VALUE_LEN`).
pub const DEFAULT_MAX_LARGE_VALUE_LENGTH: i64 = 64 << 20;
/// The longest lease and early-recompute window of get-or-lease, in seconds: memcached reads
/// a TTL over 30 days as a Unix time.
pub const MAX_LEASE_SECONDS: u64 = 60 * 60 * 24 * 30;

/// Exports the bounds above to Python (the options' bounds are also in `_native.OPTIONS`;
/// `MAX_LEASE_SECONDS` bounds `get_or_set`'s lease arguments).
pub fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("MAX_SECONDS", MAX_SECONDS)?;
    module.add("MAX_KEEPALIVE_SECONDS", KEEPALIVE_SECONDS.1)?;
    module.add("MAX_POOL_SIZE", MAX_POOL_SIZE)?;
    module.add("MAX_RETRY_ATTEMPTS", MAX_RETRY_ATTEMPTS)?;
    module.add("MAX_VALUE_LENGTH", MAX_VALUE_LENGTH)?;
    module.add("MIN_VALUE_LENGTH", MIN_VALUE_LENGTH)?;
    module.add("MAX_LEASE_SECONDS", MAX_LEASE_SECONDS)?;
    module.add("LARGE_FLAG", elasticache_client::LARGE_FLAG)?;
    Ok(())
}

/// A number argument as given (an `int` or a `float`, not a `bool`). An `int` too large for a
/// float becomes an infinity, so that the range check, which names the argument, refuses it.
#[derive(Debug, Clone, Copy)]
pub struct Number(pub f64);

impl<'a, 'py> FromPyObject<'a, 'py> for Number {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<PyBool>()
            || !(obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>())
        {
            return Err(PyTypeError::new_err(format!(
                "expected an int or a float, not {}",
                obj.get_type().name()?
            )));
        }
        match obj.extract::<f64>() {
            Ok(value) => Ok(Number(value)),
            Err(_) if obj.gt(0)? => Ok(Number(f64::INFINITY)),
            Err(_) => Ok(Number(f64::NEG_INFINITY)),
        }
    }
}

/// A whole-number argument as given (an `int`, not a `bool`), saturated to `i128`'s range so
/// that the range check, which names the argument, refuses what does not fit.
#[derive(Debug, Clone, Copy)]
pub struct Whole(pub i128);

impl<'a, 'py> FromPyObject<'a, 'py> for Whole {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
            return Err(PyTypeError::new_err(format!(
                "expected an int, not {}",
                obj.get_type().name()?
            )));
        }
        match obj.extract::<i128>() {
            Ok(value) => Ok(Whole(value)),
            Err(_) if obj.gt(0)? => Ok(Whole(i128::MAX)),
            Err(_) => Ok(Whole(i128::MIN)),
        }
    }
}

/// What a duration argument accepts, for its error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    /// 0 is a valid duration.
    Allowed,
    /// 0 is refused: a zero deadline would fail every operation (`None` means no deadline).
    Refused,
    /// 0 means "none" (no idle timeout, no keepalive, no background discovery).
    MeansNone,
}

/// A duration argument: `None` (where `Option`), or seconds from 0 to [`MAX_SECONDS`].
pub fn seconds(name: &str, value: Option<Number>, zero: Zero) -> PyResult<Option<Duration>> {
    let Some(Number(s)) = value else {
        return Ok(None);
    };
    if s == 0.0 && zero == Zero::MeansNone {
        return Ok(None);
    }
    let low_ok = if zero == Zero::Refused {
        s > 0.0
    } else {
        s >= 0.0
    };
    // NaN fails both comparisons.
    if !(low_ok && s <= MAX_SECONDS) {
        let (low, none) = match zero {
            Zero::Refused => ("> 0", ", or None for no deadline"),
            Zero::Allowed | Zero::MeansNone => (">= 0", ""),
        };
        return Err(PyValueError::new_err(format!(
            "{name} must be a number of seconds {low} and <= {MAX_SECONDS}{none}, not {s:?}"
        )));
    }
    Ok(Duration::try_from_secs_f64(s).ok())
}

/// The TCP keepalive idle time: `None` or 0 (off), or whole seconds the OS accepts.
pub fn keepalive(value: Option<Number>) -> PyResult<Option<Duration>> {
    let Some(Number(s)) = value else {
        return Ok(None);
    };
    let (low, high) = KEEPALIVE_SECONDS;
    if s == 0.0 {
        return Ok(None);
    }
    if !(low..=high).contains(&s) {
        return Err(PyValueError::new_err(format!(
            "socket_keepalive must be None, 0 (off) or seconds from {low} to {high}, not {s:?}"
        )));
    }
    Ok(Duration::try_from_secs_f64(s).ok())
}

/// A whole-number argument within `low..=high`.
pub fn whole(name: &str, Whole(value): Whole, low: u64, high: u64) -> PyResult<u64> {
    u64::try_from(value)
        .ok()
        .filter(|v| (low..=high).contains(v))
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "{name} must be a whole number from {low} to {high}, not {value}"
            ))
        })
}

/// An `incr`/`decr` delta: an `int` whose magnitude fits memcached's 64-bit counters. Anything
/// else is a `TypeError`; too large a magnitude a `ValueError` (as documented), never an
/// `OverflowError`.
#[derive(Debug, Clone, Copy)]
pub struct Delta {
    pub negative: bool,
    pub magnitude: u64,
}

impl Delta {
    pub const ONE: Delta = Delta {
        negative: false,
        magnitude: 1,
    };

    /// The counter command that applies it: `decr` of the magnitude when negative.
    pub fn counter(&self) -> Counter {
        if self.negative {
            Counter::Decr
        } else {
            Counter::Incr
        }
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Delta {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if !obj.is_instance_of::<PyInt>() {
            return Err(PyTypeError::new_err(format!(
                "delta must be an int, not {}",
                obj.get_type().name()?
            )));
        }
        let negative = obj.lt(0)?;
        let magnitude = if negative { obj.neg()? } else { obj.to_owned() };
        let magnitude = magnitude.extract::<u64>().map_err(|_| {
            PyValueError::new_err(format!(
                "delta must be less than 2**64 in magnitude (memcached counters are 64-bit), \
                 not {}",
                obj.to_owned()
            ))
        })?;
        Ok(Delta {
            negative,
            magnitude,
        })
    }
}

/// memcached's expiry as the native API takes it (0: never expires, negative: already
/// expired, over 30 days: a Unix time): an `int` that fits in 64 bits, else a `TypeError` or
/// `ValueError` naming `exptime` (never an `OverflowError`).
#[derive(Debug, Clone, Copy)]
pub struct Exptime(pub i64);

impl Exptime {
    pub const NEVER: Exptime = Exptime(0);
}

impl<'a, 'py> FromPyObject<'a, 'py> for Exptime {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
            return Err(PyTypeError::new_err(format!(
                "exptime must be an int, not {}",
                obj.get_type().name()?
            )));
        }
        obj.extract::<i64>().map(Exptime).map_err(|_| {
            PyValueError::new_err(format!(
                "exptime must fit in 64 bits (0: never expires, negative: already expired, \
                 over 30 days: a Unix time), not {}",
                obj.to_owned()
            ))
        })
    }
}
