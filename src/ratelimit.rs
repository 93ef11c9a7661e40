//! Request rate limits in fixed one-minute windows.
//!
//! Per-IP limits are counted in each process: they protect a replica from a flood, and sharing them would make
//! the database the bottleneck under exactly that flood. Per-principal limits are shared through PostgreSQL
//! when the replicas run on it (one upsert per request), so spreading calls across replicas does not multiply
//! a credential's allowance; a single SQLite node counts them in memory. Redis would also do, but it would be a
//! second stateful dependency for one counter, and PostgreSQL is already required for several replicas.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tracing::Instrument;

use crate::store::Store;

const WINDOW_MS: i64 = 60_000;
/// Local buckets counted in one window; addresses beyond it in the same window are let through uncounted, so
/// a flood from more addresses than this cannot grow memory (and each of those addresses is new anyway).
const MAX_LOCAL_BUCKETS: usize = 100_000;
/// A shared count slower than this is abandoned for the local one, so a sick database cannot slow requests.
const SHARED_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed shared count, count locally for this long before asking the database again.
const SHARED_BACKOFF_MS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Over the limit; the window ends in this many seconds.
    Limited {
        retry_after_secs: u64,
        count: i64,
    },
}

/// Marks a request whose principal is over its rate limit (but not far over it): tools answer it with an
/// error telling the agent to slow down, so the agent reads why instead of seeing a transport failure.
#[derive(Debug, Clone, Copy)]
pub struct OverLimit {
    pub retry_after_secs: u64,
}

/// This process's counts for the current window only: a new window starts with an empty table (the old one
/// is dropped once, outside the lock), so no request ever sweeps the table.
#[derive(Debug, Default)]
struct LocalWindow {
    start_ms: i64,
    counts: HashMap<String, i64>,
}

#[derive(Debug)]
pub struct RateLimiter {
    local: Mutex<LocalWindow>,
    /// Buckets dropped at window changes: the only sweeping work there is.
    swept: AtomicU64,
    shared: Option<Store>,
    /// Until this time (ms), the shared counter is skipped after a failure.
    shared_down_until: AtomicI64,
}

impl RateLimiter {
    /// `shared` is the store when principal limits must hold across replicas (PostgreSQL).
    pub fn new(shared: Option<Store>) -> Self {
        Self {
            local: Mutex::new(LocalWindow::default()),
            swept: AtomicU64::new(0),
            shared,
            shared_down_until: AtomicI64::new(0),
        }
    }

    /// Counts a request in this process only.
    pub fn hit_local(&self, bucket: &str, limit: u32, now_ms: i64) -> Decision {
        let window = now_ms - now_ms.rem_euclid(WINDOW_MS);
        let mut expired = None;
        let counted = {
            let Ok(mut local) = self.local.lock() else {
                return Decision::Allowed;
            };
            if window > local.start_ms {
                local.start_ms = window;
                expired = Some(std::mem::take(&mut local.counts));
            }
            // A request stamped just before the window changed counts in the new one.
            let start_ms = local.start_ms;
            let counts = &mut local.counts;
            let count = if let Some(count) = counts.get_mut(bucket) {
                *count += 1;
                Some(*count)
            } else if counts.len() < MAX_LOCAL_BUCKETS {
                counts.insert(bucket.to_owned(), 1);
                Some(1)
            } else {
                None
            };
            count.map(|count| (count, start_ms))
        };
        if let Some(expired) = expired {
            self.swept
                .fetch_add(expired.len() as u64, Ordering::Relaxed);
            drop(expired);
        }
        match counted {
            Some((count, start_ms)) => decide(count, limit, start_ms, now_ms),
            None => Decision::Allowed,
        }
    }

    /// Counts a request across replicas when a shared store is configured; falls back to this process's
    /// count if the store does not answer (a database outage must not stop API-key calls).
    pub async fn hit_shared(&self, bucket: &str, limit: u32, now_ms: i64) -> Decision {
        let Some(store) = &self.shared else {
            return self.hit_local(bucket, limit, now_ms);
        };
        if now_ms < self.shared_down_until.load(Ordering::Relaxed) {
            return self.hit_local(bucket, limit, now_ms);
        }
        let window = now_ms - now_ms.rem_euclid(WINDOW_MS);
        let span = crate::telemetry::otel::trace_span!(
            "store count_request",
            db.operation.name = "count_request"
        );
        let counted = tokio::time::timeout(SHARED_TIMEOUT, store.count_request(bucket, window))
            .instrument(span)
            .await;
        match counted {
            Ok(Ok(count)) => decide(count, limit, window, now_ms),
            failed => {
                let reason = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {SHARED_TIMEOUT:?}"),
                };
                tracing::warn!(%reason, "shared rate-limit counter unavailable; counting locally for 10 s");
                self.shared_down_until
                    .store(now_ms + SHARED_BACKOFF_MS, Ordering::Relaxed);
                self.hit_local(bucket, limit, now_ms)
            }
        }
    }
}

#[cfg(test)]
impl RateLimiter {
    fn local_len(&self) -> usize {
        self.local
            .lock()
            .map(|local| local.counts.len())
            .unwrap_or(0)
    }
}

fn decide(count: i64, limit: u32, window: i64, now_ms: i64) -> Decision {
    if count <= i64::from(limit) {
        return Decision::Allowed;
    }
    let remaining_ms = (window + WINDOW_MS - now_ms).max(1_000);
    Decision::Limited {
        retry_after_secs: u64::try_from((remaining_ms + 999) / 1000).unwrap_or(60),
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100,000 addresses fill the table, more keep arriving within the minute, then the next minute brings
    /// 100,000 new ones: the sweeping stays proportional to the buckets, not to buckets times new addresses.
    #[test]
    fn sweeping_the_local_table_is_amortised_at_a_hundred_thousand_addresses() {
        let limiter = RateLimiter::new(None);
        let t0 = 120_000;
        let addresses = |from: usize, n: usize| {
            (from..from + n).map(|i| format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        };
        for bucket in addresses(0, MAX_LOCAL_BUCKETS) {
            limiter.hit_local(&bucket, 10, t0);
        }
        for bucket in addresses(MAX_LOCAL_BUCKETS, 2_000) {
            assert_eq!(
                limiter.hit_local(&bucket, 10, t0 + 1_000),
                Decision::Allowed
            );
        }
        for bucket in addresses(2 * MAX_LOCAL_BUCKETS, MAX_LOCAL_BUCKETS) {
            limiter.hit_local(&bucket, 10, t0 + WINDOW_MS);
        }
        let inserted = (2 * MAX_LOCAL_BUCKETS + 2_000) as u64;
        let work = limiter.swept.load(Ordering::Relaxed);
        assert!(
            work <= inserted,
            "swept {work} entries for {inserted} new buckets"
        );
        assert!(
            limiter.local_len() <= MAX_LOCAL_BUCKETS,
            "the table stays bounded"
        );
        // An address already counted in the full table is still limited.
        for _ in 0..10 {
            limiter.hit_local("ip:10.3.13.64", 10, t0 + WINDOW_MS + 1);
        }
        assert!(matches!(
            limiter.hit_local("ip:10.3.13.64", 10, t0 + WINDOW_MS + 2),
            Decision::Limited { .. }
        ));
    }

    #[test]
    fn limits_per_bucket_and_resets_each_window() {
        let limiter = RateLimiter::new(None);
        let t0 = 120_000;
        for _ in 0..3 {
            assert_eq!(limiter.hit_local("a", 3, t0), Decision::Allowed);
        }
        assert!(matches!(
            limiter.hit_local("a", 3, t0 + 10_000),
            Decision::Limited {
                retry_after_secs: 50,
                ..
            }
        ));
        assert_eq!(limiter.hit_local("b", 3, t0), Decision::Allowed);
        assert_eq!(limiter.hit_local("a", 3, t0 + WINDOW_MS), Decision::Allowed);
    }
}
