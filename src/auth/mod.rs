//! Who is calling: the bearer token's shape, the `X-Polytomic-*` session headers, an API key's
//! [`Principal`](crate::core::Principal), Polytomic's verdict on that key, and Host/Origin. Which kind of token it is
//! (one this server issued, or a Polytomic API key) is decided by `http`, which composes this module with
//! `oauth`. Deny by default: `/mcp` is unreachable without a principal.

mod checks;
mod key_check;

pub(crate) use checks::{
    allowed_hosts, allowed_origins, api_key_principal, bearer_token, check_host_and_origin,
    request_modes,
};
pub(crate) use key_check::KeyVerifier;
