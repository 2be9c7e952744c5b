//! The wire side of an SSE subscriber: a response head and an incremental body decoder, so a
//! worker can read its streams straight off the socket.
//!
//! At 100,000 subscribers the load generator runs on the same two cores as the proxies it
//! measures, so its cost per delivery is taken from theirs. Through hyper's client a delivery
//! wakes two tasks (the connection and the body reader) and crosses a channel between them;
//! reading the socket in the subscriber's own task, into a buffer it keeps, costs one wake and one
//! `read` (see BENCHMARKS.md, "Scale-out"). Long-poll subscribers still use hyper.
//!
//! Only what proxies send to an SSE client is understood: a `HTTP/1.x` status line and headers,
//! then a `chunked`, `Content-Length` or close-delimited body.

use std::fmt;

/// Most bytes a response head may take.
pub const MAX_HEAD: usize = 16 * 1024;

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: N`.
    Length(u64),
    /// Neither: the body runs until the connection closes.
    Close,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Body framing.
    pub framing: Framing,
    /// Bytes the head took; the body starts there.
    pub len: usize,
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The head is not HTTP/1.x.
    BadHead(String),
    /// The head is larger than [`MAX_HEAD`].
    HeadTooLarge,
    /// A chunk size line is not hexadecimal, or a chunk is not followed by CRLF.
    BadChunk,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadHead(e) => write!(f, "malformed response head: {e}"),
            WireError::HeadTooLarge => write!(f, "response head over {MAX_HEAD} bytes"),
            WireError::BadChunk => write!(f, "malformed chunked body"),
        }
    }
}

impl std::error::Error for WireError {}

/// The GET request an SSE subscriber sends.
pub fn to_request(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n").into_bytes()
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WireError::BadHead(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let mut framing = Framing::Close;
    for h in response.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") && framing == Framing::Close {
            let n = value
                .trim()
                .parse()
                .map_err(|_| WireError::BadHead(format!("content-length {value:?}")))?;
            framing = Framing::Length(n);
        }
    }
    Ok(Some(Head {
        status,
        framing,
        len,
    }))
}

/// Where a [`Body`] decoder is within a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hexadecimal size (`size` so far, `digits` read).
    Size { size: u64, digits: u32 },
    /// Skipping a chunk extension up to the end of the size line.
    Extension { size: u64 },
    /// Expecting the LF of a size line.
    SizeLf { size: u64 },
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// Expecting the CR (or a bare LF) after a chunk's data.
    DataCr,
    /// Expecting the LF after a chunk's data.
    DataLf,
    /// After the last chunk: trailer lines, `at_line_start` when the previous byte ended one.
    Trailer { at_line_start: bool },
}

/// An incremental body decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    framing: Framing,
    chunk: Chunk,
    /// Bytes left of a `Content-Length` body.
    left: u64,
    done: bool,
}

impl Body {
    /// A decoder for a body with this framing.
    pub fn new(framing: Framing) -> Body {
        Body {
            framing,
            chunk: Chunk::Size { size: 0, digits: 0 },
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            done: framing == Framing::Length(0),
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Decodes `input`, appending the body bytes to `out`. Bytes after the end of the body are
    /// ignored.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        if self.done {
            return Ok(());
        }
        match self.framing {
            Framing::Close => out.extend_from_slice(input),
            Framing::Length(_) => {
                let take = input
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..take]);
                self.left -= take as u64;
                self.done = self.left == 0;
            }
            Framing::Chunked => self.feed_chunked(input, out)?,
        }
        Ok(())
    }

    fn feed_chunked(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        let mut i = 0;
        while i < input.len() && !self.done {
            let b = input[i];
            self.chunk = match self.chunk {
                Chunk::Size { size, digits } => match (b as char).to_digit(16) {
                    Some(d) if digits < 15 => Chunk::Size {
                        size: size * 16 + u64::from(d),
                        digits: digits + 1,
                    },
                    _ if digits == 0 => return Err(WireError::BadChunk),
                    None if b == b';' || b == b' ' || b == b'\t' => Chunk::Extension { size },
                    None if b == b'\r' => Chunk::SizeLf { size },
                    None if b == b'\n' => self.after_size(size),
                    _ => return Err(WireError::BadChunk),
                },
                Chunk::Extension { size } => match b {
                    b'\r' => Chunk::SizeLf { size },
                    b'\n' => self.after_size(size),
                    _ => Chunk::Extension { size },
                },
                Chunk::SizeLf { size } if b == b'\n' => self.after_size(size),
                Chunk::SizeLf { .. } => return Err(WireError::BadChunk),
                Chunk::Data(left) => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.chunk = if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    };
                    continue;
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataCr | Chunk::DataLf if b == b'\n' => Chunk::Size { size: 0, digits: 0 },
                Chunk::DataCr | Chunk::DataLf => return Err(WireError::BadChunk),
                Chunk::Trailer { at_line_start } => match b {
                    b'\n' if at_line_start => {
                        self.done = true;
                        Chunk::Trailer {
                            at_line_start: true,
                        }
                    }
                    b'\n' => Chunk::Trailer {
                        at_line_start: true,
                    },
                    b'\r' => Chunk::Trailer { at_line_start },
                    _ => Chunk::Trailer {
                        at_line_start: false,
                    },
                },
            };
            i += 1;
        }
        Ok(())
    }

    /// The state after a size line: data, or the trailer after the last (empty) chunk.
    fn after_size(&self, size: u64) -> Chunk {
        if size == 0 {
            Chunk::Trailer {
                at_line_start: true,
            }
        } else {
            Chunk::Data(size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes.
    fn decode(framing: Framing, input: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut body = Body::new(framing);
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            body.feed(piece, &mut out).expect("valid body");
        }
        (out, body.is_done())
    }

    #[test]
    fn chunked_bodies_in_any_pieces() {
        let cases: [(&[u8], &[u8], bool); 5] = [
            (b"5\r\n:ok\n\n\r\n", b":ok\n\n", false),
            (
                b"5\r\n:ok\n\n\r\n12\r\ndata: seq=1 ts=2\n\n\r\n",
                b":ok\n\ndata: seq=1 ts=2\n\n",
                false,
            ),
            (b"3;ext=1\r\nabc\r\n0\r\n\r\nignored", b"abc", true),
            (b"A\n0123456789\n0\nX-Trailer: 1\n\n", b"0123456789", true),
            (b"0\r\n\r\n", b"", true),
        ];
        for (input, want, done) in cases {
            for step in [1, 2, 3, 7, input.len()] {
                let (out, is_done) = decode(Framing::Chunked, input, step);
                assert_eq!(out, want, "{input:?} in pieces of {step}");
                assert_eq!(is_done, done, "{input:?} in pieces of {step}");
            }
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for input in [&b"zz\r\n"[..], b"\r\n", b"2\r\nabX", b"2\rx"] {
            let mut out = Vec::new();
            assert_eq!(
                Body::new(Framing::Chunked).feed(input, &mut out),
                Err(WireError::BadChunk),
                "{input:?}"
            );
        }
    }

    #[test]
    fn length_and_close_bodies() {
        assert_eq!(
            decode(Framing::Length(4), b"abcdef", 3),
            (b"abcd".to_vec(), true)
        );
        assert_eq!(decode(Framing::Length(0), b"ab", 1), (Vec::new(), true));
        assert_eq!(decode(Framing::Close, b"abc", 2), (b"abc".to_vec(), false));
    }

    #[test]
    fn heads() {
        let stream = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                       Transfer-Encoding: chunked\r\n\r\n5\r\n";
        assert_eq!(
            parse_head(stream),
            Ok(Some(Head {
                status: 200,
                framing: Framing::Chunked,
                len: stream.len() - 3,
            }))
        );
        let refused = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(
            parse_head(refused).unwrap().map(|h| (h.status, h.framing)),
            Some((502, Framing::Length(12)))
        );
        let old = b"HTTP/1.0 200 OK\r\n\r\n";
        assert_eq!(
            parse_head(old).unwrap().map(|h| h.framing),
            Some(Framing::Close)
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-"), Ok(None));
        assert!(matches!(
            parse_head(b"SSH-2.0-x\r\n\r\n"),
            Err(WireError::BadHead(_))
        ));
        assert_eq!(
            to_request("/", "127.0.0.1:1"),
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:1\r\nAccept: text/event-stream\r\n\r\n"
        );
    }
}
