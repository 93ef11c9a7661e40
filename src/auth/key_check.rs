//! Whether Polytomic accepts an API key, asked on the key's first use and remembered briefly. Any bearer that
//! is not a token this server issued is taken for an API key; before it may write anything here (feedback,
//! shared rate-limit rows) Polytomic must have accepted it. The verdict is kept per key fingerprint (never the
//! key): accepted for 5 minutes, rejected for 1 minute, no verdict (Polytomic down) for 10 seconds. Requests
//! that arrive together with one key share one `GET /api/me`, and the table is bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::secret::Secret;
use crate::telemetry::{Metrics, ReasonLabels};
use crate::upstream::{KeyCheck, Upstream};

const ACCEPTED_FOR: Duration = Duration::from_secs(300);
const REJECTED_FOR: Duration = Duration::from_secs(60);
/// Short, so an outage is noticed over quickly, yet long enough that a burst does not ask once per request.
const UNKNOWN_FOR: Duration = Duration::from_secs(10);
/// Keys remembered at once. When full, expired verdicts go first, then arbitrary ones down to three quarters,
/// so a flood of made-up keys costs one sweep per quarter of the table rather than one per key.
const MAX_KEYS: usize = 10_000;

/// One key's verdict: empty while the first request for it asks Polytomic (the others wait on it).
#[derive(Debug, Default)]
struct Slot {
    verdict: OnceCell<(KeyCheck, Instant)>,
}

impl Slot {
    fn expired(&self, now: Instant) -> bool {
        self.verdict.get().is_some_and(|(_, until)| *until <= now)
    }
}

#[derive(Debug)]
pub(crate) struct KeyVerifier {
    upstream: Upstream,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    capacity: usize,
}

impl KeyVerifier {
    pub(crate) fn new(upstream: Upstream) -> Self {
        Self::with_capacity(upstream, MAX_KEYS)
    }

    fn with_capacity(upstream: Upstream, capacity: usize) -> Self {
        Self {
            upstream,
            slots: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Polytomic's verdict on `key` (identified by `fingerprint`), from the table or from one `GET /api/me`.
    pub(crate) async fn check(
        &self,
        key: &Secret,
        fingerprint: &str,
        metrics: &Metrics,
    ) -> KeyCheck {
        let slot = self.slot(fingerprint);
        let (verdict, _) = slot
            .verdict
            .get_or_init(|| async {
                let verdict = self.upstream.check_key(key).await;
                let (keep, outcome) = match &verdict {
                    KeyCheck::Accepted { .. } => (ACCEPTED_FOR, "accepted"),
                    KeyCheck::Rejected => (REJECTED_FOR, "rejected"),
                    KeyCheck::Unknown(reason) => {
                        tracing::warn!(principal = %fingerprint, %reason, "Polytomic gave no verdict on an API key; serving it unconfirmed for now");
                        (UNKNOWN_FOR, "unknown")
                    }
                };
                metrics
                    .key_checks
                    .get_or_create(&ReasonLabels { reason: outcome })
                    .inc();
                (verdict, Instant::now() + keep)
            })
            .await;
        verdict.clone()
    }

    /// The key's slot: the remembered one while it is fresh (or still being asked), else a new one.
    fn slot(&self, fingerprint: &str) -> Arc<Slot> {
        let now = Instant::now();
        let Ok(mut slots) = self.slots.lock() else {
            // A panic elsewhere poisoned the table: ask without remembering rather than fail the request.
            return Arc::new(Slot::default());
        };
        if let Some(slot) = slots.get(fingerprint)
            && !slot.expired(now)
        {
            return slot.clone();
        }
        if slots.len() >= self.capacity && !slots.contains_key(fingerprint) {
            slots.retain(|_, slot| !slot.expired(now));
            let keep = self.capacity * 3 / 4;
            if slots.len() > keep {
                let evict: Vec<String> = slots.keys().take(slots.len() - keep).cloned().collect();
                for key in evict {
                    slots.remove(&key);
                }
            }
        }
        let slot = Arc::new(Slot::default());
        slots.insert(fingerprint.to_owned(), slot.clone());
        slot
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.slots.lock().map(|slots| slots.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// An upstream on a port nothing listens on: every check ends at once without a verdict.
    fn unreachable_upstream() -> Upstream {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let config = crate::config::Config::parse_from(["polytomic-mcp", "--base-url", &base]);
        Upstream::new(&config.upstream, 1).unwrap()
    }

    #[tokio::test]
    async fn an_outage_is_no_verdict_and_is_remembered_briefly() {
        let verifier = KeyVerifier::new(unreachable_upstream());
        let key = Secret::new("pk_anything");
        let verdict = verifier
            .check(&key, &key.fingerprint(), &Metrics::new())
            .await;
        assert!(matches!(verdict, KeyCheck::Unknown(_)), "{verdict:?}");
        let slot = verifier.slot(&key.fingerprint());
        let (_, until) = slot.verdict.get().unwrap();
        assert!(*until <= Instant::now() + UNKNOWN_FOR);
    }

    #[tokio::test]
    async fn the_table_stays_bounded_under_a_flood_of_keys() {
        let verifier = KeyVerifier::with_capacity(unreachable_upstream(), 100);
        let metrics = Metrics::new();
        for n in 0..1_000 {
            let key = Secret::new(format!("junk-{n}"));
            verifier.check(&key, &key.fingerprint(), &metrics).await;
            assert!(verifier.remembered() <= 100);
        }
    }
}
