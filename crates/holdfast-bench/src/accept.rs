//! The listen and accept steps every server of the bench tools shares.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use tokio::net::{TcpListener, TcpStream};

/// A listener on `addr` with a backlog of 4,096, as Holdfast's own: a burst of connects (256
/// per load-generator worker, or one origin connection per GRIP WebSocket client) must not
/// overflow the backlog, or the dropped SYNs come back a second later and the subscribe rate
/// measures the kernel's retransmit timer. (`TcpListener::bind` asks for less.)
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .context("creating a socket")?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    socket
        .listen(4096)
        .with_context(|| format!("listening on {addr}"))
}

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
