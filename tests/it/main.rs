//! The integration tests, as one binary with a module per area: every separate test binary is another link,
//! and links are the slowest part of a build on two cores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod architecture;
mod common;
mod execute;
mod feedback;
mod hardening;
mod oauth;
mod openapi_document;
mod pages;
mod path_properties;
mod resilience;
mod search_quality;
mod server;
mod store;
mod stranger;
mod traces;
