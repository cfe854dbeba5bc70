//! The snapshot as workers use it: the compiled `EdgeConfig` plus the lookup structures built
//! once per load (number index, carrier ACL, route table) and per-trunk state that survives
//! reloads (limits, metrics).

pub mod health;
pub mod settings;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use trunkgate_crds::Selection;
use trunkgate_crds::acl::SourceAcl;
use trunkgate_crds::e164::E164;
use trunkgate_crds::snapshot::{EdgeConfig, NumberIndex, Owner, TrunkConfig};

use crate::metrics::Metrics;
use crate::table::Table;
use health::TargetHealth;

/// Per-trunk state shared by all workers and kept across reloads: call counts for the limits.
pub struct TrunkState {
    pub id: String,
    active: AtomicU32,
    /// (second << 32) | calls started in that second.
    cps: AtomicU64,
    pub active_gauge: prometheus::IntGauge,
    /// Calls being set up (final answer not yet acknowledged).
    setup: AtomicU32,
    setup_gauge: prometheus::IntGauge,
}

/// Why the limits refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefusal {
    Concurrent(u32),
    PerSecond(u32),
}

impl TrunkState {
    fn new(id: &str, metrics: &Metrics) -> Self {
        Self {
            id: id.to_string(),
            active: AtomicU32::new(0),
            cps: AtomicU64::new(0),
            active_gauge: metrics.active_calls.with_label_values(&[id]),
            setup: AtomicU32::new(0),
            setup_gauge: metrics.calls_in_setup.with_label_values(&[id]),
        }
    }

    /// Counts one call in set-up against `max`; the place is given back when the slot drops.
    /// (`max` is this process's share when the fleet's store is unreachable.)
    pub fn begin_setup(self: &Arc<Self>, max: u32) -> Result<SetupSlot, u32> {
        if self.setup.fetch_add(1, Ordering::AcqRel) >= max {
            self.setup.fetch_sub(1, Ordering::AcqRel);
            return Err(max);
        }
        self.setup_gauge.inc();
        Ok(SetupSlot {
            trunk: self.clone(),
            fleet: None,
        })
    }

    /// Admits one call under the trunk's limits, or under this process's share of them
    /// (`share` live pods, while the fleet's store is unreachable: [`crate::fleet::share_of`]);
    /// the slot is released when dropped.
    pub fn admit(
        self: &Arc<Self>,
        cfg: &TrunkConfig,
        now_secs: u64,
        share: u32,
    ) -> Result<CallSlot, LimitRefusal> {
        let limits = &cfg.limits;
        let max_cps = limits
            .max_calls_per_second
            .map(|m| crate::fleet::share_of(m, share));
        let max_concurrent = limits
            .max_concurrent_calls
            .map(|m| crate::fleet::share_of(m, share));
        if let Some(max) = max_cps {
            let mut cur = self.cps.load(Ordering::Relaxed);
            loop {
                let (sec, n) = (cur >> 32, cur & 0xffff_ffff);
                let next = if sec == now_secs & 0xffff_ffff {
                    if n >= u64::from(max) {
                        return Err(LimitRefusal::PerSecond(max));
                    }
                    cur + 1
                } else {
                    ((now_secs & 0xffff_ffff) << 32) | 1
                };
                match self
                    .cps
                    .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
                {
                    Ok(_) => break,
                    Err(actual) => cur = actual,
                }
            }
        }
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        if let Some(max) = max_concurrent
            && before >= max
        {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitRefusal::Concurrent(max));
        }
        self.active_gauge.inc();
        Ok(CallSlot {
            trunk: self.clone(),
            fleet: None,
        })
    }

    /// A restored call's slot: counted, whatever the limit (the call is up already).
    pub fn restore_slot(self: &Arc<Self>) -> CallSlot {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.active_gauge.inc();
        CallSlot {
            trunk: self.clone(),
            fleet: None,
        }
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }
}

/// One admitted call; releases its place in the trunk's concurrent-call limit when dropped.
pub struct CallSlot {
    trunk: Arc<TrunkState>,
    /// Its place in the fleet's count, when the fleet shares a store.
    fleet: Option<crate::fleet::Release>,
}

impl CallSlot {
    /// The call's place in the fleet's count, given back with this slot.
    pub fn hold_in_fleet(&mut self, place: crate::fleet::Release) {
        self.fleet = Some(place);
    }

    /// The name of its place in the fleet's count, if it holds one.
    pub fn fleet_member(&self) -> Option<&str> {
        self.fleet.as_ref().map(crate::fleet::Release::member)
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.trunk.active.fetch_sub(1, Ordering::AcqRel);
        self.trunk.active_gauge.dec();
    }
}

/// One call in set-up; its place in the trunk's `maxCallsInSetup` is given back when dropped
/// (the call's final answer was acknowledged, or it ended).
pub struct SetupSlot {
    trunk: Arc<TrunkState>,
    fleet: Option<crate::fleet::Release>,
}

impl SetupSlot {
    /// The call's place in the fleet's calls in set-up, given back with this slot.
    pub fn hold_in_fleet(&mut self, place: crate::fleet::Release) {
        self.fleet = Some(place);
    }
}

impl Drop for SetupSlot {
    fn drop(&mut self) {
        self.trunk.setup.fetch_sub(1, Ordering::AcqRel);
        self.trunk.setup_gauge.dec();
    }
}

/// One route of a tenant's prefix: its priority, its trunk, and the index of the route
/// (among the trunk's) when it has a rate.
type RouteEntry = (u32, u32, Option<u32>);

/// A loaded snapshot.
pub struct Runtime {
    pub config: EdgeConfig,
    pub index: NumberIndex,
    pub state: Vec<Arc<TrunkState>>,
    /// Per trunk, per outbound target (in `outbound.targets` order): its probe state.
    health: Vec<Box<[Arc<TargetHealth>]>>,
    acl: SourceAcl,
    /// (tenant, prefix length, prefix digits) → (priority, trunk) of the tenant's routes,
    /// sorted: a call looks only at its own tenant's routes.
    /// Each entry: the route's priority, its trunk, and the index of the route (among the
    /// trunk's) when it has a rate.
    routes: Table<(u32, u8, u64), Vec<RouteEntry>>,
    /// Per tenant: the prefix lengths its routes have (bit `len`), so a lookup skips the rest.
    route_lens: Vec<u16>,
    /// The index of each namespace with outbound trunks in `outbound_tenants`.
    tenant_ids: Table<String, u32>,
    /// (trunk, prefix length, prefix digits) → the index of that trunk's route with a rate.
    rates: Table<(u32, u8, u64), u32>,
    /// Per trunk: the prefix lengths of its routes with a rate (bit `len`).
    rate_lens: Vec<u16>,
    /// Per namespace: how its outbound calls order their candidate trunks
    /// (`outbound.selection`; absent: `Priority`).
    selections: HashMap<String, Selection>,
    /// Trunks whose media goes through the relay: the RTP ports' fair share divides by it.
    pub relay_trunks: usize,
    /// The namespaces (tenants) that have a trunk with outbound targets, sorted.
    pub outbound_tenants: Vec<String>,
    /// What this process divides each trunk limit by ([`crate::fleet::Fleet::share`]): kept
    /// across reloads.
    pub share: Arc<AtomicU32>,
}

impl Runtime {
    /// Per probed trunk (`outbound.healthCheck` set): its id, targets answering probes, targets.
    /// The operator reads it from `/snapshot` into `CarrierTrunk.status.targets`.
    pub fn probed_targets(&self) -> Vec<(&str, u32, u32)> {
        self.config
            .trunks
            .iter()
            .zip(&self.health)
            .filter(|(t, _)| {
                t.outbound
                    .as_ref()
                    .is_some_and(|o| o.health_interval_seconds > 0)
            })
            .map(|(t, h)| {
                let up = h.iter().filter(|h| h.is_up()).count() as u32;
                (t.id.as_str(), up, h.len() as u32)
            })
            .collect()
    }

    /// Per trunk whose outbound targets were tried lately: their windows summed at `now_s`
    /// (the fleet's with a shared store) and how many are demoted now. The operator reads it
    /// from `/snapshot` into `CarrierTrunk.status.quality`.
    pub fn quality_report(&self, now_s: u64) -> Vec<(&str, crate::quality::Counts, u32)> {
        self.config
            .trunks
            .iter()
            .zip(&self.health)
            .filter_map(|(t, hs)| {
                let mut sum = crate::quality::Counts::default();
                let mut demoted = 0;
                for h in hs.iter() {
                    sum.add(&h.totals(now_s));
                    demoted += u32::from(h.demotion(now_s) > 0);
                }
                (sum.attempts > 0 || demoted > 0).then_some((t.id.as_str(), sum, demoted))
            })
            .collect()
    }

    /// Builds the lookup structures; `previous` lends its per-trunk state to trunks that stay.
    pub fn build(config: EdgeConfig, previous: Option<&Runtime>, metrics: &Metrics) -> Self {
        let index = NumberIndex::of(&config);
        let old: HashMap<&str, &Arc<TrunkState>> = previous
            .map(|p| p.state.iter().map(|s| (s.id.as_str(), s)).collect())
            .unwrap_or_default();
        let state = config
            .trunks
            .iter()
            .map(|t| {
                old.get(t.id.as_str())
                    .map(|s| (*s).clone())
                    .unwrap_or_else(|| Arc::new(TrunkState::new(&t.id, metrics)))
            })
            .collect();
        // A target keeps its health across reloads while its trunk keeps its URI.
        let old_health: HashMap<(&str, &str), &Arc<TargetHealth>> = previous
            .map(|p| {
                p.config
                    .trunks
                    .iter()
                    .zip(&p.health)
                    .flat_map(|(t, hs)| {
                        let targets = t.outbound.iter().flat_map(|o| &o.targets);
                        targets
                            .zip(hs.iter())
                            .map(|(tg, h)| ((t.id.as_str(), tg.uri.as_str()), h))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let health: Vec<Box<[Arc<TargetHealth>]>> = config
            .trunks
            .iter()
            .map(|t| {
                t.outbound
                    .iter()
                    .flat_map(|o| &o.targets)
                    .map(|tg| {
                        old_health
                            .get(&(t.id.as_str(), tg.uri.as_str()))
                            .map(|h| (*h).clone())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .collect();
        let mut outbound_tenants: Vec<String> = config
            .trunks
            .iter()
            .filter(|t| t.outbound.is_some())
            .map(|t| namespace_of(&t.id).to_string())
            .collect();
        outbound_tenants.sort_unstable();
        outbound_tenants.dedup();
        let tenant_ids: Table<String, u32> = outbound_tenants
            .iter()
            .enumerate()
            .map(|(i, ns)| (ns.clone(), i as u32))
            .collect();
        let mut routes: Table<(u32, u8, u64), Vec<RouteEntry>> = Table::default();
        let mut route_lens = vec![0u16; outbound_tenants.len()];
        let mut rates = Table::default();
        let mut rate_lens = vec![0u16; config.trunks.len()];
        for (i, t) in config.trunks.iter().enumerate() {
            if t.outbound.is_some() {
                for (ri, r) in t.routes.iter().enumerate() {
                    let value = if r.prefix.is_empty() {
                        0
                    } else {
                        r.prefix.parse().unwrap_or(0)
                    };
                    let key = (r.prefix.len() as u8, value);
                    let tenant = tenant_ids
                        .get(namespace_of(&t.id))
                        .copied()
                        .unwrap_or(u32::MAX);
                    routes.entry((tenant, key.0, key.1)).or_default().push((
                        r.priority,
                        i as u32,
                        r.rate.is_some().then_some(ri as u32),
                    ));
                    if let Some(lens) = route_lens.get_mut(tenant as usize) {
                        *lens |= 1 << key.0.min(15);
                    }
                    if r.rate.is_some() {
                        rates.insert((i as u32, key.0, key.1), ri as u32);
                        rate_lens[i] |= 1 << key.0.min(15);
                    }
                }
            }
            metrics
                .targets_configured
                .with_label_values(&[t.id.as_str()])
                .set(t.outbound.as_ref().map_or(0, |o| o.targets.len() as i64));
            metrics
                .targets_healthy
                .with_label_values(&[t.id.as_str()])
                .set(health[i].iter().filter(|h| h.is_up()).count() as i64);
        }
        // Trunks the new snapshot no longer has stop showing targets (and a targets-down alert).
        if let Some(p) = previous {
            let now: std::collections::HashSet<&str> =
                config.trunks.iter().map(|t| t.id.as_str()).collect();
            for gone in p
                .config
                .trunks
                .iter()
                .filter(|t| !now.contains(t.id.as_str()))
            {
                let _ = metrics
                    .targets_configured
                    .remove_label_values(&[gone.id.as_str()]);
                let _ = metrics
                    .targets_healthy
                    .remove_label_values(&[gone.id.as_str()]);
                for t in gone.outbound.iter().flat_map(|o| &o.targets) {
                    metrics.forget_target(&gone.id, &t.uri);
                }
            }
        }
        for v in routes.values_mut() {
            v.sort_unstable();
        }
        let acl = SourceAcl::build(config.trunks.iter().enumerate().flat_map(|(i, t)| {
            t.inbound
                .allowed_cidrs
                .iter()
                .map(move |net| (*net, i as u32))
        }));
        let relay_trunks = config.trunks.iter().filter(|t| t.media.relay).count();
        let mut selections = HashMap::new();
        for t in &config.trunks {
            if let Some(s) = t.outbound.as_ref().and_then(|o| o.selection) {
                selections
                    .entry(namespace_of(&t.id).to_string())
                    .or_insert(s);
            }
        }
        Self {
            config,
            index,
            state,
            health,
            acl,
            routes,
            route_lens,
            tenant_ids,
            rates,
            rate_lens,
            selections,
            relay_trunks,
            outbound_tenants,
            share: previous.map_or_else(|| Arc::new(AtomicU32::new(1)), |p| p.share.clone()),
        }
    }

    /// The divisor of this process's own limit counters (1 unless the fleet's store is down).
    pub fn share(&self) -> u32 {
        self.share.load(Ordering::Acquire).max(1)
    }

    /// Trunks whose `allowedCidrs` contain `ip`, in snapshot order (the carrier ACL; empty =
    /// deny).
    pub fn trunks_for_source(&self, ip: IpAddr) -> Vec<u32> {
        self.acl.trunks(ip)
    }

    /// New requests a second the carrier-side source `ip` may send, sized by the trunks that
    /// allow it: twice the calls a second their `limits.maxCallsPerSecond` contract (an INVITE
    /// and, challenged, its retry), so a carrier at its contracted rate is never held back by
    /// the edge-wide `--source-rate`, which stays the floor (and the rate of a source whose
    /// trunks set no limit). What continues its calls has a budget four times larger.
    pub fn source_budget(&self, ip: IpAddr) -> u32 {
        self.acl
            .trunks(ip)
            .into_iter()
            .filter_map(|t| self.trunk(t).limits.max_calls_per_second)
            .fold(0u32, |sum, cps| sum.saturating_add(cps.saturating_mul(2)))
    }

    /// Calls in set-up at once the carrier-side source `ip` may hold, sized by the trunks that
    /// allow it: the sum of their `limits.maxCallsInSetup` (a carrier SBC brings every call of
    /// its trunks from one address). 0 when none sets it (`--max-calls-in-setup-per-source`
    /// then applies alone).
    pub fn source_setup_budget(&self, ip: IpAddr) -> usize {
        self.acl
            .trunks(ip)
            .into_iter()
            .filter_map(|t| self.trunk(t).limits.max_calls_in_setup)
            .fold(0usize, |sum, n| sum.saturating_add(n as usize))
    }

    /// Whether any trunk's `allowedCidrs` contains `ip`.
    pub fn source_allowed(&self, ip: IpAddr) -> bool {
        self.acl.allows(ip)
    }

    pub fn trunk(&self, i: u32) -> &TrunkConfig {
        &self.config.trunks[i as usize]
    }

    /// The probe state of trunk `i`'s outbound targets, in `outbound.targets` order.
    pub fn health(&self, i: u32) -> &[Arc<TargetHealth>] {
        self.health.get(i as usize).map_or(&[], |h| h)
    }

    pub fn owners(&self, n: E164) -> &[Owner] {
        self.index.owners(n)
    }

    /// The trunk routing `n` by the longest matching prefix, then the lowest priority.
    #[cfg(test)]
    pub fn route(&self, n: E164) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        for ns in &self.outbound_tenants {
            let mut out = Vec::new();
            let len = self.routes_matching(n, ns, |_| true, &mut out);
            if let (Some(len), Some((t, _))) = (len, out.first())
                && best.is_none_or(|(l, _)| len > l)
            {
                best = Some((len, *t));
            }
        }
        best.map(|(_, t)| t)
    }

    /// [`Runtime::route`] among the trunks `admits` lets through (a tenant's own).
    /// The rate of trunk `t` for calls to `n`: its longest route prefix of `n` that has one.
    pub fn rate(&self, t: u32, n: E164) -> Option<&trunkgate_crds::rate::RateConfig> {
        self.rate_of(t, self.rate_route(t, n)?)
    }

    /// The index (among trunk `t`'s routes) of its longest route with a rate matching `n`.
    pub fn rate_route(&self, t: u32, n: E164) -> Option<u32> {
        let lens = self.rate_lens.get(t as usize).copied().unwrap_or(0);
        (0..=n.len)
            .rev()
            .filter(|len| lens & (1 << len) != 0)
            .find_map(|len| {
                let value = n.value / 10u64.pow(u32::from(n.len - len));
                self.rates.get(&(t, len, value)).copied()
            })
    }

    /// The rate of trunk `t`'s route `route`.
    pub fn rate_of(&self, t: u32, route: u32) -> Option<&trunkgate_crds::rate::RateConfig> {
        self.trunk(t).routes.get(route as usize)?.rate.as_ref()
    }

    /// How namespace `ns`'s outbound calls order their candidate trunks.
    pub fn selection(&self, ns: &str) -> Selection {
        self.selections.get(ns).copied().unwrap_or_default()
    }

    /// Every trunk of namespace `ns` that `admits` lets through with a route matching `n`,
    /// once each, by its longest matching prefix (longest first), then that route's priority:
    /// `Priority` order; with each, its longest rated route matching `n` (found on the way).
    /// Returns the length of the longest prefix that matched.
    pub fn routes_matching(
        &self,
        n: E164,
        ns: &str,
        admits: impl Fn(u32) -> bool,
        out: &mut Vec<(u32, Option<u32>)>,
    ) -> Option<u8> {
        let tenant = *self.tenant_ids.get(ns)?;
        let lens = self.route_lens.get(tenant as usize).copied().unwrap_or(0);
        let mut longest = None;
        for len in (0..=n.len).rev().filter(|len| lens & (1 << len) != 0) {
            let value = n.value / 10u64.pow(u32::from(n.len - len));
            let Some(routes) = self.routes.get(&(tenant, len, value)) else {
                continue;
            };
            for (_, t, rated) in routes {
                match out.iter_mut().find(|(x, _)| x == t) {
                    // Longest first: a rated route the trunk's longer ones lacked.
                    Some((_, rate)) if rate.is_none() => *rate = *rated,
                    Some(_) => {}
                    None if admits(*t) => {
                        longest.get_or_insert(len);
                        out.push((*t, *rated));
                    }
                    None => {}
                }
            }
        }
        longest
    }
}

pub use trunkgate_crds::snapshot::namespace_of_id as namespace_of;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use trunkgate_crds::{CarrierTrunk, Secrets, compile};

    fn runtime(trunks: &[CarrierTrunk]) -> Runtime {
        let c = compile(trunks, &[], &Secrets::new(), None);
        assert!(c.problems().next().is_none());
        Runtime::build(c.config, None, &Metrics::new())
    }

    #[test]
    fn a_call_is_rated_by_the_longest_prefix_of_its_trunk_that_has_a_rate() {
        let rt = runtime(&[
            CarrierTrunk::test("a", "cheap")
                .with_targets(&["sip:a.example"])
                .with_rate("+", "0.05", "USD", "60/60")
                .with_rate("+64", "0.02", "USD", "1/1")
                .with_route("+649", 10),
            CarrierTrunk::test("a", "other")
                .with_targets(&["sip:b.example"])
                .with_rate("+6498", "0.01", "NZD", "60/60"),
        ]);
        let per_minute =
            |t: u32, n: &str| rt.rate(t, E164::parse(n).unwrap()).map(|r| r.per_minute);
        assert_eq!(
            per_minute(0, "+6498879333"),
            Some(20_000),
            "+649 has no rate: +64's"
        );
        assert_eq!(per_minute(0, "+14155550100"), Some(50_000), "+ matches all");
        assert_eq!(per_minute(1, "+6498879333"), Some(10_000));
        assert_eq!(
            per_minute(1, "+6421000000"),
            None,
            "no rated prefix of that trunk"
        );
    }

    #[test]
    fn acl_and_routes() {
        let rt = runtime(&[
            CarrierTrunk::test("a", "nz")
                .with_cidrs(&["203.0.113.0/28"])
                .with_targets(&["sip:a.example"])
                .with_route("+64", 10)
                .with_route("+649", 50),
            CarrierTrunk::test("a", "world")
                .with_cidrs(&["198.51.100.0/24", "203.0.113.8/29"])
                .with_targets(&["sip:b.example"])
                .with_route("+", 100)
                .with_route("+64", 5),
        ]);
        let ids = |ip: &str| {
            rt.trunks_for_source(ip.parse().unwrap())
                .into_iter()
                .map(|t| rt.trunk(t).id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("203.0.113.9"), vec!["a/nz", "a/world"]);
        assert_eq!(ids("198.51.100.1"), vec!["a/world"]);
        assert_eq!(ids("::ffff:198.51.100.1"), vec!["a/world"]);
        assert!(ids("192.0.2.1").is_empty());
        let route = |n: &str| {
            rt.route(E164::parse(n).unwrap())
                .map(|t| rt.trunk(t).id.clone())
        };
        assert_eq!(
            route("+6498879333").as_deref(),
            Some("a/nz"),
            "+649 is the longest prefix"
        );
        assert_eq!(
            route("+6441234567").as_deref(),
            Some("a/world"),
            "+64: priority 5 beats 10"
        );
        assert_eq!(
            route("+14155550100").as_deref(),
            Some("a/world"),
            "+ matches everything"
        );
    }

    #[test]
    fn target_health_survives_a_reload_while_the_trunk_keeps_the_target() {
        let before = CarrierTrunk::test("a", "t").with_targets(&["sip:192.0.2.1", "sip:192.0.2.2"]);
        let rt = runtime(&[before]);
        assert_eq!(rt.health(0).len(), 2);
        assert!(rt.health(0).iter().all(|h| h.is_up()));
        rt.health(0)[0].record(false, 1);
        rt.health(0)[1].record(false, 1);
        // sip:192.0.2.2 stays (now first), sip:192.0.2.1 goes, sip:192.0.2.3 is new.
        let after = CarrierTrunk::test("a", "t").with_targets(&["sip:192.0.2.2", "sip:192.0.2.3"]);
        let c = compile(&[after], &[], &Secrets::new(), None);
        let rt2 = Runtime::build(c.config, Some(&rt), &Metrics::new());
        assert!(Arc::ptr_eq(&rt2.health(0)[0], &rt.health(0)[1]));
        assert!(!rt2.health(0)[0].is_up(), "still down after the reload");
        assert!(rt2.health(0)[1].is_up(), "a new target starts up");
        assert!(rt2.health(7).is_empty(), "no such trunk");
        let metrics = Metrics::new();
        let rt3 = Runtime::build(rt2.config.clone(), None, &metrics);
        let gauge = |m: &Metrics| {
            m.registry
                .gather()
                .iter()
                .filter(|f| f.name() == "trunkgate_edge_trunk_targets_configured")
                .map(|f| f.get_metric().len())
                .sum::<usize>()
        };
        assert_eq!(gauge(&metrics), 1);
        let empty = compile(&[], &[], &Secrets::new(), None);
        let _rt4 = Runtime::build(empty.config, Some(&rt3), &metrics);
        assert_eq!(gauge(&metrics), 0, "a removed trunk shows no targets");
    }

    #[test]
    fn limits_release_on_drop_and_survive_reload() {
        let mut t = CarrierTrunk::test("a", "t");
        t.spec.limits = Some(trunkgate_crds::Limits {
            max_concurrent_calls: Some(2),
            max_calls_per_second: Some(3),
            max_calls_in_setup: None,
        });
        let rt = runtime(&[t.clone()]);
        let st = rt.state[0].clone();
        let cfg = rt.trunk(0).clone();
        let a = st.admit(&cfg, 100, 1).unwrap();
        let _b = st.admit(&cfg, 100, 1).unwrap();
        assert_eq!(
            st.admit(&cfg, 100, 1).err(),
            Some(LimitRefusal::Concurrent(2))
        );
        drop(a);
        // Three attempts in second 100 used the 3 calls-per-second budget.
        assert_eq!(
            st.admit(&cfg, 100, 1).err(),
            Some(LimitRefusal::PerSecond(3))
        );
        let rt2 = Runtime::build(rt.config.clone(), Some(&rt), &Metrics::new());
        assert!(Arc::ptr_eq(&rt2.state[0], &st), "state survives a reload");
        let _c = rt2.state[0].admit(&cfg, 101, 1).unwrap();
        assert_eq!(st.active(), 2);
    }

    #[test]
    fn without_the_fleets_store_a_process_enforces_its_share() {
        let mut t = CarrierTrunk::test("a", "t");
        t.spec.limits = Some(trunkgate_crds::Limits {
            max_concurrent_calls: Some(4),
            max_calls_per_second: None,
            max_calls_in_setup: None,
        });
        let rt = runtime(&[t]);
        let st = rt.state[0].clone();
        let cfg = rt.trunk(0).clone();
        // Two live pods last seen: 4 / 2 each.
        rt.share.store(2, Ordering::Release);
        let _a = st.admit(&cfg, 100, rt.share()).unwrap();
        let _b = st.admit(&cfg, 100, rt.share()).unwrap();
        assert_eq!(
            st.admit(&cfg, 100, rt.share()).err(),
            Some(LimitRefusal::Concurrent(2))
        );
        // The store answers again: the whole limit.
        rt.share.store(1, Ordering::Release);
        assert!(st.admit(&cfg, 100, rt.share()).is_ok());
        let rt2 = Runtime::build(rt.config.clone(), Some(&rt), &Metrics::new());
        assert!(
            Arc::ptr_eq(&rt2.share, &rt.share),
            "the share survives a reload"
        );
    }
}
