//! The socket under a [`super::Sink`]: a plain TCP socket, or a TLS session on one.
//!
//! A TLS session is the TCP socket and rustls's record state, taken out of `tokio-rustls` once
//! hyper has read the request, so a held stream over TLS keeps no hyper buffers and no
//! `tokio-rustls` wrapper either. Its records are made here, under the sink's lock, by whichever
//! of the three writers (writer, session, hub) holds it: every write encrypts what it is given
//! and sends what the socket takes; records the socket does not take stay in rustls's outgoing
//! queue ([`Wire::is_pending`]) and go out before anything newer. What the client sends is
//! read and decrypted only to be dropped, so that its `close_notify` (or its closing the
//! socket), a key update or a protocol error is seen.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::ServerConnection;
use tokio::net::TcpStream;

/// Plaintext bytes encrypted in one write at most: rustls's own limit on its outgoing queue
/// (64 KiB) would refuse more anyway while records wait.
const ENCRYPT_LIMIT: usize = 16 * 1024;

/// What a client connection's bytes are written to.
pub enum Wire {
    /// A plain TCP socket.
    Tcp(Arc<TcpStream>),
    /// A TLS session on a TCP socket.
    Tls(Box<Tls>),
}

/// A TLS session after its handshake: the socket and rustls's state.
pub struct Tls {
    tcp: Arc<TcpStream>,
    conn: ServerConnection,
}

/// Whether the client is still there, after what it sent was read.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Nothing more to read for now.
    Open,
    /// The client closed its side (end of stream, or TLS `close_notify`).
    Closed,
}

impl From<TcpStream> for Wire {
    fn from(tcp: TcpStream) -> Wire {
        Wire::Tcp(Arc::new(tcp))
    }
}

impl From<tokio_rustls::server::TlsStream<TcpStream>> for Wire {
    fn from(tls: tokio_rustls::server::TlsStream<TcpStream>) -> Wire {
        let (tcp, conn) = tls.into_inner();
        Wire::Tls(Box::new(Tls {
            tcp: Arc::new(tcp),
            conn,
        }))
    }
}

impl Wire {
    /// The TCP socket, for waiting until it can be read or written.
    pub fn tcp(&self) -> &Arc<TcpStream> {
        match self {
            Wire::Tcp(tcp) => tcp,
            Wire::Tls(tls) => &tls.tcp,
        }
    }

    /// Takes as much of `buf` as it can without waiting, and says how much: over TCP what the
    /// socket took; over TLS what was encrypted, once the records queued before it are out
    /// (`WouldBlock` while they are not). Encrypted records the socket does not take at once
    /// are queued ([`Wire::is_pending`]).
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Tcp(tcp) => tcp.try_write(buf),
            Wire::Tls(tls) => {
                tls.send_queued()?;
                let n = tls
                    .conn
                    .writer()
                    .write(&buf[..buf.len().min(ENCRYPT_LIMIT)])?;
                match tls.send_queued() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                    _ => Ok(n),
                }
            }
        }
    }

    /// [`Wire::try_write`] for the parts of `bufs` in order: over TCP one gathering write (of
    /// the first four parts at most), over TLS the first part that is not empty (a partial
    /// write, as any write may be: the caller keeps the rest).
    pub fn try_write_vectored(&mut self, bufs: &[&[u8]]) -> io::Result<usize> {
        match self {
            Wire::Tcp(tcp) if bufs.len() > 1 => {
                let mut slices = [io::IoSlice::new(&[]); 4];
                for (slice, buf) in slices.iter_mut().zip(bufs) {
                    *slice = io::IoSlice::new(buf);
                }
                tcp.try_write_vectored(&slices[..bufs.len().min(4)])
            }
            _ => match bufs.iter().find(|b| !b.is_empty()) {
                Some(buf) => self.try_write(buf),
                None => Ok(0),
            },
        }
    }

    /// Whether bytes already taken wait to be sent (TLS records the socket did not take).
    pub fn is_pending(&self) -> bool {
        match self {
            Wire::Tcp(_) => false,
            Wire::Tls(tls) => tls.conn.wants_write(),
        }
    }

    /// Sends what [`Wire::is_pending`]; `WouldBlock` when the socket takes no more now.
    pub fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Wire::Tcp(_) => Ok(()),
            Wire::Tls(tls) => tls.send_queued(),
        }
    }

    /// Reads what the client has sent, without waiting, and drops it.
    pub fn read_input(&mut self) -> io::Result<Input> {
        match self {
            Wire::Tcp(tcp) => {
                let mut scratch = [0u8; 64];
                loop {
                    match tcp.try_read(&mut scratch) {
                        Ok(0) => return Ok(Input::Closed),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Input::Open),
                        Err(e) => return Err(e),
                    }
                }
            }
            Wire::Tls(tls) => tls.read_input(),
        }
    }

    /// Queues the TLS `close_notify` (nothing over TCP); [`Wire::send_pending`] sends it.
    pub fn close_notify(&mut self) {
        if let Wire::Tls(tls) = self {
            tls.conn.send_close_notify();
        }
    }
}

impl Tls {
    /// Writes queued records until none is left or the socket would block.
    fn send_queued(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut Socket(&self.tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    fn read_input(&mut self) -> io::Result<Input> {
        // What rustls already holds first: a client may have said close_notify before the
        // stream was taken from hyper.
        if self.process()? == Input::Closed {
            return Ok(Input::Closed);
        }
        loop {
            match self.conn.read_tls(&mut Socket(&self.tcp)) {
                Ok(0) => return Ok(Input::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Input::Open),
                Err(e) => return Err(e),
            }
            if self.process()? == Input::Closed {
                return Ok(Input::Closed);
            }
        }
    }

    /// Decrypts what has been read and drops the plaintext; `Closed` after `close_notify`.
    fn process(&mut self) -> io::Result<Input> {
        let state = self.conn.process_new_packets().map_err(|e| {
            // The alert rustls queued for the client goes out if the socket takes it.
            let _ = self.send_queued();
            io::Error::new(io::ErrorKind::InvalidData, e)
        })?;
        let mut scratch = [0u8; 256];
        let mut left = state.plaintext_bytes_to_read();
        while left > 0 {
            let n = self.conn.reader().read(&mut scratch)?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok(match state.peer_has_closed() {
            true => Input::Closed,
            false => Input::Open,
        })
    }
}

/// rustls's blocking I/O traits over the non-blocking socket: `WouldBlock` when it is not ready.
struct Socket<'a>(&'a TcpStream);

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
