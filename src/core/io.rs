//! Two mechanisms several features share: reading a response body up to a cap, and a periodic background
//! task that stops with the server.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Why a capped read stopped.
#[derive(Debug)]
pub(crate) enum CappedReadError {
    /// The body (declared or received) is larger than the cap.
    TooLarge { cap: usize },
    /// The connection failed while reading.
    Read(reqwest::Error),
}

/// Reads a whole response body, refusing one larger than `cap` bytes without buffering past it (a declared
/// `Content-Length` over the cap is refused before anything is read).
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, CappedReadError> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(CappedReadError::TooLarge { cap });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(CappedReadError::Read)? {
        if body.len() + chunk.len() > cap {
            return Err(CappedReadError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// When a periodic task runs its first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstRound {
    Now,
    AfterOnePeriod,
}

/// Runs `round` every `every` until `shutdown` is cancelled; a round in progress finishes first.
pub(crate) fn spawn_periodic<F, Fut>(
    every: Duration,
    first: FirstRound,
    shutdown: CancellationToken,
    mut round: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        if first == FirstRound::AfterOnePeriod {
            // An interval's first tick fires at once.
            ticker.tick().await;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            round().await;
        }
    });
}
