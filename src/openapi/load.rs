//! Where the index comes from (embedded, a file, or a URL that is re-fetched) and how it is swapped.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::OperationIndex;
use crate::search::Catalog;

/// Our own description of the Polytomic API, compiled into the binary.
pub const EMBEDDED_DOCUMENT: &str = include_str!("../../openapi/polytomic.json");
/// Larger documents are refused rather than buffered without bound.
const MAX_DOCUMENT_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone)]
pub enum IndexSource {
    Embedded,
    File(String),
    Url(url::Url),
}

impl IndexSource {
    pub fn from_setting(setting: Option<&str>) -> Self {
        match setting {
            None => Self::Embedded,
            Some(value) => match url::Url::parse(value) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Self::Url(url),
                _ => Self::File(value.to_owned()),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Embedded => "embedded document".into(),
            Self::File(path) => format!("file {path}"),
            Self::Url(url) => format!("URL {url}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("POLYTOMIC_MCP_OPENAPI: cannot read {source_name}: {reason}")]
    Read { source_name: String, reason: String },
    #[error("POLYTOMIC_MCP_OPENAPI: {source_name} is not valid JSON: {reason}")]
    Parse { source_name: String, reason: String },
    #[error("POLYTOMIC_MCP_OPENAPI: {source_name} is not a usable OpenAPI document: {reason}")]
    Invalid { source_name: String, reason: String },
}

/// Loads and indexes the document once.
pub async fn load_index(
    source: &IndexSource,
    http: &reqwest::Client,
) -> Result<OperationIndex, LoadError> {
    let source_name = source.describe();
    let text = match source {
        IndexSource::Embedded => EMBEDDED_DOCUMENT.to_owned(),
        IndexSource::File(path) => {
            tokio::fs::read_to_string(path)
                .await
                .map_err(|e| LoadError::Read {
                    source_name: source_name.clone(),
                    reason: e.to_string(),
                })?
        }
        IndexSource::Url(url) => fetch(http, url).await.map_err(|reason| LoadError::Read {
            source_name: source_name.clone(),
            reason,
        })?,
    };
    index_text(&text, &source_name)
}

pub fn index_text(text: &str, source_name: &str) -> Result<OperationIndex, LoadError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| LoadError::Parse {
        source_name: source_name.to_owned(),
        reason: e.to_string(),
    })?;
    OperationIndex::from_document(&doc).map_err(|reason| LoadError::Invalid {
        source_name: source_name.to_owned(),
        reason,
    })
}

async fn fetch(http: &reqwest::Client, url: &url::Url) -> Result<String, String> {
    let mut response = http
        .get(url.clone())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("HTTP status {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the body failed: {e}"))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("document larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "the body is not UTF-8".into())
}

/// The current index; readers clone the `Arc` and keep a consistent snapshot for the whole request while a
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
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await; // the first tick fires at once; the document was just loaded
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
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
