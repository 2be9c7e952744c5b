//! The floor server's publish body: Pushpin's `POST /publish/` JSON turned into the bytes every
//! held stream is sent.
//!
//! Only `formats."http-stream".content` matters. Each item's content becomes one HTTP/1.1 chunk
//! (`<hex length>\r\n<content>\r\n`); the chunks of one request are concatenated into a single
//! [`Bytes`], encoded once and shared by every stream, so one request costs one write per stream.
//! Items without `http-stream` content (other formats only, or empty content, which as a chunk
//! would end the stream) contribute nothing.

use std::fmt::Write as _;

use bytes::{BufMut as _, Bytes, BytesMut};
use serde::Deserialize;

/// `{"items": [...]}`.
#[derive(Debug, Deserialize)]
struct PublishBody {
    items: Vec<Item>,
}

/// One publish item; `channel` is only checked unless the floor keeps channels
/// (`--fanout channels`).
#[derive(Debug, Deserialize)]
struct Item {
    channel: String,
    #[serde(default)]
    formats: Formats,
}

#[derive(Debug, Default, Deserialize)]
struct Formats {
    #[serde(rename = "http-stream")]
    http_stream: Option<HttpStream>,
}

#[derive(Debug, Deserialize)]
struct HttpStream {
    #[serde(default)]
    content: String,
}

/// Parses a publish body into the chunk bytes to write to every stream (empty when no item has
/// `http-stream` content). The error names the field and position serde_json found wrong.
pub fn parse_publish(body: &[u8]) -> anyhow::Result<Bytes> {
    let body: PublishBody =
        serde_json::from_slice(body).map_err(|e| anyhow::anyhow!("invalid publish body: {e}"))?;
    let mut out = BytesMut::new();
    for (i, item) in body.items.iter().enumerate() {
        if item.channel.is_empty() {
            anyhow::bail!("invalid publish body: items[{i}].channel is empty");
        }
        if let Some(stream) = &item.formats.http_stream {
            to_chunk(stream.content.as_bytes(), &mut out);
        }
    }
    Ok(out.freeze())
}

/// Parses a publish body into each item's channel and chunk, in order, for a floor that keeps
/// channels; items without `http-stream` content are left out. Errors as [`parse_publish`].
pub fn parse_items(body: &[u8]) -> anyhow::Result<Vec<(String, Bytes)>> {
    let body: PublishBody =
        serde_json::from_slice(body).map_err(|e| anyhow::anyhow!("invalid publish body: {e}"))?;
    let mut out = Vec::with_capacity(body.items.len());
    for (i, item) in body.items.into_iter().enumerate() {
        if item.channel.is_empty() {
            anyhow::bail!("invalid publish body: items[{i}].channel is empty");
        }
        let mut chunk = BytesMut::new();
        if let Some(stream) = &item.formats.http_stream {
            to_chunk(stream.content.as_bytes(), &mut chunk);
        }
        if !chunk.is_empty() {
            out.push((item.channel, chunk.freeze()));
        }
    }
    Ok(out)
}

/// Appends `content` to `out` as one HTTP/1.1 chunk; empty content appends nothing.
pub fn to_chunk(content: &[u8], out: &mut BytesMut) {
    if content.is_empty() {
        return;
    }
    let mut size = String::with_capacity(8);
    // Writing to a String cannot fail.
    let _ = write!(size, "{:x}\r\n", content.len());
    out.reserve(size.len() + content.len() + 2);
    out.put_slice(size.as_bytes());
    out.put_slice(content);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> String {
        String::from_utf8(parse_publish(body.as_bytes()).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn one_item_becomes_one_chunk() {
        let body = r#"{"items":[{"channel":"bench","formats":{"http-stream":{"content":"data: seq=1 ts=2\n\n"}}}]}"#;
        assert_eq!(parsed(body), "12\r\ndata: seq=1 ts=2\n\n\r\n");
    }

    #[test]
    fn items_of_one_request_are_concatenated_in_order() {
        let body = r#"{"items":[
            {"channel":"a","formats":{"http-stream":{"content":"one"}}},
            {"channel":"b","formats":{"http-stream":{"content":"two!"}}}]}"#;
        assert_eq!(parsed(body), "3\r\none\r\n4\r\ntwo!\r\n");
    }

    #[test]
    fn items_without_stream_content_are_skipped() {
        // Long-poll and WebSocket formats, an item without formats, and empty content (which as
        // a chunk would be the last-chunk marker and end every stream).
        let body = r#"{"items":[
            {"channel":"a","formats":{"http-response":{"body":"x"}}},
            {"channel":"a","formats":{"ws-message":{"content":"x"}}},
            {"channel":"a"},
            {"channel":"a","formats":{"http-stream":{"content":""}}},
            {"channel":"a","formats":{"http-stream":{"content":"kept"},"http-response":{"body":"x"}}}]}"#;
        assert_eq!(parsed(body), "4\r\nkept\r\n");
        assert!(parse_publish(br#"{"items":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn chunk_sizes_are_hexadecimal() {
        for (len, head) in [
            (1, "1\r\n"),
            (15, "f\r\n"),
            (255, "ff\r\n"),
            (256, "100\r\n"),
        ] {
            let mut out = BytesMut::new();
            to_chunk(&vec![b'x'; len], &mut out);
            assert!(out.starts_with(head.as_bytes()), "{len}: {out:?}");
            assert_eq!(out.len(), head.len() + len + 2);
            assert!(out.ends_with(b"x\r\n"));
        }
    }

    #[test]
    fn bad_bodies_name_what_is_wrong() {
        let cases = [
            ("not json", "expected"),
            (r#"{"item":[]}"#, "missing field `items`"),
            (r#"{"items":[{"formats":{}}]}"#, "missing field `channel`"),
            (r#"{"items":[{"channel":""}]}"#, "items[0].channel is empty"),
            (
                r#"{"items":[{"channel":"a","formats":{"http-stream":{"content":5}}}]}"#,
                "invalid type: integer `5`",
            ),
        ];
        for (body, want) in cases {
            let e = parse_publish(body.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }
}
