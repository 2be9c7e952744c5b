//! Entry points for fuzzing the server's own parsers and encoders of untrusted bytes: the
//! routes file, the TOML configuration, the held-stream writer's chunk framing, and JSON-P
//! requests and the wrapping of long bodies. The GRIP
//! parsers' entry points are in `grip::fuzz`. Each must return normally for every input; the
//! framing must decode back to what was framed.

use std::path::Path;

use crate::config::routes::{Proto, RouteTable};
use crate::config::Config;
use grip::fuzz::Target;

/// A routes file; a table that parses can be asked for a route.
pub fn routes(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(table) = RouteTable::parse(&text, Path::new("routes")) else {
        return;
    };
    for host in ["example.com", "localhost:7999", ""] {
        for proto in [Proto::Http, Proto::Ws] {
            if let Some(route) = table.find(host, proto, false, "/a/b?c") {
                let _ = route.rewrite_path("/a/b?c");
            }
        }
    }
}

/// A TOML configuration file, parsed and validated.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = Config::parse(&text, Path::new("holdfast.toml")) {
        let _ = config.validate(Path::new("holdfast.toml"));
    }
}

/// The held-stream writer's chunk framing: the input cut into pieces (each first byte says how
/// long the piece is), each framed as one HTTP/1.1 chunk, then the whole decoded again with a
/// real chunked-encoding parser, which must give back every piece unchanged.
pub fn held_stream_framing(data: &[u8]) {
    let mut pieces = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        pieces.push(&tail[..n]);
        rest = &tail[n..];
    }
    let mut wire = Vec::new();
    for piece in pieces.iter().filter(|p| !p.is_empty()) {
        crate::sink::frame(&mut wire, piece);
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut decoded = Vec::new();
    let mut at = 0;
    loop {
        let (used, size) = match httparse::parse_chunk_size(&wire[at..]) {
            Ok(httparse::Status::Complete(c)) => c,
            other => panic!("chunk size line at {at} does not parse: {other:?}"),
        };
        at += used;
        let size = usize::try_from(size).expect("a chunk fits in memory");
        if size == 0 {
            assert_eq!(&wire[at..], b"\r\n", "the last chunk ends the stream");
            break;
        }
        decoded.push(&wire[at..at + size]);
        assert_eq!(
            &wire[at + size..at + size + 2],
            b"\r\n",
            "chunk data ends its line"
        );
        at += size + 2;
    }
    let framed: Vec<&[u8]> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
    assert_eq!(decoded, framed, "framing round trip");
}

/// A JSON-P request: the input is a request target (`/path?query`), read under a route whose
/// JSON-P settings the first byte picks; a request that is JSON-P rewrites headers.
pub fn jsonp_request(data: &[u8]) {
    use crate::config::routes::{JsonpConfig, JsonpMode};
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let config = JsonpConfig {
        mode: if pick & 1 == 0 {
            JsonpMode::Extended
        } else {
            JsonpMode::Basic
        },
        callback_param: (pick & 2 != 0).then(|| "cb".to_string()),
        body_param: (pick & 4 != 0).then(|| "bd".to_string()),
        default_callback: (pick & 8 != 0).then(|| "defcb".to_string()),
        default_method: (pick & 16 != 0).then_some(http::Method::PUT),
    };
    let target = String::from_utf8_lossy(rest);
    if let Ok(Some(request)) =
        crate::crossorigin::jsonp::parse(&config, &http::Method::GET, &target)
    {
        assert!(crate::config::routes::is_callback_name(
            &request.callback.name
        ));
        let mut headers = http::HeaderMap::new();
        request.apply_headers(&mut headers);
    }
}

/// A long relayed body wrapped for JSON-P as it streams: the input cut into pieces (each first
/// byte says how long the piece is; the very first byte's low bit picks the mode) must wrap to
/// the same bytes as the whole body at once — no UTF-8 character or final newline may be
/// treated differently because of where a chunk ended.
pub fn jsonp_stream(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let extended = mode & 1 == 0;
    let mut pieces = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        pieces.push(&tail[..n]);
        rest = &tail[n..];
    }
    let whole: Vec<u8> = pieces.concat();
    assert_eq!(
        crate::crossorigin::wrap::encode_pieces(extended, &pieces),
        crate::crossorigin::wrap::encode_whole(extended, &whole),
        "pieces {pieces:?}"
    );
}

/// Every entry point by name, for the smoke test and the corpus layout (`fuzz/corpus/<name>`).
pub const TARGETS: [(&str, Target); 5] = [
    ("routes", routes),
    ("config", config),
    ("held_stream_framing", held_stream_framing),
    ("jsonp_request", jsonp_request),
    ("jsonp_stream", jsonp_stream),
];
