//! Where the index comes from (embedded, a file, or a URL that is re-fetched) and how it is swapped.

use std::time::Duration;

use serde_json::Value;

use super::OperationIndex;
use crate::core::{CappedReadError, read_capped};

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
    let response = http
        .get(url.clone())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("HTTP status {}", response.status()));
    }
    let body = read_capped(response, MAX_DOCUMENT_BYTES)
        .await
        .map_err(|e| match e {
            CappedReadError::TooLarge { cap } => format!("document larger than {cap} bytes"),
            CappedReadError::Read(e) => format!("reading the body failed: {e}"),
        })?;
    String::from_utf8(body).map_err(|_| "the body is not UTF-8".into())
}
