//! The browser part of the flow: `/authorize` checks the request and shows a consent page; the person's
//! approval (a POST bound to their browser by a cookie and to this request by its id) sends them to the
//! Polytomic provider with our own state and PKCE; `/oauth/callback` turns the provider's answer into an
//! upstream session and one of our authorization codes, and sends the browser back to the client.
//!
//! The consent step is what keeps this proxy from being a confused deputy: the provider knows only this
//! server's client id, so without it any registered client could ride on a person's existing provider login.

use std::collections::HashMap;

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use url::Url;

use super::OAuthState;
use super::clients::{self, Client, ClientError, ClientKind};
use super::keys::{hash, same};
use super::{
    CODE_PREFIX, CODE_TTL_MS, OAuth, OAuthError, PENDING_TTL_MS, REFRESH_TTL_MS, now_ms, scope,
};
use crate::core::AccessMode;
use crate::store::oauth::{CodeRow, PendingRow, PendingStatus, SessionRow};

const COOKIE_PREFIX: &str = "pmcp_consent_";
/// Set when the person approves a client on the consent page; lets that client's request errors go back to it.
const APPROVED_COOKIE_PREFIX: &str = "pmcp_approved_";
const MAX_STATE_LEN: usize = 2048;
/// RFC 7636: the S256 challenge of a 32-byte verifier is 43 characters; allow the full verifier range.
const CHALLENGE_LEN: std::ops::RangeInclusive<usize> = 43..=128;

// ------------------------------------------------------------------ GET /authorize

pub async fn authorize(
    State(state): State<OAuthState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let oauth = &*state.oauth;
    let params = match unique_params(pairs) {
        Ok(params) => params,
        Err(refusal) => return refusal.page(),
    };
    let param = |name: &str| param(&params, name);
    // Until client and redirect URI are known to be good, errors are shown here, never redirected.
    let (client, redirect_uri) = match trusted_client(&state, &params).await {
        Ok(found) => found,
        Err(refusal) => return refusal.page(),
    };
    let client_state = param("state");
    let (challenge, resource) = match check_request(oauth, &params) {
        Ok(checked) => checked,
        Err((error, description)) if redirect_trusted(&headers, &client, redirect_uri) => {
            return redirect_to_client(
                oauth,
                redirect_uri,
                client_state,
                &[("error", error), ("error_description", &description)],
            );
        }
        Err((error, description)) => {
            return PageRefusal::bad(
                "This sign-in request cannot be completed",
                format!(
                    "The app asked for something this server does not allow ({error}: {description}). This server \
                     does not send you back to the app's address on its own, because nobody has approved the app \
                     in this browser yet. Return to the app and start the connection again; if this keeps \
                     happening, the app needs fixing."
                ),
            )
            .page();
        }
    };

    let choice = AccessChoice::new(
        oauth.max_access,
        scope::requested_at_authorize(param("scope")),
    );
    let now = now_ms();
    let (id, browser_token) = match (oauth.keys.token(""), oauth.keys.token("")) {
        (Ok(id), Ok(token)) => (id, token),
        (Err(error), _) | (_, Err(error)) => return server_error_page(error),
    };
    let pending = PendingRow {
        id: id.clone(),
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        state: client_state.map(str::to_owned),
        code_challenge: challenge.to_owned(),
        // Until the person chooses, the most they may grant; replaced by their choice at approval.
        scope: Some(scope::granting(choice.offered).to_owned()),
        resource: resource.map(str::to_owned),
        browser_hash: hash(&browser_token),
        status: PendingStatus::Consent,
        upstream_verifier: None,
        created_at_ms: now,
        expires_at_ms: now + PENDING_TTL_MS,
    };
    if let Err(error) = state.store.insert_pending(&pending).await {
        return server_error_page(error.into());
    }
    oauth.maybe_purge(&state.store).await;
    let mut response = html(
        StatusCode::OK,
        consent_page(oauth, &client, redirect_uri, &id, &browser_token, choice),
    );
    set_cookie(
        &mut response,
        &cookie(oauth, &id, &browser_token, PENDING_TTL_MS / 1000),
    );
    response
}

/// The access the consent page offers: never more than the server's cap or than the client asked for, and
/// read-only preselected unless the client asked for write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AccessChoice {
    offered: AccessMode,
    preselected: AccessMode,
    /// Why only read-only is offered, when it is.
    limited_by_cap: bool,
}

impl AccessChoice {
    fn new(cap: AccessMode, requested: Option<AccessMode>) -> Self {
        let offered = cap.min(requested.unwrap_or(AccessMode::FullAccess));
        let preselected = match requested {
            Some(AccessMode::FullAccess) => offered,
            _ => AccessMode::ReadOnly,
        };
        Self {
            offered,
            preselected,
            limited_by_cap: cap == AccessMode::ReadOnly,
        }
    }
}

/// Why an authorization request is answered with a page of ours instead of a redirect to the client.
#[derive(Debug)]
enum PageRefusal {
    BadRequest {
        title: &'static str,
        message: String,
    },
    Server(OAuthError),
}

impl PageRefusal {
    fn bad(title: &'static str, message: impl Into<String>) -> Self {
        PageRefusal::BadRequest {
            title,
            message: message.into(),
        }
    }

    fn page(self) -> Response {
        match self {
            PageRefusal::BadRequest { title, message } => {
                error_page(StatusCode::BAD_REQUEST, title, &message)
            }
            PageRefusal::Server(error) => server_error_page(error),
        }
    }
}

/// The query parameters, each at most once.
fn unique_params(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, PageRefusal> {
    let mut params: HashMap<String, String> = HashMap::new();
    for (name, value) in pairs {
        if params.contains_key(&name) {
            return Err(PageRefusal::bad(
                "The sign-in request is malformed",
                format!(
                    "The parameter {name:?} appears more than once. Start the connection again from your app."
                ),
            ));
        }
        params.insert(name, value);
    }
    Ok(params)
}

/// A parameter's value; an empty value counts as absent.
fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The client and the redirect URI it registered; anything wrong with either is an error page, because a
/// redirect could lead the person to a place the client never named.
async fn trusted_client<'a>(
    state: &OAuthState,
    params: &'a HashMap<String, String>,
) -> Result<(Client, &'a str), PageRefusal> {
    let Some(client_id) = param(params, "client_id") else {
        return Err(PageRefusal::bad(
            "The sign-in request is incomplete",
            "The request has no client_id. Start the connection again from your app.",
        ));
    };
    let client = match clients::resolve(&state.oauth, &state.store, client_id).await {
        Ok(client) => client,
        Err(ClientError::Server(error)) => return Err(PageRefusal::Server(error)),
        Err(error) => {
            return Err(PageRefusal::bad(
                "This app is not recognised",
                format!("{error}. Remove the connection in your app and add it again."),
            ));
        }
    };
    let Some(redirect_uri) = param(params, "redirect_uri") else {
        return Err(PageRefusal::bad(
            "The sign-in request is incomplete",
            "The request has no redirect_uri. Start the connection again from your app.",
        ));
    };
    if !client.allows_redirect(redirect_uri) {
        return Err(PageRefusal::bad(
            "The app's return address is not registered",
            "The redirect_uri of this request is not one the app registered, so the server will not send you there. \
             Remove the connection in your app and add it again.",
        ));
    }
    Ok((client, redirect_uri))
}

/// Whether a request error may go back to the client by an automatic redirect (RFC 9700 §4.11.2 allows it
/// only to a trusted redirect URI). Anyone can register any https address, so an error redirect to it would
/// make this server an open redirector. Trusted are: a loopback address (an app on the person's own computer,
/// which no one else can stand up), and any redirect of a client this browser has approved on the consent page
/// (the approval cookie). A CIMD client gets no exception: an attacker can publish a document naming their own
/// site as easily as they can register it.
fn redirect_trusted(headers: &HeaderMap, client: &Client, redirect_uri: &str) -> bool {
    let loopback = Url::parse(redirect_uri).is_ok_and(|url| {
        url.scheme() == "http" && url.host_str().is_some_and(clients::is_loopback_host)
    });
    loopback || read_cookie(headers, &approved_cookie_name(&client.id)).is_some()
}

/// The cookie that marks a client as approved in this browser; named by a hash, since a client id may be a URL.
fn approved_cookie_name(client_id: &str) -> String {
    format!("{APPROVED_COOKIE_PREFIX}{}", &hash(client_id)[..24])
}

/// The PKCE challenge and the `resource`, once the rest of the request is acceptable; otherwise the OAuth
/// error and its description for the client.
fn check_request<'a>(
    oauth: &OAuth,
    params: &'a HashMap<String, String>,
) -> Result<(&'a str, Option<&'a str>), (&'static str, String)> {
    let param = |name: &str| param(params, name);
    let invalid = |description: &str| ("invalid_request", description.to_owned());
    if param("state").is_some_and(|s| s.len() > MAX_STATE_LEN) {
        return Err(invalid("state is too long"));
    }
    if param("response_type") != Some("code") {
        return Err((
            "unsupported_response_type",
            "only response_type=code is supported".into(),
        ));
    }
    let Some(challenge) = param("code_challenge") else {
        return Err(invalid(
            "PKCE is required: send code_challenge with code_challenge_method=S256",
        ));
    };
    if param("code_challenge_method") != Some("S256") {
        return Err(invalid("code_challenge_method must be S256"));
    }
    if !CHALLENGE_LEN.contains(&challenge.len())
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid("code_challenge is not a base64url S256 challenge"));
    }
    let resource = param("resource");
    if resource.is_some_and(|r| r != oauth.resource) {
        return Err((
            "invalid_target",
            format!("resource must be {}", oauth.resource),
        ));
    }
    if param("prompt") == Some("none") {
        return Err((
            "consent_required",
            "this server always asks the person to approve".into(),
        ));
    }
    Ok((challenge, resource))
}

// ------------------------------------------------------------------ POST /authorize (the consent form)

#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    request_id: String,
    csrf_token: String,
    decision: String,
    /// `read-only` or `full-access`; a form without it grants read-only.
    access: Option<String>,
}

pub async fn consent(
    State(state): State<OAuthState>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    let oauth = &*state.oauth;
    // A browser says where a form post came from; refuse posts made by another site.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return error_page(
            StatusCode::FORBIDDEN,
            "This approval did not come from this page",
            "Approvals are accepted only from the consent page itself. Start the connection again from your app.",
        );
    }
    let cookie_value = read_cookie(&headers, &format!("{COOKIE_PREFIX}{}", form.request_id));
    let browser_ok = cookie_value
        .as_deref()
        .is_some_and(|value| same(value, &form.csrf_token));
    if !browser_ok {
        return request_expired_page();
    }
    let browser_hash = hash(&form.csrf_token);
    let now = now_ms();
    let pending = match state.store.get_pending(&form.request_id).await {
        Ok(Some(pending)) if same(&pending.browser_hash, &browser_hash) => pending,
        Ok(_) => return request_expired_page(),
        Err(error) => return server_error_page(error.into()),
    };
    match form.decision.as_str() {
        "approve" => {
            let offered = scope::access_of(pending.scope.as_deref());
            match chosen_access(form.access.as_deref(), offered) {
                Ok(chosen) => approve(oauth, &state, &pending, &browser_hash, chosen, now).await,
                Err(message) => error_page(
                    StatusCode::BAD_REQUEST,
                    "This choice of access is not available",
                    &message,
                ),
            }
        }
        _ => {
            match state
                .store
                .deny_pending(&pending.id, &browser_hash, now)
                .await
            {
                Ok(true) => {}
                Ok(false) => return request_expired_page(),
                Err(error) => return server_error_page(error.into()),
            }
            tracing::info!(client_id = %pending.client_id, "oauth consent denied");
            let mut response = redirect_to_client(
                oauth,
                &pending.redirect_uri,
                pending.state.as_deref(),
                &[
                    ("error", "access_denied"),
                    ("error_description", "the person declined"),
                ],
            );
            *response.status_mut() = StatusCode::SEE_OTHER;
            set_cookie(&mut response, &cookie(oauth, &pending.id, "", 0));
            response
        }
    }
}

/// The access the person picked, if the page offered it.
fn chosen_access(access: Option<&str>, offered: AccessMode) -> Result<AccessMode, String> {
    let chosen = match access.map(str::trim) {
        None | Some("read-only") => AccessMode::ReadOnly,
        Some("full-access") => AccessMode::FullAccess,
        Some(other) => {
            return Err(format!(
                "The access {:?} is not one this page offers (read-only or full-access). Start the connection again from your app.",
                other.chars().take(40).collect::<String>()
            ));
        }
    };
    if chosen > offered {
        return Err("Full access was not offered for this connection (the server or the app allows reading only). Start the connection again from your app.".into());
    }
    Ok(chosen)
}

/// The person allowed the client: the request moves on to the Polytomic sign-in, and this browser remembers
/// the approval (see [`redirect_trusted`]).
async fn approve(
    oauth: &OAuth,
    state: &OAuthState,
    pending: &PendingRow,
    browser_hash: &str,
    chosen: AccessMode,
    now: i64,
) -> Response {
    let (upstream_state, verifier) = match (oauth.keys.token(""), oauth.keys.token("")) {
        (Ok(s), Ok(v)) => (s, v),
        (Err(error), _) | (_, Err(error)) => return server_error_page(error),
    };
    let sealed = match oauth.keys.encrypt(&verifier, &verifier_aad(&pending.id)) {
        Ok(sealed) => sealed,
        Err(error) => return server_error_page(error),
    };
    match state
        .store
        .approve_pending(
            &pending.id,
            browser_hash,
            &hash(&upstream_state),
            &sealed,
            scope::granting(chosen),
            now,
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => return request_expired_page(),
        Err(error) => return server_error_page(error.into()),
    }
    tracing::info!(client_id = %pending.client_id, access = %chosen, "oauth consent approved");
    let mut response = redirect(
        StatusCode::SEE_OTHER,
        oauth
            .provider
            .authorize_url(&upstream_state, &verifier)
            .as_str(),
    );
    set_cookie(&mut response, &approved_cookie(oauth, &pending.client_id));
    response
}

fn request_expired_page() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "This sign-in request has expired",
        "It was already answered, took longer than 15 minutes, or was opened in another browser. \
         Start the connection again from your app.",
    )
}

fn verifier_aad(pending_id: &str) -> String {
    format!("pending:{pending_id}:verifier")
}

pub fn access_aad(session_id: &str) -> String {
    format!("session:{session_id}:access")
}

pub fn refresh_aad(session_id: &str) -> String {
    format!("session:{session_id}:refresh")
}

// ------------------------------------------------------------------ GET /oauth/callback

#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

pub async fn callback(
    State(state): State<OAuthState>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let oauth = &*state.oauth;
    let expired = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired",
            "The sign-in was already completed, took longer than 15 minutes, or was started in another browser. \
             Start the connection again from your app.",
        )
    };
    let Some(upstream_state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return expired();
    };
    let now = now_ms();
    let state_hash = hash(upstream_state);
    // The browser is checked before the request is taken, so another browser cannot spend it.
    let waiting = match state
        .store
        .find_pending_by_upstream_state(&state_hash, now)
        .await
    {
        Ok(Some(waiting)) => waiting,
        Ok(None) => return expired(),
        Err(error) => return server_error_page(error.into()),
    };
    let browser_ok = read_cookie(&headers, &format!("{COOKIE_PREFIX}{}", waiting.id))
        .is_some_and(|value| same(&hash(&value), &waiting.browser_hash));
    if !browser_ok {
        return expired();
    }
    let pending = match state
        .store
        .take_pending_by_upstream_state(&state_hash, &waiting.browser_hash, now)
        .await
    {
        Ok(Some(pending)) => pending,
        Ok(None) => return expired(),
        Err(error) => return server_error_page(error.into()),
    };
    let back = |error: &str, description: &str| {
        let mut response = redirect_to_client(
            oauth,
            &pending.redirect_uri,
            pending.state.as_deref(),
            &[("error", error), ("error_description", description)],
        );
        set_cookie(&mut response, &cookie(oauth, &pending.id, "", 0));
        response
    };
    if let Some(error) = params.error.as_deref() {
        tracing::info!(upstream_error = %error.chars().take(64).collect::<String>(), "oauth upstream sign-in refused");
        return if error == "access_denied" {
            back("access_denied", "the Polytomic sign-in was declined")
        } else {
            back("server_error", "the Polytomic sign-in failed")
        };
    }
    let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
        return back("server_error", "the Polytomic sign-in returned no code");
    };
    match finish_sign_in(oauth, &state, &pending, code, now).await {
        Ok(our_code) => {
            let mut response = redirect_to_client(
                oauth,
                &pending.redirect_uri,
                pending.state.as_deref(),
                &[("code", our_code.as_str())],
            );
            set_cookie(&mut response, &cookie(oauth, &pending.id, "", 0));
            response
        }
        Err(error) => {
            tracing::error!(%error, client_id = %pending.client_id, "oauth sign-in could not be completed");
            back(
                "server_error",
                "the Polytomic sign-in could not be completed; try again",
            )
        }
    }
}

/// Exchanges the provider's code, learns who signed in, stores the session and returns our code.
async fn finish_sign_in(
    oauth: &OAuth,
    state: &OAuthState,
    pending: &PendingRow,
    upstream_code: &str,
    now: i64,
) -> Result<String, OAuthError> {
    let sealed_verifier = pending
        .upstream_verifier
        .as_deref()
        .ok_or_else(|| OAuthError::Internal("pending request without a verifier".into()))?;
    let verifier = oauth
        .keys
        .decrypt(sealed_verifier, &verifier_aad(&pending.id))?;
    let tokens = oauth
        .provider
        .exchange_code(upstream_code, &verifier)
        .await?;
    let identity = oauth.provider.identity(&tokens.access).await?;
    let session_id = uuid::Uuid::new_v4().simple().to_string();
    let session = SessionRow {
        id: session_id.clone(),
        client_id: pending.client_id.clone(),
        user_id: identity.user_id.clone(),
        organization_id: identity.organization_id.clone(),
        scope: pending.scope.clone(),
        upstream_access: Some(
            oauth
                .keys
                .encrypt(tokens.access.expose(), &access_aad(&session_id))?,
        ),
        upstream_refresh: tokens
            .refresh
            .as_ref()
            .map(|r| oauth.keys.encrypt(r.expose(), &refresh_aad(&session_id)))
            .transpose()?,
        upstream_expires_at_ms: tokens
            .expires_in
            .map(|d| now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)),
        created_at_ms: now,
        expires_at_ms: now + REFRESH_TTL_MS,
        revoked_at_ms: None,
    };
    state.store.insert_session(&session).await?;
    let code = oauth.keys.token(CODE_PREFIX)?;
    state
        .store
        .insert_code(&CodeRow {
            code_hash: hash(&code),
            session_id: session_id.clone(),
            client_id: pending.client_id.clone(),
            redirect_uri: pending.redirect_uri.clone(),
            code_challenge: pending.code_challenge.clone(),
            resource: pending.resource.clone(),
            scope: pending.scope.clone(),
            created_at_ms: now,
            expires_at_ms: now + CODE_TTL_MS,
        })
        .await?;
    tracing::info!(
        client_id = %pending.client_id,
        user_id = %identity.user_id,
        organization_id = identity.organization_id.as_deref().unwrap_or("-"),
        "oauth sign-in completed"
    );
    Ok(code)
}

// ------------------------------------------------------------------ responses

/// A redirect to the client with `state` and `iss` (RFC 9207) added to `params`.
fn redirect_to_client(
    oauth: &OAuth,
    redirect_uri: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The app's return address is invalid",
            "Start again from your app.",
        );
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", &oauth.issuer);
    }
    redirect(StatusCode::FOUND, url.as_str())
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn cookie(oauth: &OAuth, pending_id: &str, value: &str, max_age_secs: i64) -> String {
    let secure = if oauth.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{COOKIE_PREFIX}{pending_id}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}"
    )
}

/// The approval mark, sent back only to `/authorize`, for as long as a sign-in may last.
fn approved_cookie(oauth: &OAuth, client_id: &str) -> String {
    let secure = if oauth.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}=1; Path=/authorize; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        approved_cookie_name(client_id),
        REFRESH_TTL_MS / 1000
    )
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().to_owned())
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // No script at all; the form may post only here (the redirects that follow it are not form actions).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

fn server_error_page(error: OAuthError) -> Response {
    tracing::error!(%error, "oauth authorization endpoint failed");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The server could not handle this sign-in. Try again in a moment.",
    )
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    html(
        status,
        page(
            title,
            &format!("<h1>{}</h1>\n<p>{}</p>", escape(title), escape(message)),
        ),
    )
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn page(title: &str, content: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Polytomic MCP</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; background: #f5f6f8; color: #1d2330; margin: 0; }}
main {{ max-width: 30rem; margin: 8vh auto; background: #fff; border-radius: 12px; padding: 2rem 2.25rem;
        box-shadow: 0 1px 3px rgba(0,0,0,.08), 0 8px 24px rgba(0,0,0,.06); }}
h1 {{ font-size: 1.35rem; margin: 0 0 1rem; }}
p, li {{ line-height: 1.5; }}
ul {{ padding-left: 1.2rem; }}
.muted {{ color: #5b6475; font-size: .9rem; }}
.warn {{ background: #fff7e6; border: 1px solid #f3d19c; border-radius: 8px; padding: .6rem .8rem; font-size: .9rem; }}
.actions {{ display: flex; gap: .75rem; margin-top: 1.5rem; }}
button {{ font: inherit; border-radius: 8px; padding: .6rem 1.2rem; cursor: pointer; border: 1px solid #c9ced8; background: #fff; }}
button.primary {{ background: #2f5bea; border-color: #2f5bea; color: #fff; }}
code {{ word-break: break-all; }}
fieldset {{ border: 1px solid #c9ced8; border-radius: 8px; padding: .6rem .9rem; margin: 1rem 0 0; }}
legend {{ padding: 0 .3rem; }}
.choice {{ margin: .4rem 0; }}
.choice p {{ margin: .1rem 0 0 1.6rem; }}
input[type=radio]:focus-visible, button:focus-visible {{ outline: 3px solid #2f5bea; outline-offset: 2px; }}
</style>
</head>
<body>
<main>
{content}
</main>
</body>
</html>
"#,
        title = escape(title),
    )
}

/// The access choice: two labelled radio buttons in a fieldset (keyboard and screen-reader friendly, no
/// script), or a plain statement when only read-only can be granted.
fn access_fieldset(name: &str, choice: AccessChoice) -> String {
    const READ_HELP: &str = "See connections, models, syncs, bulk syncs, their runs and errors, users and organizations. Nothing can be changed.";
    const FULL_HELP: &str = "Everything read-only allows, and also create, change and delete connections, models and syncs, and start or stop syncs.";
    if choice.offered == AccessMode::ReadOnly {
        let why = if choice.limited_by_cap {
            "this server allows reading only"
        } else {
            "the app asked only to read"
        };
        return format!(
            "<input type=\"hidden\" name=\"access\" value=\"read-only\">\n<p><strong>Access: read only</strong> ({why}). {READ_HELP}</p>"
        );
    }
    let checked = |access: AccessMode| {
        if choice.preselected == access {
            " checked"
        } else {
            ""
        }
    };
    format!(
        r#"<fieldset>
<legend>What may <strong>{name}</strong> do?</legend>
<div class="choice"><input type="radio" id="access-read-only" name="access" value="read-only"{read} aria-describedby="access-read-only-help">
<label for="access-read-only"><strong>Read only</strong></label>
<p id="access-read-only-help" class="muted">{READ_HELP}</p></div>
<div class="choice"><input type="radio" id="access-full-access" name="access" value="full-access"{full} aria-describedby="access-full-access-help">
<label for="access-full-access"><strong>Full access</strong></label>
<p id="access-full-access-help" class="muted">{FULL_HELP}</p></div>
</fieldset>"#,
        read = checked(AccessMode::ReadOnly),
        full = checked(AccessMode::FullAccess),
    )
}

fn consent_page(
    oauth: &OAuth,
    client: &Client,
    redirect_uri: &str,
    request_id: &str,
    csrf_token: &str,
    choice: AccessChoice,
) -> String {
    let name = escape(&client.display_name());
    let target = escape(&clients::redirect_target_label(redirect_uri));
    let identity = match client.kind {
        ClientKind::MetadataDocument => format!(
            "<p class=\"muted\">App identity published at <code>{}</code>.</p>",
            escape(&client.id)
        ),
        ClientKind::Registered => "<p class=\"warn\">The app chose this name itself when it registered; \
             this server has not verified it. Approve only if you just started connecting this app.</p>"
            .to_owned(),
    };
    let access = access_fieldset(&name, choice);
    let content = format!(
        r#"<h1>Allow {name} to use Polytomic?</h1>
<p><strong>{name}</strong> is asking to act on your Polytomic organization through this MCP server. If you allow it:</p>
<ul>
<li>you will sign in to Polytomic next, and the app will act as you, on the organization you sign in to;</li>
<li>it will have the access you choose below;</li>
<li>you will then be sent back to <strong>{target}</strong>.</li>
</ul>
{identity}
<form method="post" action="/authorize">
<input type="hidden" name="request_id" value="{request_id}">
<input type="hidden" name="csrf_token" value="{csrf_token}">
{access}
<div class="actions">
<button class="primary" type="submit" name="decision" value="approve">Allow and sign in</button>
<button type="submit" name="decision" value="deny">Cancel</button>
</div>
</form>
<p class="muted">You can disconnect the app at any time from the app itself. Served by {issuer}.</p>"#,
        request_id = escape(request_id),
        csrf_token = escape(csrf_token),
        issuer = escape(&oauth.issuer),
    );
    page(
        &format!("Allow {} to use Polytomic?", client.display_name()),
        &content,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<b a="x">'&"#),
            "&lt;b a=&quot;x&quot;&gt;&#39;&amp;"
        );
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; pmcp_consent_x=abc; b=2"),
        );
        assert_eq!(
            read_cookie(&headers, "pmcp_consent_x").as_deref(),
            Some("abc")
        );
        assert_eq!(read_cookie(&headers, "pmcp_consent_y"), None);
    }
}
