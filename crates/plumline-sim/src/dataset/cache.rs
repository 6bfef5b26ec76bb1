//! The days held: generated days in a bounded LRU cache, and days patched
//! by mutations, which take precedence and are never evicted.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};

use tracing::debug;

use super::Simulator;
use super::generation::Day;
use crate::behaviour::Mutation;
use crate::rng::Rng;

/// Days changed by mutations, and what inserting calls handed out.
#[derive(Default)]
pub(super) struct Patches {
    days: HashMap<i64, Arc<Day>>,
    /// Session-id prefixes handed out to inserted calls, per (number, day).
    pub(super) fresh: HashMap<(u16, i64), u64>,
    mutations: u64,
}

/// Generated days by index, with the tick of their last use.
pub(super) struct DayCache {
    days: HashMap<i64, (Arc<Day>, u64)>,
    tick: u64,
    resident_calls: usize,
}

impl DayCache {
    pub(super) fn new() -> Self {
        DayCache { days: HashMap::new(), tick: 0, resident_calls: 0 }
    }

    /// A new tick, and day `d` if cached (marked used at it).
    fn touch(&mut self, d: i64) -> Option<Arc<Day>> {
        self.tick += 1;
        let tick = self.tick;
        self.days.get_mut(&d).map(|entry| {
            entry.1 = tick;
            Arc::clone(&entry.0)
        })
    }
}

impl Day {
    fn resident_calls(&self) -> usize {
        self.recs.len()
    }
}

impl Simulator {
    /// Calls currently held in the day cache.
    #[must_use]
    pub(crate) fn cached_calls(&self) -> usize {
        self.inner.cache.lock().unwrap_or_else(PoisonError::into_inner).resident_calls
    }

    pub(super) fn is_patched(&self, d: i64) -> bool {
        self.inner.patched.load(Ordering::Acquire) && self.patches().days.contains_key(&d)
    }

    pub(super) fn patches(&self) -> MutexGuard<'_, Patches> {
        self.inner.patches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn day(&self, d: i64) -> Arc<Day> {
        if self.inner.patched.load(Ordering::Acquire)
            && let Some(day) = self.patches().days.get(&d)
        {
            return Arc::clone(day);
        }
        if let Some(day) = self.inner.cache.lock().unwrap_or_else(PoisonError::into_inner).touch(d) {
            return day;
        }
        // Generated outside the lock so other days stay servable meanwhile;
        // two requests racing for the same day generate it twice, identically.
        let day = Arc::new(self.generate(d));
        debug!(day = d, n_calls = day.recs.len(), "generated day");
        let mut cache = self.inner.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(day) = cache.touch(d) {
            return day;
        }
        let tick = cache.tick;
        cache.resident_calls += day.resident_calls();
        cache.days.insert(d, (Arc::clone(&day), tick));
        let budget = self.inner.config.cache_calls;
        while cache.resident_calls > budget && cache.days.len() > 1 {
            let oldest =
                cache.days.iter().filter(|(k, _)| **k != d).min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k);
            let Some(oldest) = oldest else { break };
            if let Some((evicted, _)) = cache.days.remove(&oldest) {
                cache.resident_calls -= evicted.resident_calls();
            }
        }
        day
    }

    /// Mutations applied so far.
    #[must_use]
    pub fn mutations(&self) -> u64 {
        self.patches().mutations
    }

    /// Applies one `mutation` to the listing of `[start, end_inclusive]`
    /// (optionally one number) at a position drawn from `rng` in
    /// `[0, region_end)` (`None`: the whole listing). Returns whether the
    /// data changed (an empty listing, or no fresh session id left, changes
    /// nothing).
    pub(crate) fn mutate(
        &self,
        start: i64,
        end_inclusive: i64,
        number: Option<&str>,
        region_end: Option<u64>,
        mutation: Mutation,
        rng: &mut Rng,
    ) -> bool {
        let _guard = self.inner.mutating.lock().unwrap_or_else(PoisonError::into_inner);
        let listing = self.resolve(start, end_inclusive, number, usize::MAX, 0);
        let len = listing.items.len() as u64;
        if len == 0 {
            return false;
        }
        let hi = region_end.map_or(len, |e| e.clamp(1, len));
        let Some(&(slot, index)) = usize::try_from(rng.below(hi)).ok().and_then(|p| listing.items.get(p))
        else {
            return false;
        };
        let day = &listing.days[slot as usize];
        let index = index as usize;
        let rec = day.recs[index];
        let mut recs = day.recs.to_vec();
        if matches!(mutation, Mutation::Insert | Mutation::Swap) {
            let Some(fresh) = self.fresh_rec(day.index, rec, rng) else {
                return false;
            };
            recs.push(fresh);
        }
        if matches!(mutation, Mutation::Remove | Mutation::Swap) {
            recs.remove(index);
        }
        let patched = Arc::new(self.build_day(day.index, recs));
        debug!(day = day.index, mutation = ?mutation, n_calls = patched.recs.len(), "mutated day");
        let mut all = self.patches();
        all.days.insert(day.index, patched);
        all.mutations += 1;
        self.inner.patched.store(true, Ordering::Release);
        true
    }
}
