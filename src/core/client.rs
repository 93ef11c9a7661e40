//! Which MCP client is calling (name and version), for feedback records and metrics.

use http::HeaderMap;

/// A client's self-description, capped in length: it comes from the caller and ends up in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientInfo {
    pub name: String,
    pub version: String,
}

impl ClientInfo {
    pub(crate) fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.chars().take(100).collect(),
            version: version.chars().take(50).collect(),
        }
    }

    /// `name/version` from the first product of a User-Agent header (Claude Code and Codex put their
    /// name and version there).
    pub(crate) fn from_user_agent(headers: &HeaderMap) -> Option<Self> {
        let agent = headers.get(http::header::USER_AGENT)?.to_str().ok()?;
        let first = agent.split_whitespace().next()?;
        let (name, version) = first.split_once('/').unwrap_or((first, ""));
        Some(Self::new(name, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_gives_the_first_product() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::USER_AGENT,
            "claude-code/2.1.3 (cli)".parse().unwrap(),
        );
        let client = ClientInfo::from_user_agent(&headers).unwrap();
        assert_eq!(
            (client.name.as_str(), client.version.as_str()),
            ("claude-code", "2.1.3")
        );
        headers.insert(http::header::USER_AGENT, "x".repeat(300).parse().unwrap());
        assert_eq!(
            ClientInfo::from_user_agent(&headers).unwrap().name.len(),
            100
        );
    }
}
