//! The accept step every server of the bench tools shares.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The next connection on `listener`, with `TCP_NODELAY` set. An accept that fails (out of
/// descriptors, a reset before accept) is reported under `who` and retried after 10 ms, so one
/// failure never stops the server.
pub async fn next(listener: &TcpListener, who: &str) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                eprintln!("{who}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
