//! The checks in front of `/mcp` that need no feature: the bearer token's shape, the session headers, an
//! API key's principal, and Host/Origin. They run before method routing (see `http::front`), so every request
//! is checked first and a client's discovery never meets a 405 before a 401.

use http::{HeaderMap, Uri, header};

use crate::core::{Credential, HeaderError, Modes, Principal, parse_modes};
use crate::error::ApiError;
use crate::secret::Secret;
use crate::state::AppState;

/// Longest bearer token accepted; real keys and our tokens are far shorter.
const MAX_TOKEN_LEN: usize = 4096;

/// Why a request carries no usable bearer token: a metric label and the message for the caller.
#[derive(Debug)]
pub(crate) struct TokenError {
    pub reason: &'static str,
    pub message: String,
}

/// The effective modes from the `X-Polytomic-*` headers under the server's cap; a bad header is a 400.
pub(crate) fn request_modes(state: &AppState, headers: &HeaderMap) -> Result<Modes, ApiError> {
    parse_modes(headers, state.config.limits.max_access_mode).map_err(|error| {
        state.metrics.auth_failure("bad_header");
        ApiError::BadHeader(error)
    })
}

/// The principal for a bearer token that is not one this server issued: a Polytomic API key, passed on
/// upstream unchanged on each `execute` call. Unconfirmed until [`super::KeyVerifier`] has Polytomic's word.
pub(crate) fn api_key_principal(token: Secret, modes: Modes) -> Principal {
    let fingerprint = token.fingerprint();
    Principal {
        credential: Credential::ApiKey(token),
        auth_mode: modes.auth_mode,
        access_mode: modes.access_mode,
        partner_org_id: modes.partner_org_id,
        grant: None,
        organization_id: None,
        user_id: None,
        verified: false,
        fingerprint,
    }
}

/// Extracts the token from `Authorization: Bearer <token>`; tokens anywhere else are ignored on purpose.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Secret, TokenError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(TokenError {
            reason: "missing_token",
            message: "missing Authorization header: send `Authorization: Bearer <your Polytomic API key>`"
                .into(),
        });
    };
    if values.next().is_some() {
        return Err(TokenError {
            reason: "malformed_token",
            message: "send exactly one Authorization header".into(),
        });
    }
    let value = value.to_str().map_err(|_| TokenError {
        reason: "malformed_token",
        message: "the Authorization header must be plain ASCII".to_owned(),
    })?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError {
            reason: "malformed_token",
            message: "the Authorization header must use the Bearer scheme: `Authorization: Bearer <your Polytomic API key>`".into(),
        });
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError {
            reason: "missing_token",
            message: "the bearer token is empty: put your Polytomic API key after `Bearer `".into(),
        });
    }
    if token.len() > MAX_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError {
            reason: "malformed_token",
            message: "the bearer token must be one word of printable ASCII: send the raw key after `Bearer `, once".into(),
        });
    }
    Ok(Secret::new(token))
}

/// The refusal for a request whose `Host` is not this server's, or a browser request from an origin not
/// allowed; `None` lets it through.
/// DNS-rebinding protection for `/mcp`: a page on another site must not be able to drive a local server.
pub(crate) fn check_host_and_origin(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(), ApiError> {
    // Two values leave it open which one a proxy or a later check reads; neither is trusted.
    for (name, shown) in [("host", "Host"), ("origin", "Origin")] {
        if headers.get_all(name).iter().nth(1).is_some() {
            state.metrics.auth_failure("bad_header");
            return Err(ApiError::BadHeader(HeaderError {
                header: name,
                message: format!("{shown} was sent more than once; send it once"),
            }));
        }
    }
    let host = match headers.get(header::HOST) {
        Some(value) => value.to_str().ok().map(std::borrow::Cow::Borrowed),
        None => uri
            .authority()
            .map(|a| std::borrow::Cow::Owned(a.to_string())),
    };
    let Some(host) = host else {
        return Err(ApiError::Forbidden(
            "the request has no readable Host header".into(),
        ));
    };
    if !host_allowed(&state.allowed_hosts, &host) {
        state.metrics.auth_failure("bad_host");
        return Err(ApiError::Forbidden(format!(
            "Host {:?} is not served here; this server answers for {} (set POLYTOMIC_MCP_PUBLIC_URL to the URL clients use)",
            host.chars().take(100).collect::<String>(),
            state.public_url.as_str().trim_end_matches('/')
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default().trim();
        if !state
            .allowed_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin))
        {
            state.metrics.auth_failure("bad_origin");
            return Err(ApiError::Forbidden(format!(
                "Origin {:?} is not allowed to call this server; allowed: {} (operators add browser origins with POLYTOMIC_MCP_ALLOWED_ORIGINS)",
                origin
                    .to_ascii_lowercase()
                    .chars()
                    .take(100)
                    .collect::<String>(),
                state.allowed_origins.join(", ")
            )));
        }
    }
    Ok(())
}

fn host_allowed(allowed: &[String], host: &str) -> bool {
    let host = host.trim();
    allowed.iter().any(|name| name.eq_ignore_ascii_case(host))
}

/// The `Host` values that address this server: the public URL's authority (with and without its default
/// port) and, when the public URL is loopback, the other loopback spellings.
pub(crate) fn allowed_hosts(public_url: &url::Url) -> Vec<String> {
    let mut hosts = Vec::new();
    let Some(host) = public_url.host_str() else {
        return hosts;
    };
    let host = host.to_ascii_lowercase();
    let loopback = matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]");
    let names: Vec<String> = if loopback {
        vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]
    } else {
        vec![host]
    };
    for name in names {
        match public_url.port() {
            Some(port) => hosts.push(format!("{name}:{port}")),
            None => {
                hosts.push(name.clone());
                if let Some(default) = public_url.port_or_known_default() {
                    hosts.push(format!("{name}:{default}"));
                }
            }
        }
    }
    hosts
}

/// Browser origins allowed: the public origin (plus loopback spellings) and the configured extras.
pub(crate) fn allowed_origins(public_url: &url::Url, extra: &[url::Url]) -> Vec<String> {
    let mut origins: Vec<String> = allowed_hosts(public_url)
        .into_iter()
        .map(|host| format!("{}://{host}", public_url.scheme()))
        .collect();
    for url in extra {
        origins.push(url.origin().ascii_serialization().to_ascii_lowercase());
    }
    origins.sort();
    origins.dedup();
    origins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_for_a_public_https_url() {
        let url = url::Url::parse("https://mcp.example.com").unwrap();
        assert_eq!(
            allowed_hosts(&url),
            ["mcp.example.com", "mcp.example.com:443"]
        );
        assert_eq!(
            allowed_origins(&url, &[]),
            ["https://mcp.example.com", "https://mcp.example.com:443"]
        );
    }

    #[test]
    fn loopback_accepts_every_loopback_spelling() {
        let url = url::Url::parse("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            allowed_hosts(&url),
            ["localhost:3000", "127.0.0.1:3000", "[::1]:3000"]
        );
        assert!(!host_allowed(&allowed_hosts(&url), "evil.example:3000"));
        assert!(host_allowed(&allowed_hosts(&url), "LOCALHOST:3000"));
    }

    #[test]
    fn bearer_parsing() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers).unwrap_err().reason, "missing_token");
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(
            bearer_token(&headers).unwrap_err().reason,
            "malformed_token"
        );
        headers.insert(header::AUTHORIZATION, "bearer  key-123 ".parse().unwrap());
        assert_eq!(bearer_token(&headers).unwrap().expose(), "key-123");
        headers.insert(header::AUTHORIZATION, "Bearer a b".parse().unwrap());
        assert_eq!(
            bearer_token(&headers).unwrap_err().reason,
            "malformed_token"
        );
    }
}
