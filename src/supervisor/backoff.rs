//! Restart delays: exponential from `initial`, capped at `max`, with ±20 % jitter so gateways
//! that crashed together do not restart in lockstep; back to `initial` after a healthy period.

use std::time::Duration;

use crate::topology::Backoff;

/// The delay before a restart, after `failures` failures without a healthy period in between.
/// The first restart is immediate (a one-off crash costs no downtime); then `initial`, doubling
/// up to `max`. `unit` in `[0, 1)` picks the jitter.
pub fn delay(backoff: &Backoff, failures: u32, unit: f64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exponential = backoff.initial * 2f64.powi((failures - 1).min(30) as i32);
    let capped = exponential.min(backoff.max);
    let jitter = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
    Duration::from_secs_f64((capped * jitter).min(backoff.max))
}

/// A uniform number in `[0, 1)` for jitter.
pub fn jitter_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: 0.5,
            max: 30.0,
            reset_after: 60.0,
        }
    }

    #[test]
    fn doubles_then_caps() {
        let b = backoff();
        assert_eq!(delay(&b, 0, 0.5), Duration::ZERO);
        assert_eq!(delay(&b, 1, 0.5), Duration::from_secs_f64(0.5));
        assert_eq!(delay(&b, 2, 0.5), Duration::from_secs_f64(1.0));
        assert_eq!(delay(&b, 4, 0.5), Duration::from_secs_f64(4.0));
        assert_eq!(delay(&b, 10, 0.5), Duration::from_secs_f64(30.0));
        assert_eq!(delay(&b, u32::MAX, 0.99), Duration::from_secs_f64(30.0));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let b = backoff();
        assert_eq!(delay(&b, 3, 0.0), Duration::from_secs_f64(1.6));
        assert!(delay(&b, 3, 0.999) < Duration::from_secs_f64(2.4));
        for _ in 0..100 {
            let unit = jitter_unit();
            assert!((0.0..1.0).contains(&unit));
        }
    }
}
