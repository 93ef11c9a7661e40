//! The catalog in service: built from the loaded index, swapped whole when a URL source is re-fetched.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Catalog;
use crate::core::{FirstRound, spawn_periodic};
use crate::openapi::{IndexSource, OperationIndex, load_index};

/// The current catalog; readers clone the `Arc` and keep a consistent snapshot for the whole request while a
/// refresh swaps in a new one.
#[derive(Debug, Clone)]
pub struct IndexHandle(Arc<RwLock<Arc<Catalog>>>);

impl IndexHandle {
    pub fn new(index: OperationIndex) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(Catalog::build(index)))))
    }

    pub fn current(&self) -> Arc<Catalog> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, index: OperationIndex) {
        let fresh = Arc::new(Catalog::build(index));
        match self.0.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }
}

/// Re-fetches a URL source periodically; a bad refresh is logged and the previous index stays in service.
pub fn spawn_refresh(
    handle: IndexHandle,
    source: IndexSource,
    every: Duration,
    http: reqwest::Client,
    shutdown: CancellationToken,
) {
    if !matches!(source, IndexSource::Url(_)) {
        return;
    }
    // The document was just loaded at start-up; the first refresh waits a whole period.
    spawn_periodic(every, FirstRound::AfterOnePeriod, shutdown, move || {
        let (handle, source, http) = (handle.clone(), source.clone(), http.clone());
        async move {
            match load_index(&source, &http).await {
                Ok(index) => {
                    tracing::info!(operations = index.operations.len(), source = %source.describe(), "OpenAPI index refreshed");
                    handle.replace(index);
                }
                Err(error) => {
                    tracing::warn!(%error, "OpenAPI refresh failed; keeping the previous index")
                }
            }
        }
    });
}
