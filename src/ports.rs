//! Port footprints and pools.
//!
//! An OpenClaw 2026.9 gateway on base port B reserves `[B, B+110]`: the gateway itself on B,
//! browser control on B+2, the extension relay on B+3..B+10 and the managed Chrome CDP range on
//! B+11..B+110. Two gateways are isolated only when these whole ranges are disjoint; the older
//! advice of spacing bases 20 apart lets a gateway port land inside a neighbour's CDP range.

use std::fmt;

use serde::Serialize;

/// Ports one gateway reserves, counting its base: `[B, B+110]`.
pub const FOOTPRINT_SIZE: u32 = 111;
/// Lowest port a footprint may use (below are the privileged ports).
pub const MIN_PORT: u32 = 1024;
/// Highest port there is.
pub const MAX_PORT: u32 = 65535;

/// The pool `port = "auto"` draws from: above the usual service ports and below Linux's
/// ephemeral range (32768..), so outgoing connections never take a gateway's port.
pub const DEFAULT_POOL_FROM: u16 = 20000;
pub const DEFAULT_POOL_TO: u16 = 32767;

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> PortRange {
        debug_assert!(first <= last);
        PortRange { first, last }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// The ports both ranges share, if any.
    pub fn intersection(&self, other: &PortRange) -> Option<PortRange> {
        self.overlaps(other)
            .then(|| PortRange::new(self.first.max(other.first), self.last.min(other.last)))
    }

    /// How many ports the range holds (never zero).
    pub fn count(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// The ports a gateway on one base port reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Footprint {
    pub gateway: u16,
    pub browser_control: u16,
    pub relay: PortRange,
    pub cdp: PortRange,
    pub first: u16,
    pub last: u16,
}

/// A base port whose footprint does not fit in `1024..=65535`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "port {base} cannot be a base port: its footprint {base}..{} must lie within {MIN_PORT}..{MAX_PORT}; \
     use a base port from {MIN_PORT} to {}",
    base + i64::from(FOOTPRINT_SIZE) - 1,
    MAX_PORT - FOOTPRINT_SIZE + 1
)]
pub struct BaseOutOfRange {
    pub base: i64,
}

impl Footprint {
    /// The footprint on base port `base`, if all of it fits in `1024..=65535`.
    pub fn new(base: i64) -> Result<Footprint, BaseOutOfRange> {
        let fits = base >= i64::from(MIN_PORT)
            && base + i64::from(FOOTPRINT_SIZE) - 1 <= i64::from(MAX_PORT);
        if !fits {
            return Err(BaseOutOfRange { base });
        }
        let b = base as u16;
        Ok(Footprint {
            gateway: b,
            browser_control: b + 2,
            relay: PortRange::new(b + 3, b + 10),
            cdp: PortRange::new(b + 11, b + 110),
            first: b,
            last: b + 110,
        })
    }

    pub fn range(&self) -> PortRange {
        PortRange::new(self.first, self.last)
    }

    /// What this footprint uses `port` for, with the range it belongs to, e.g. "CDP range
    /// 18800-18899". `None` when the port lies outside the footprint.
    pub fn describe_port(&self, port: u16) -> Option<String> {
        if port == self.gateway {
            Some(format!("gateway port {port}"))
        } else if port == self.browser_control {
            Some(format!("browser control port {port}"))
        } else if self.relay.contains(port) {
            Some(format!("extension relay range {}", self.relay))
        } else if self.cdp.contains(port) {
            Some(format!("CDP range {}", self.cdp))
        } else if self.range().contains(port) {
            Some(format!("reserved port {port}"))
        } else {
            None
        }
    }
}

/// Why a pool cannot be made or cannot allocate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error(
        "port pool {from}..{to} is empty: the first footprint {from}..{} must fit below `to`, \
         and every port within {MIN_PORT}..{MAX_PORT}",
        *from + i64::from(FOOTPRINT_SIZE) - 1
    )]
    Empty { from: i64, to: i64 },
    #[error(
        "port pool spacing {spacing} is smaller than a footprint ({FOOTPRINT_SIZE} ports): \
         gateways would share relay and CDP ports; use a spacing of at least {FOOTPRINT_SIZE}"
    )]
    SpacingTooSmall { spacing: i64 },
    #[error(
        "port pool {from}..{to} is exhausted: it holds {capacity} footprint(s) of {FOOTPRINT_SIZE} ports \
         at spacing {spacing}; {allocated} allocated{}. Widen the range or declare fewer gateways",
        if *skipped > 0 { format!(", {skipped} skipped because other gateways use those ports") } else { String::new() }
    )]
    Exhausted {
        from: u16,
        to: u16,
        spacing: u16,
        capacity: usize,
        allocated: usize,
        skipped: usize,
    },
}

/// Hands out base ports whose footprints fit in `[from, to]`, `spacing` apart, skipping any
/// footprint that would overlap a range already taken. Deterministic: the same requests against
/// the same taken ranges give the same ports.
#[derive(Debug, Clone)]
pub struct Pool {
    from: u16,
    to: u16,
    spacing: u16,
    next_base: u32,
    allocated: usize,
    skipped: usize,
}

impl Pool {
    /// A pool over `[from, to]` (both inclusive, and the whole footprint must fit below `to`).
    /// `spacing` defaults to one footprint.
    pub fn new(from: i64, to: i64, spacing: Option<i64>) -> Result<Pool, PoolError> {
        let spacing = spacing.unwrap_or(i64::from(FOOTPRINT_SIZE));
        if spacing < i64::from(FOOTPRINT_SIZE) {
            return Err(PoolError::SpacingTooSmall { spacing });
        }
        let within = |port: i64| (i64::from(MIN_PORT)..=i64::from(MAX_PORT)).contains(&port);
        if !within(from) || !within(to) || from + i64::from(FOOTPRINT_SIZE) - 1 > to {
            return Err(PoolError::Empty { from, to });
        }
        Ok(Pool {
            from: from as u16,
            to: to as u16,
            spacing: spacing.min(i64::from(MAX_PORT)) as u16,
            next_base: from as u32,
            allocated: 0,
            skipped: 0,
        })
    }

    /// The default pool behind `port = "auto"`.
    pub fn default_auto() -> Pool {
        Pool::new(
            i64::from(DEFAULT_POOL_FROM),
            i64::from(DEFAULT_POOL_TO),
            None,
        )
        .expect("the default pool is valid")
    }

    /// How many footprints fit in the pool when nothing else is taken.
    pub fn capacity(&self) -> usize {
        let room = u32::from(self.to) - u32::from(self.from) + 1 - FOOTPRINT_SIZE;
        (room / u32::from(self.spacing)) as usize + 1
    }

    /// The next base port whose footprint overlaps none of `taken`. One pass over `taken`
    /// and over the pool's remaining bases (at most 581): a script that declares thousands of
    /// gateways and draws from pools between them stays linear per draw.
    pub fn next(&mut self, taken: &[PortRange]) -> Result<u16, PoolError> {
        let highest_base = u32::from(self.to) + 1 - FOOTPRINT_SIZE;
        let spacing = u32::from(self.spacing);
        if self.next_base <= highest_base {
            let bases = ((highest_base - self.next_base) / spacing + 1) as usize;
            // For each remaining base, by its index k: how many taken ranges its footprint
            // overlaps, as a difference array (+1 where the ranges' k's start, -1 past the end).
            let mut overlaps = vec![0i32; bases + 1];
            for range in taken {
                // Base b overlaps `range` when range.first - 110 <= b <= range.last.
                let lowest = u32::from(range.first).saturating_sub(FOOTPRINT_SIZE - 1);
                let highest = u32::from(range.last);
                if highest < self.next_base {
                    continue;
                }
                let first = lowest.saturating_sub(self.next_base).div_ceil(spacing) as usize;
                let last = (((highest - self.next_base) / spacing) as usize).min(bases - 1);
                if first <= last {
                    overlaps[first] += 1;
                    overlaps[last + 1] -= 1;
                }
            }
            let mut depth = 0;
            for (k, change) in overlaps[..bases].iter().enumerate() {
                depth += change;
                let base = self.next_base + k as u32 * spacing;
                if depth == 0 {
                    self.next_base = base + spacing;
                    self.allocated += 1;
                    return Ok(base as u16);
                }
                self.skipped += 1;
            }
            self.next_base += bases as u32 * spacing;
        }
        Err(PoolError::Exhausted {
            from: self.from,
            to: self.to,
            spacing: self.spacing,
            capacity: self.capacity(),
            allocated: self.allocated,
            skipped: self.skipped,
        })
    }

    pub fn from(&self) -> u16 {
        self.from
    }

    pub fn to(&self) -> u16 {
        self.to
    }

    pub fn spacing(&self) -> u16 {
        self.spacing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn footprint_layout() {
        let footprint = Footprint::new(18789).unwrap();
        assert_eq!(footprint.gateway, 18789);
        assert_eq!(footprint.browser_control, 18791);
        assert_eq!(footprint.relay, PortRange::new(18792, 18799));
        assert_eq!(footprint.cdp, PortRange::new(18800, 18899));
        assert_eq!(footprint.range(), PortRange::new(18789, 18899));
        assert_eq!(footprint.range().count(), FOOTPRINT_SIZE);
    }

    #[test]
    fn footprint_must_fit_the_port_space() {
        assert!(Footprint::new(1023).is_err());
        assert!(Footprint::new(1024).is_ok());
        assert!(Footprint::new(65425).is_ok());
        assert!(Footprint::new(65426).is_err());
        assert!(Footprint::new(-1).is_err());
        assert!(Footprint::new(1 << 40).is_err());
    }

    #[test]
    fn twenty_port_spacing_puts_a_gateway_in_the_cdp_range() {
        let main = Footprint::new(18789).unwrap();
        let second = Footprint::new(18809).unwrap();
        assert!(main.range().overlaps(&second.range()));
        assert_eq!(
            main.describe_port(second.gateway).unwrap(),
            "CDP range 18800-18899"
        );
    }

    #[test]
    fn describe_every_part() {
        let footprint = Footprint::new(20000).unwrap();
        assert_eq!(
            footprint.describe_port(20000).unwrap(),
            "gateway port 20000"
        );
        assert_eq!(
            footprint.describe_port(20001).unwrap(),
            "reserved port 20001"
        );
        assert_eq!(
            footprint.describe_port(20002).unwrap(),
            "browser control port 20002"
        );
        assert_eq!(
            footprint.describe_port(20005).unwrap(),
            "extension relay range 20003-20010"
        );
        assert_eq!(footprint.describe_port(20111), None);
    }

    #[test]
    fn pool_allocates_footprints_back_to_back() {
        let mut pool = Pool::new(20000, 20332, None).unwrap();
        assert_eq!(pool.capacity(), 3);
        assert_eq!(pool.next(&[]).unwrap(), 20000);
        assert_eq!(pool.next(&[]).unwrap(), 20111);
        assert_eq!(pool.next(&[]).unwrap(), 20222);
        let err = pool.next(&[]).unwrap_err();
        assert!(err.to_string().contains("holds 3 footprint(s)"), "{err}");
    }

    #[test]
    fn pool_skips_taken_ranges() {
        let mut pool = Pool::new(20000, 29999, Some(200)).unwrap();
        let taken = [PortRange::new(20150, 20160)];
        assert_eq!(pool.next(&taken).unwrap(), 20000);
        assert_eq!(pool.next(&taken).unwrap(), 20200);
    }

    #[test]
    fn pool_rejects_bad_shapes() {
        assert!(matches!(
            Pool::new(20000, 29999, Some(20)),
            Err(PoolError::SpacingTooSmall { .. })
        ));
        assert!(matches!(
            Pool::new(20000, 20050, None),
            Err(PoolError::Empty { .. })
        ));
        assert!(matches!(
            Pool::new(80, 2000, None),
            Err(PoolError::Empty { .. })
        ));
        assert!(matches!(
            Pool::new(65000, 70000, None),
            Err(PoolError::Empty { .. })
        ));
    }

    #[test]
    fn whole_port_space_holds_581_footprints() {
        let pool = Pool::new(1024, 65535, None).unwrap();
        assert_eq!(pool.capacity(), 581);
    }

    proptest! {
        /// Whatever the pools and whatever was already taken, no two allocated footprints
        /// overlap each other or anything taken before.
        #[test]
        fn allocated_footprints_never_overlap(
            pools in prop::collection::vec((1024i64..60000, 0i64..8000, 111i64..400), 1..4),
            pinned in prop::collection::vec(1024u16..65000, 0..6),
            requests in prop::collection::vec(0usize..4, 1..60),
        ) {
            let mut taken: Vec<PortRange> = pinned
                .iter()
                .map(|&p| PortRange::new(p, p.saturating_add(110)))
                .collect();
            let fixed = taken.len();
            let mut pools: Vec<Pool> = pools
                .into_iter()
                .filter_map(|(from, width, spacing)| Pool::new(from, (from + 110 + width).min(65535), Some(spacing)).ok())
                .collect();
            prop_assume!(!pools.is_empty());
            for request in requests {
                let index = request % pools.len();
                if let Ok(base) = pools[index].next(&taken) {
                    let footprint = Footprint::new(i64::from(base)).unwrap().range();
                    prop_assert!(footprint.last <= pools[index].to());
                    prop_assert!(taken.iter().all(|r| !r.overlaps(&footprint)));
                    taken.push(footprint);
                }
            }
            for (i, a) in taken.iter().enumerate().skip(fixed) {
                for b in taken.iter().skip(i + 1) {
                    prop_assert!(!a.overlaps(b), "{a} overlaps {b}");
                }
            }
        }

        /// The one-pass `next` hands out exactly what checking every base against every
        /// taken range would, and counts the same skips.
        #[test]
        fn next_matches_checking_each_base(
            from in 1024i64..65000,
            width in 0i64..3000,
            spacing in 111i64..400,
            taken in prop::collection::vec((1024u16..65535, 0u16..400), 0..12),
            draws in 1usize..20,
        ) {
            let to = (from + 110 + width).min(65535);
            prop_assume!(from + 110 <= to);
            let taken: Vec<PortRange> = taken
                .into_iter()
                .map(|(first, len)| PortRange::new(first, first.saturating_add(len)))
                .collect();
            let mut pool = Pool::new(from, to, Some(spacing)).unwrap();
            let mut base = from;
            let mut skipped = 0;
            for _ in 0..draws {
                let mut expected = None;
                while base + 110 <= to {
                    let candidate = PortRange::new(base as u16, (base + 110) as u16);
                    base += spacing;
                    if taken.iter().any(|r| r.overlaps(&candidate)) {
                        skipped += 1;
                    } else {
                        expected = Some(candidate.first);
                        break;
                    }
                }
                match (pool.next(&taken), expected) {
                    (Ok(got), Some(want)) => prop_assert_eq!(got, want),
                    (Err(PoolError::Exhausted { skipped: got, .. }), None) => {
                        prop_assert_eq!(got, skipped)
                    }
                    (got, want) => prop_assert!(false, "got {:?}, want {:?}", got, want),
                }
            }
        }

        #[test]
        fn fresh_pool_yields_exactly_its_capacity(from in 1024i64..60000, width in 0i64..5000, spacing in 111i64..300) {
            let to = (from + 110 + width).min(65535);
            let mut pool = Pool::new(from, to, Some(spacing)).unwrap();
            let capacity = pool.capacity();
            let mut count = 0;
            while pool.next(&[]).is_ok() {
                count += 1;
            }
            prop_assert_eq!(count, capacity);
        }
    }
}
