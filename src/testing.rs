//! Test-only entry points into the server. Compiled only with the `test-hooks` feature, which nothing but the
//! crate's own dev-dependency on itself turns on (Cargo.toml), so the release binary (`cargo build --release`)
//! has none of this and no setting or flag reaches it.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{StartError, serve};
use crate::config::Config;
use crate::oauth::clients::MetadataFetch;

/// [`super::run`], except that client metadata documents may be served from loopback over https with a
/// certificate issued by `root_der` (a DER CA certificate the test made), so the real https fetch runs in
/// tests. Every other rule of the fetch (https only, canonical URL, no redirects, size cap, the private-address
/// filter for anything but loopback) still applies.
pub async fn run_with_loopback_metadata_documents(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    root_der: &[u8],
) -> Result<(), StartError> {
    let root = reqwest::Certificate::from_der(root_der)
        .map_err(|e| StartError::Config(format!("test root certificate: {e}")))?;
    let cimd = MetadataFetch {
        loopback_fixture_root: Some(root),
    };
    serve(config, listener, shutdown, &cimd).await
}
