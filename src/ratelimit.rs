//! Request rate limits in fixed one-minute windows.
//!
//! Per-IP limits are counted in each process: they protect a replica from a flood, and sharing them would make
//! the database the bottleneck under exactly that flood. Per-principal limits are shared through PostgreSQL
//! when the replicas run on it (one upsert per request), so spreading calls across replicas does not multiply
//! a credential's allowance; a single SQLite node counts them in memory. Redis would also do, but it would be a
//! second stateful dependency for one counter, and PostgreSQL is already required for several replicas.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::store::Store;

const WINDOW_MS: i64 = 60_000;
/// Local buckets kept before old windows are swept.
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

#[derive(Debug)]
pub struct RateLimiter {
    local: Mutex<HashMap<String, (i64, i64)>>,
    shared: Option<Store>,
    /// Until this time (ms), the shared counter is skipped after a failure.
    shared_down_until: AtomicI64,
}

impl RateLimiter {
    /// `shared` is the store when principal limits must hold across replicas (PostgreSQL).
    pub fn new(shared: Option<Store>) -> Self {
        Self {
            local: Mutex::new(HashMap::new()),
            shared,
            shared_down_until: AtomicI64::new(0),
        }
    }

    /// Counts a request in this process only.
    pub fn hit_local(&self, bucket: &str, limit: u32, now_ms: i64) -> Decision {
        let window = now_ms - now_ms.rem_euclid(WINDOW_MS);
        let count = {
            let Ok(mut map) = self.local.lock() else {
                return Decision::Allowed;
            };
            if map.len() >= MAX_LOCAL_BUCKETS {
                map.retain(|_, (w, _)| *w == window);
            }
            let entry = map.entry(bucket.to_owned()).or_insert((window, 0));
            if entry.0 != window {
                *entry = (window, 0);
            }
            entry.1 += 1;
            entry.1
        };
        decide(count, limit, window, now_ms)
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
        match tokio::time::timeout(SHARED_TIMEOUT, store.count_request(bucket, window)).await {
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
