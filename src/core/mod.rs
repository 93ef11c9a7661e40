//! The shared vocabulary every layer speaks: who is calling ([`Principal`], [`Credential`]) and from which
//! address, the session's modes, which client it is, the clock, and how caller text is made safe to show.
//! Nothing here does I/O or knows about features; every other module may depend on it and it depends on none
//! of them.

mod address;
mod client;
mod io;
mod modes;
mod principal;
mod text;

pub(crate) use address::address_group;
pub(crate) use client::ClientInfo;
pub(crate) use io::{CappedReadError, FirstRound, read_capped, spawn_periodic};
pub use modes::{
    ACCESS_MODE_HEADER, AUTH_MODE_HEADER, AccessMode, AuthMode, HeaderError, Modes,
    PARTNER_ORG_HEADER, parse_modes,
};
pub(crate) use principal::{Credential, OAuthSession, Principal};
pub(crate) use text::acts_on_display;
#[cfg(test)]
pub(crate) use text::is_bidi_control;
pub(crate) use text::{Newlines, visible, write_visible};

/// The request id header: kept from the caller when sane, generated otherwise, echoed on every response
/// and passed to tools for their log lines and feedback records.
pub(crate) const REQUEST_ID_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-request-id");

/// The caller's network address as the HTTP layer found it (the peer, or a trusted proxy's `X-Forwarded-For`),
/// put into request extensions for features that count per address. `None` when it is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddress(pub Option<std::net::IpAddr>);

/// Wall-clock milliseconds since the Unix epoch: the one unit every stored time and window uses.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
