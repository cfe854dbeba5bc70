//! Counting what outsiders make the edge hold, with a cap in all and one per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Things the edge holds for outsiders (TCP connections, calls in set-up), counted in all and per
/// source address, shared by every worker (SO_REUSEPORT and the Call-ID hash spread one source
/// over all of them).
pub struct Census {
    max_total: usize,
    max_per_source: usize,
    total: AtomicUsize,
    by_source: Mutex<HashMap<IpAddr, usize>>,
    gauge: Option<prometheus::IntGauge>,
}

/// One thing counted in the [`Census`]; dropping it gives the place back.
pub struct Admitted {
    census: Arc<Census>,
    source: Option<IpAddr>,
}

impl Census {
    pub fn new(
        max_total: usize,
        max_per_source: usize,
        gauge: Option<prometheus::IntGauge>,
    ) -> Self {
        Self {
            max_total,
            max_per_source,
            total: AtomicUsize::new(0),
            by_source: Mutex::new(HashMap::new()),
            gauge,
        }
    }

    /// A place for one from `source` (None: not an outsider's, e.g. a connection we open), or
    /// the cap that refused it.
    pub fn admit(self: &Arc<Self>, source: Option<IpAddr>) -> Result<Admitted, &'static str> {
        self.admit_up_to(source, self.max_per_source)
    }

    /// [`Census::admit`] with this source's own cap (never below the census's).
    pub fn admit_up_to(
        self: &Arc<Self>,
        source: Option<IpAddr>,
        per_source: usize,
    ) -> Result<Admitted, &'static str> {
        let per_source = per_source.max(self.max_per_source);
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("total_cap");
        }
        if let Some(ip) = source {
            let mut map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= per_source {
                drop(map);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err("source_cap");
            }
            *n += 1;
        }
        if let Some(g) = &self.gauge {
            g.inc();
        }
        Ok(Admitted {
            census: self.clone(),
            source,
        })
    }

    #[cfg(test)]
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let c = &self.census;
        if let Some(ip) = self.source {
            let mut map = c.by_source.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        c.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &c.gauge {
            g.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_census_caps_per_source_and_in_all_and_gives_places_back() {
        let gauge = prometheus::IntGauge::new("g", "g").expect("a gauge");
        let census = Arc::new(Census::new(3, 2, Some(gauge.clone())));
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let a1 = census.admit(Some(a)).expect("first from a");
        let _a2 = census.admit(Some(a)).expect("second from a");
        assert_eq!(census.admit(Some(a)).err(), Some("source_cap"));
        let _b1 = census.admit(Some(b)).expect("first from b");
        assert_eq!(census.admit(Some(b)).err(), Some("total_cap"));
        assert_eq!(census.admit(None).err(), Some("total_cap"));
        assert_eq!(gauge.get(), 3);
        drop(a1);
        assert_eq!(census.total(), 2);
        assert!(census.admit(Some(a)).is_ok(), "a place came back");
    }

    #[test]
    fn a_source_sized_by_its_trunks_gets_their_cap_never_less_than_the_census_own() {
        let census = Arc::new(Census::new(100, 2, None));
        let sbc: IpAddr = [192, 0, 2, 9].into();
        let held: Vec<_> = (0..5)
            .map(|i| {
                census
                    .admit_up_to(Some(sbc), 5)
                    .unwrap_or_else(|e| panic!("{i}: {e}"))
            })
            .collect();
        assert_eq!(census.admit_up_to(Some(sbc), 5).err(), Some("source_cap"));
        drop(held);
        // A smaller size than the census's own is raised to it.
        let _a = census.admit_up_to(Some(sbc), 0).expect("first");
        let _b = census.admit_up_to(Some(sbc), 0).expect("second");
        assert_eq!(census.admit_up_to(Some(sbc), 0).err(), Some("source_cap"));
    }
}
