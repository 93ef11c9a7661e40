//! In-flight `/mcp` requests per client address. One address may hold at most
//! `POLYTOMIC_MCP_MAX_CONCURRENT_REQUESTS_PER_IP` requests at once; its slot is taken before the server-wide
//! one, so a single address that stalls its request bodies holds its own share of the server's slots and no
//! more. Addresses with nothing in flight take no memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Each address with requests in flight, and its own semaphore.
#[derive(Debug)]
pub(crate) struct AddressSlots {
    per_address: usize,
    held: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// One request's slot for its address; dropping it frees the slot (and forgets the address once idle).
#[derive(Debug)]
pub(crate) struct AddressSlot {
    address: String,
    semaphore: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    held: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl AddressSlots {
    pub(crate) fn new(per_address: usize) -> Self {
        Self {
            per_address,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub(crate) fn per_address(&self) -> usize {
        self.per_address
    }

    /// A slot for `address`: at once when one is free, otherwise after waiting up to `wait`; `None` past that.
    pub(crate) async fn acquire(&self, address: &str, wait: Duration) -> Option<AddressSlot> {
        let semaphore = {
            let Ok(mut held) = self.held.lock() else {
                // A panic elsewhere poisoned the table; serving without the per-address cap beats refusing all.
                return Some(self.untracked());
            };
            match held.get(address) {
                Some(semaphore) => semaphore.clone(),
                None => held
                    .entry(address.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_address)))
                    .clone(),
            }
        };
        let mut slot = AddressSlot {
            address: address.to_owned(),
            semaphore: semaphore.clone(),
            permit: None,
            held: self.held.clone(),
        };
        slot.permit = match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if wait.is_zero() => None,
            Err(_) => tokio::time::timeout(wait, semaphore.acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        };
        // Without a permit the slot is dropped here, which forgets the address if nobody else uses it.
        slot.permit.is_some().then_some(slot)
    }

    fn untracked(&self) -> AddressSlot {
        AddressSlot {
            address: String::new(),
            semaphore: Arc::new(Semaphore::new(0)),
            permit: None,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.held.lock().map(|held| held.len()).unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        self.permit = None;
        if let Ok(mut held) = self.held.lock() {
            // Under the lock nobody can take a new reference: the table's and ours are the last two.
            if Arc::strong_count(&self.semaphore) == 2 {
                held.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_address_is_capped_and_others_are_not_affected() {
        let slots = AddressSlots::new(2);
        let a1 = slots.acquire("127.0.0.2", Duration::ZERO).await.unwrap();
        let _a2 = slots.acquire("127.0.0.2", Duration::ZERO).await.unwrap();
        assert!(slots.acquire("127.0.0.2", Duration::ZERO).await.is_none());
        let b = slots.acquire("127.0.0.3", Duration::ZERO).await.unwrap();
        drop(a1);
        assert!(slots.acquire("127.0.0.2", Duration::ZERO).await.is_some());
        drop(b);
        assert_eq!(
            slots.addresses(),
            1,
            "an address with nothing in flight is forgotten"
        );
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_slot_another_frees() {
        let slots = Arc::new(AddressSlots::new(1));
        let first = slots.acquire("127.0.0.2", Duration::ZERO).await.unwrap();
        let waiting = {
            let slots = slots.clone();
            tokio::spawn(async move {
                slots
                    .acquire("127.0.0.2", Duration::from_secs(60))
                    .await
                    .is_some()
            })
        };
        drop(first);
        assert!(waiting.await.unwrap());
        assert_eq!(slots.addresses(), 0);
    }
}
