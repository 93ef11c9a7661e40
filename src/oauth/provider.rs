//! The upstream (Polytomic) OAuth provider, through the `oauth2` crate: the authorize redirect with our own
//! PKCE, the code exchange, refreshes, and `GET /api/me` to learn who signed in; and, when
//! `POLYTOMIC_OAUTH_REVOKE_URL` is set, RFC 7009 revocation of a grant. `oauth2` 5 is built for reqwest 0.12,
//! so its requests go through a small adapter onto the server's one reqwest 0.13 client instead of pulling a
//! second HTTP stack. Revocation is a plain form POST of our own: `oauth2` refuses any revocation URL that is
//! not https, which would leave it untestable against a loopback provider.

use std::time::Duration;

use base64::Engine as _;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    TokenResponse, TokenUrl,
};
use serde_json::Value;
use url::Url;

use super::OAuthError;
use crate::config::Config;
use crate::core::CappedReadError;
use crate::secret::Secret;

/// Upper bound for one call to the provider (token exchange, refresh, `/api/me`).
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);
/// Token and `/api/me` answers are small; anything larger is not what we asked for.
const MAX_PROVIDER_RESPONSE: usize = 256 * 1024;

type ConfiguredClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

pub struct Provider {
    client: ConfiguredClient,
    scopes: Vec<String>,
    http: reqwest::Client,
    me_url: String,
    api_version: String,
    /// The provider's RFC 7009 revocation endpoint, with the client credentials it is called with.
    revocation: Option<Revocation>,
    /// `{PUBLIC_URL}/oauth/callback`: the redirect URI to register with the provider.
    pub redirect_uri: String,
}

struct Revocation {
    url: Url,
    client_id: String,
    client_secret: Option<Secret>,
}

/// Which upstream token a revocation names (RFC 7009 `token_type_hint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    fn hint(self) -> &'static str {
        match self {
            TokenKind::Access => "access_token",
            TokenKind::Refresh => "refresh_token",
        }
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// Tokens from the provider.
pub struct ProviderTokens {
    pub access: Secret,
    pub refresh: Option<Secret>,
    pub expires_in: Option<Duration>,
}

/// Why a token request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the code or refresh token: the person must sign in again.
    #[error("the provider refused the grant: {0}")]
    InvalidGrant(String),
    #[error("{0}")]
    Failed(String),
}

impl From<ProviderError> for OAuthError {
    fn from(error: ProviderError) -> Self {
        OAuthError::Provider(error.to_string())
    }
}

/// The person and organization behind an upstream token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    pub organization_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl Provider {
    pub fn from_config(
        config: &Config,
        issuer: &str,
        scopes: &[String],
        http: reqwest::Client,
    ) -> Result<Self, OAuthError> {
        let (Some(authorize), Some(token), Some(client_id)) = (
            config.oauth.oauth_authorize_url.as_ref(),
            config.oauth.oauth_token_url.as_ref(),
            config.oauth.oauth_client_id.as_ref(),
        ) else {
            return Err(OAuthError::Internal(
                "OAuth provider is not configured".into(),
            ));
        };
        let redirect_uri = format!("{issuer}/oauth/callback");
        let redirect = RedirectUrl::new(redirect_uri.clone())
            .map_err(|e| OAuthError::Internal(format!("bad callback URL: {e}")))?;
        let mut client = BasicClient::new(ClientId::new(client_id.clone()))
            .set_auth_uri(AuthUrl::from_url(authorize.clone()))
            .set_token_uri(TokenUrl::from_url(token.clone()))
            .set_redirect_uri(redirect);
        if let Some(secret) = &config.oauth.oauth_client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
        }
        let me_url = format!(
            "{}/api/me",
            config.upstream.base_url.as_str().trim_end_matches('/')
        );
        let revocation = config.oauth.oauth_revoke_url.clone().map(|url| Revocation {
            url,
            client_id: client_id.clone(),
            client_secret: config.oauth.oauth_client_secret.clone(),
        });
        Ok(Self {
            client,
            scopes: scopes.to_vec(),
            http,
            me_url,
            api_version: config.upstream.api_version.clone(),
            revocation,
            redirect_uri,
        })
    }

    /// Whether ending a sign-in here also revokes its grant at the provider.
    pub fn revokes(&self) -> bool {
        self.revocation.is_some()
    }

    /// RFC 7009: asks the provider to revoke `token` (and, for a refresh token, the grant behind it). The
    /// client authenticates as at the token endpoint: HTTP Basic with the secret, or `client_id` in the body
    /// for a public client. Nothing happens when no revocation endpoint is configured.
    pub async fn revoke(&self, token: &Secret, kind: TokenKind) -> Result<(), ProviderError> {
        let Some(revocation) = &self.revocation else {
            return Ok(());
        };
        // RFC 6749 §2.3.1: a confidential client uses HTTP Basic, both halves form-urlencoded before base64 (as
        // the token requests send them); a public client names itself in the body.
        let basic = revocation.client_secret.as_ref().map(|secret| {
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                encode(&revocation.client_id),
                encode(secret.expose())
            ))
        });
        let body = revocation_form(
            token,
            kind,
            basic.is_none().then_some(&revocation.client_id),
        );
        let mut request = self
            .http
            .post(revocation.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .timeout(PROVIDER_TIMEOUT)
            .body(body);
        if let Some(basic) = basic {
            request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let response = request.send().await.map_err(|e| {
            ProviderError::Failed(format!("revocation endpoint unreachable: {}", causes(&e)))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(ProviderError::Failed(format!(
            "revocation endpoint answered {status}"
        )))
    }

    /// Where to send the person's browser once they approved: the provider's authorize URL with our state
    /// and our own PKCE challenge.
    pub fn authorize_url(&self, state: &str, verifier: &str) -> Url {
        let verifier = PkceCodeVerifier::new(verifier.to_owned());
        let state = state.to_owned();
        let (url, _) = self
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier))
            .url();
        url
    }

    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &Secret,
    ) -> Result<ProviderTokens, ProviderError> {
        let send = self.sender();
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose().to_owned()))
            .request_async(&send)
            .await;
        tokens(response)
    }

    pub async fn refresh(&self, refresh: &Secret) -> Result<ProviderTokens, ProviderError> {
        let send = self.sender();
        let token = RefreshToken::new(refresh.expose().to_owned());
        let response = self
            .client
            .exchange_refresh_token(&token)
            .request_async(&send)
            .await;
        tokens(response)
    }

    /// `GET /api/me` with the upstream token: the user and the organization the credential belongs to.
    pub async fn identity(&self, access: &Secret) -> Result<Identity, OAuthError> {
        let response = self
            .http
            .get(&self.me_url)
            .bearer_auth(access.expose())
            .header("x-polytomic-version", &self.api_version)
            .header(http::header::ACCEPT, "application/json")
            .timeout(PROVIDER_TIMEOUT)
            .send()
            .await
            .map_err(|e| OAuthError::Provider(format!("GET /api/me: {e}")))?;
        let status = response.status();
        let body = read_capped(response)
            .await
            .map_err(|e| OAuthError::Provider(format!("GET /api/me: {e}")))?;
        if !status.is_success() {
            return Err(OAuthError::Provider(format!(
                "GET /api/me answered {status}"
            )));
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| OAuthError::Provider(format!("GET /api/me: not JSON ({e})")))?;
        let data = value.get("data").unwrap_or(&value);
        let text = |key: &str| {
            data.get(key).and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let user_id = text("id")
            .ok_or_else(|| OAuthError::Provider("GET /api/me: no user id in the answer".into()))?;
        Ok(Identity {
            user_id,
            organization_id: text("organization_id"),
        })
    }

    /// Adapts oauth2's request type onto our reqwest client.
    fn sender(
        &self,
    ) -> impl Fn(
        oauth2::HttpRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send>,
    > + use<> {
        let http = self.http.clone();
        move |request: oauth2::HttpRequest| {
            let http = http.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let response = http
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .timeout(PROVIDER_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| HttpError(e.to_string()))?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = read_capped(response).await.map_err(HttpError)?;
                let mut builder = http::Response::builder().status(status);
                if let Some(target) = builder.headers_mut() {
                    *target = headers;
                }
                builder.body(body).map_err(|e| HttpError(e.to_string()))
            })
        }
    }
}

/// An error with its causes (reqwest's own text stops at "error sending request").
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The RFC 7009 request body (built apart: the serializer is not `Send`, so it must not live across an await).
fn revocation_form(token: &Secret, kind: TokenKind, client_id: Option<&String>) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token.expose())
        .append_pair("token_type_hint", kind.hint());
    if let Some(client_id) = client_id {
        form.append_pair("client_id", client_id);
    }
    form.finish()
}

async fn read_capped(response: reqwest::Response) -> Result<Vec<u8>, String> {
    crate::core::read_capped(response, MAX_PROVIDER_RESPONSE)
        .await
        .map_err(|e| match e {
            CappedReadError::TooLarge { cap } => format!("answer larger than {cap} bytes"),
            CappedReadError::Read(e) => e.to_string(),
        })
}

fn tokens<T: TokenResponse>(
    response: Result<
        T,
        RequestTokenError<HttpError, oauth2::StandardErrorResponse<BasicErrorResponseType>>,
    >,
) -> Result<ProviderTokens, ProviderError> {
    match response {
        Ok(token) => Ok(ProviderTokens {
            access: Secret::new(token.access_token().secret().clone()),
            refresh: token
                .refresh_token()
                .map(|r| Secret::new(r.secret().clone())),
            expires_in: token.expires_in(),
        }),
        Err(RequestTokenError::ServerResponse(error))
            if matches!(error.error(), BasicErrorResponseType::InvalidGrant) =>
        {
            Err(ProviderError::InvalidGrant(
                error.error_description().cloned().unwrap_or_default(),
            ))
        }
        // The provider's error text never includes our secrets; the HTTP error text names only the URL.
        Err(RequestTokenError::ServerResponse(error)) => Err(ProviderError::Failed(format!(
            "token endpoint answered {}",
            error.error()
        ))),
        Err(RequestTokenError::Request(error)) => Err(ProviderError::Failed(format!(
            "token endpoint unreachable: {error}"
        ))),
        Err(RequestTokenError::Parse(error, _)) => Err(ProviderError::Failed(format!(
            "token endpoint answer not understood: {error}"
        ))),
        Err(RequestTokenError::Other(message)) => Err(ProviderError::Failed(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn a_revocation_names_the_token_and_its_kind_and_a_public_client_names_itself() {
        let token = Secret::new("up rt/1+&=".to_owned());
        let public = revocation_form(&token, TokenKind::Refresh, Some(&"client-1".to_owned()));
        assert_eq!(
            parsed(&public),
            [
                ("token".to_owned(), "up rt/1+&=".to_owned()),
                ("token_type_hint".to_owned(), "refresh_token".to_owned()),
                ("client_id".to_owned(), "client-1".to_owned()),
            ]
        );
        let confidential = revocation_form(&token, TokenKind::Access, None);
        assert_eq!(
            parsed(&confidential),
            [
                ("token".to_owned(), "up rt/1+&=".to_owned()),
                ("token_type_hint".to_owned(), "access_token".to_owned()),
            ]
        );
    }
}
