//! Discovery: protected resource metadata (RFC 9728) and authorization server metadata (RFC 8414). Both name
//! only this origin, so a client never has to trust a second host.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;
use serde_json::json;

use super::OAuthState;
use super::clients::AUTH_METHODS;
use super::scope;

/// Discovery documents change only with configuration; let clients cache them briefly.
const CACHE: &str = "public, max-age=300";

/// `GET /.well-known/oauth-protected-resource[/mcp]`.
pub async fn protected_resource(State(state): State<OAuthState>) -> Response {
    let oauth = &*state.oauth;
    let mut body = json!({
        "resource": oauth.resource,
        "authorization_servers": [oauth.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "Polytomic MCP server",
    });
    body["scopes_supported"] = json!(scope::SUPPORTED);
    ([(header::CACHE_CONTROL, CACHE)], axum::Json(body)).into_response()
}

/// `GET /.well-known/oauth-authorization-server`.
pub async fn authorization_server(State(state): State<OAuthState>) -> Response {
    let oauth = &*state.oauth;
    let issuer = &oauth.issuer;
    let body = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "registration_endpoint": format!("{issuer}/register"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": scope::SUPPORTED,
    });
    ([(header::CACHE_CONTROL, CACHE)], axum::Json(body)).into_response()
}
