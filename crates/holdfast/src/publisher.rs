//! `holdfast publish`: the command-line publisher, the counterpart of Pushpin's `pushpin-publish`.
//!
//! It builds one item from its options, exactly as `pushpin-publish` 1.36 does (the formats it
//! fills, the newline it adds, the meta it sets), and sends it to a publish API given as a GRIP
//! URL: `http(s)://host:port[/base][?iss=ISS&key=KEY]`. A GRIP URL with `iss` and `key` is signed
//! as the GRIP libraries sign it (an HS256 JWT, `base64:` keys decoded); a `key` without `iss`
//! is sent as a Bearer token, as `@fanoutio/grip` does. `--user` and `--bearer` set HTTP Basic or
//! a Bearer token; they are refused over plain `http` to any host but loopback, since they would
//! cross the network in the clear.
//!
//! `--spec` may instead be a ZeroMQ spec, `tcp://host:port` or `ipc://path`: the item is then
//! pushed, as `J` followed by its JSON, to a PULL socket there (Pushpin's `push_in_spec`,
//! Holdfast's `zmq.push_in_spec`), which has no authentication, so `--user` and `--bearer` are
//! refused with it. A PUSH socket gets no answer: the command waits until the item has been
//! handed to a connected peer, at most [`ZMQ_TIMEOUT`].
//!
//! Where this differs from `pushpin-publish` on purpose: the GRIP URL's `iss` and `key` are
//! understood (Pushpin 1.36 appends `/publish/` after the query string, so such a URL fails
//! there), `-M` and `-H` take one value each (Pushpin's take every following word, channel
//! included), and a `-M`/`-H` without `=`/`:` is an error naming it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};

/// How long a token signed from a GRIP URL's `key` is valid, as the GRIP libraries sign it.
const TOKEN_TTL_SECS: u64 = 3600;

/// How long a push to a ZeroMQ spec may wait for a PULL socket to take the item.
pub const ZMQ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The options of `holdfast publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// Channel to publish to.
    pub channel: String,
    /// Content for the HTTP body and the WebSocket message; `@FILE` reads it from FILE.
    /// Not needed with `--hint` or `--close`.
    pub content: Option<String>,
    /// Payload ID.
    #[arg(long)]
    pub id: Option<String>,
    /// Previous payload ID.
    #[arg(long, value_name = "ID")]
    pub prev_id: Option<String>,
    /// Sender meta value (`meta.sender`, for the `skip-self` filter).
    #[arg(long)]
    pub sender: Option<String>,
    /// Add a meta variable (repeatable).
    #[arg(short = 'M', long = "meta", value_name = "K=V")]
    pub meta: Vec<String>,
    /// Send a hint instead of content: subscribers fetch the content from the origin.
    #[arg(long)]
    pub hint: bool,
    /// Close streaming and WebSocket connections.
    #[arg(long)]
    pub close: bool,
    /// The content is a JSON Patch for held long-poll responses (`body-patch`).
    #[arg(long)]
    pub patch: bool,
    /// HTTP response code for held long-polls.
    #[arg(long, default_value_t = 200)]
    pub code: u16,
    /// Add an HTTP response header for held long-polls (repeatable).
    #[arg(short = 'H', long = "header", value_name = "K: V")]
    pub header: Vec<String>,
    /// Don't add a newline to HTTP payloads.
    #[arg(long)]
    pub no_eol: bool,
    /// Bypass the sequencing buffer.
    #[arg(long)]
    pub no_seq: bool,
    /// GRIP URL of the publish API (`?iss=…&key=…` to sign), or `GRIP_URL`; or a ZeroMQ PUSH
    /// spec (`tcp://host:port`, `ipc://path`) naming a PULL publish input.
    #[arg(
        long,
        env = "GRIP_URL",
        default_value = "http://localhost:5561",
        value_name = "SPEC"
    )]
    pub spec: String,
    /// Authenticate with HTTP Basic.
    #[arg(short = 'u', long, value_name = "USER:PASS")]
    pub user: Option<String>,
    /// Authenticate with `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "TOKEN")]
    pub bearer: Option<String>,
}

/// Builds the publish request body: `{"items": [item]}`.
pub fn build_item(args: &PublishArgs) -> anyhow::Result<Value> {
    let mut formats = Map::new();
    if args.hint {
        for f in ["http-response", "http-stream", "ws-message"] {
            formats.insert(f.into(), json!({"action": "hint"}));
        }
    } else if args.close {
        for f in ["http-stream", "ws-message"] {
            formats.insert(f.into(), json!({"action": "close"}));
        }
    } else {
        let Some(content) = &args.content else {
            anyhow::bail!("must specify content (or --hint, or --close)");
        };
        let (text, from_file) = match content.strip_prefix('@') {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("can't read file {path}: {e}"))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| anyhow::anyhow!("file {path} is not UTF-8 text"))?;
                (text, true)
            }
            None => (content.clone(), false),
        };
        let mut response = Map::new();
        response.insert("code".into(), json!(args.code));
        let headers = args
            .header
            .iter()
            .map(|h| match h.split_once(':') {
                Some((k, v)) if !k.trim().is_empty() => Ok(json!([k.trim(), v.trim()])),
                _ => anyhow::bail!("header {h:?}: expected \"K: V\""),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !headers.is_empty() {
            response.insert("headers".into(), Value::Array(headers));
        }
        if args.patch {
            let patch: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("--patch: the content is not JSON: {e}"))?;
            response.insert("body-patch".into(), patch);
            formats.insert("http-response".into(), Value::Object(response));
        } else {
            // A file is sent as it is; text from the command line gets a newline on HTTP.
            let http = if args.no_eol || from_file {
                text.clone()
            } else {
                format!("{text}\n")
            };
            response.insert("body".into(), json!(http));
            formats.insert("http-response".into(), Value::Object(response));
            formats.insert("http-stream".into(), json!({"content": http}));
            formats.insert("ws-message".into(), json!({"content": text}));
        }
    }
    let mut item = Map::new();
    item.insert("channel".into(), json!(args.channel));
    item.insert("formats".into(), Value::Object(formats));
    if let Some(id) = &args.id {
        item.insert("id".into(), json!(id));
    }
    if let Some(prev) = &args.prev_id {
        item.insert("prev-id".into(), json!(prev));
    }
    let mut meta = Map::new();
    if let Some(sender) = &args.sender {
        meta.insert("sender".into(), json!(sender));
    }
    for m in &args.meta {
        let Some((k, v)) = m.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            anyhow::bail!("meta {m:?}: expected K=V");
        };
        meta.insert(k.into(), json!(v));
    }
    if !meta.is_empty() {
        item.insert("meta".into(), Value::Object(meta));
    }
    if args.no_seq {
        item.insert("no-seq".into(), json!(true));
    }
    Ok(json!({ "items": [item] }))
}

/// Where to publish and with which credentials.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The `…/publish/` URL.
    pub url: url::Url,
    /// The `Authorization` header value, if any.
    pub authorization: Option<String>,
}

/// Reads a GRIP URL and the credential options into a [`Target`]; `now_unix` dates a signed
/// token.
pub fn target(args: &PublishArgs, now_unix: u64) -> anyhow::Result<Target> {
    let mut url = url::Url::parse(&args.spec)
        .map_err(|e| anyhow::anyhow!("--spec {:?}: not a URL: {e}", args.spec))?;
    match url.scheme() {
        "http" | "https" => {}
        other => anyhow::bail!(
            "--spec {:?}: scheme {other:?} is not supported (http, https, tcp or ipc)",
            args.spec
        ),
    }
    let (mut iss, mut key) = (None, None);
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(k, v)| match k.as_ref() {
            "iss" => {
                iss = Some(v.into_owned());
                None
            }
            "key" => {
                key = Some(v.into_owned());
                None
            }
            // Read by the libraries' request verification, not by publishing.
            "verify-iss" | "verify-key" => None,
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    url.set_query(None);
    let base = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{base}/publish/"));
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    let explicit = match (&args.user, &args.bearer) {
        (Some(_), Some(_)) => anyhow::bail!("--user and --bearer: give one, not both"),
        (Some(user), None) => {
            if !user.contains(':') {
                anyhow::bail!("--user: expected USER:PASS");
            }
            let encoded = base64::engine::general_purpose::STANDARD.encode(user);
            Some(format!("Basic {encoded}"))
        }
        (None, Some(token)) => Some(format!("Bearer {token}")),
        (None, None) => None,
    };
    if explicit.is_some() && url.scheme() == "http" && !is_loopback(&url) {
        anyhow::bail!(
            "--user and --bearer need https, or a loopback host: they would cross the network in the clear"
        );
    }
    let authorization = match (explicit, key) {
        (Some(explicit), _) => Some(explicit),
        (None, Some(key)) => Some(match iss {
            Some(iss) => {
                let key = grip::sig::SigKey::parse(&key)
                    .map_err(|e| anyhow::anyhow!("the GRIP URL's key: {e}"))?;
                let token = grip::sig::sign(&iss, &key, now_unix, TOKEN_TTL_SECS)
                    .map_err(|e| anyhow::anyhow!("signing with the GRIP URL's key: {e}"))?;
                format!("Bearer {token}")
            }
            None => format!("Bearer {key}"),
        }),
        (None, None) => None,
    };
    Ok(Target { url, authorization })
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A client for the publish API, over http or https (the system's roots).
fn client() -> Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::origin::system_roots_tls())
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Sends `req`; the answer's text when its status is a success, else an error naming it.
async fn answer(req: Request<Full<Bytes>>) -> anyhow::Result<String> {
    let uri = req.uri().clone();
    let resp = client()
        .request(req)
        .await
        .map_err(|e| anyhow::anyhow!("{uri}: {}", crate::http::error_chain(&e)))?;
    let status = resp.status();
    let text = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text).into_owned();
    if !status.is_success() {
        anyhow::bail!(
            "{} {}: {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            text.trim_end()
        );
    }
    Ok(text)
}

/// `GET url` (a `/readyz` or `/healthz` probe): its answer when `200`, else an error.
pub async fn probe(url: &str) -> anyhow::Result<String> {
    answer(Request::get(url).body(Full::new(Bytes::new()))?).await
}

/// Whether `spec` names a ZeroMQ socket rather than a publish API.
pub fn is_zmq_spec(spec: &str) -> bool {
    spec.starts_with("tcp://") || spec.starts_with("ipc://")
}

/// Pushes the item of `body` (`{"items": [item]}`) to the PULL socket at `spec`, as `J` + JSON.
async fn push(spec: &str, args: &PublishArgs, body: Value) -> anyhow::Result<String> {
    use zeromq::{Socket as _, SocketSend as _};
    if args.user.is_some() || args.bearer.is_some() {
        anyhow::bail!("--user and --bearer: a ZeroMQ spec ({spec}) takes no credentials");
    }
    let item = &body["items"][0];
    let mut message = b"J".to_vec();
    message.extend_from_slice(item.to_string().as_bytes());
    let send = async {
        let mut socket = zeromq::PushSocket::new();
        socket
            .connect(spec)
            .await
            .map_err(|e| anyhow::anyhow!("--spec {spec}: {e}"))?;
        socket
            .send(Bytes::from(message).into())
            .await
            .map_err(|e| anyhow::anyhow!("--spec {spec}: {e}"))?;
        // The item is in the peer's queue. Dropping the socket ends the queue; the peer's writer
        // task then writes what is left, flushes, and lets go of the socket's backend, which is
        // the sign that the item has left (the socket has no linger of its own).
        let backend = socket.backend();
        drop(socket);
        while std::sync::Arc::strong_count(&backend) > 1 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(ZMQ_TIMEOUT, send)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "--spec {spec}: no PULL socket took the item within {} s",
                ZMQ_TIMEOUT.as_secs()
            )
        })??;
    Ok("Published".to_string())
}

/// Publishes what `args` say; returns the API's answer (`Published`).
pub async fn run(args: &PublishArgs) -> anyhow::Result<String> {
    let body = build_item(args)?;
    if is_zmq_spec(&args.spec) {
        return push(&args.spec, args, body).await;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let target = target(args, now)?;
    let mut req = Request::post(target.url.as_str())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    if let Some(auth) = &target.authorization {
        req.headers_mut().insert(
            AUTHORIZATION,
            HeaderValue::from_str(auth)
                .map_err(|_| anyhow::anyhow!("credentials: not a valid header value"))?,
        );
    }
    Ok(answer(req).await?.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: PublishArgs,
    }

    fn args(argv: &[&str]) -> PublishArgs {
        let mut full = vec!["publish"];
        full.extend_from_slice(argv);
        Cmd::try_parse_from(full).unwrap().args
    }

    // The expected bodies are what `pushpin-publish` 1.36 sent for the same options.
    #[test]
    fn items_are_built_as_pushpin_publish_builds_them() {
        let cases: [(&[&str], Value); 5] = [
            (
                &["test", "hello"],
                json!({"items":[{"channel":"test","formats":{"http-response":{"body":"hello\n","code":200},"http-stream":{"content":"hello\n"},"ws-message":{"content":"hello"}}}]}),
            ),
            (
                &[
                    "test",
                    "hello",
                    "--id",
                    "a",
                    "--prev-id",
                    "b",
                    "--sender",
                    "s",
                    "-M",
                    "x=1",
                    "-M",
                    "y=2",
                    "--no-seq",
                    "--code",
                    "201",
                    "-H",
                    "X-A: 1",
                    "-H",
                    "X-B: 2",
                    "--no-eol",
                ],
                json!({"items":[{"channel":"test","formats":{"http-response":{"body":"hello","code":201,"headers":[["X-A","1"],["X-B","2"]]},"http-stream":{"content":"hello"},"ws-message":{"content":"hello"}},"id":"a","meta":{"sender":"s","x":"1","y":"2"},"no-seq":true,"prev-id":"b"}]}),
            ),
            (
                &["test", "--hint"],
                json!({"items":[{"channel":"test","formats":{"http-response":{"action":"hint"},"http-stream":{"action":"hint"},"ws-message":{"action":"hint"}}}]}),
            ),
            (
                &["test", "bye", "--close"],
                json!({"items":[{"channel":"test","formats":{"http-stream":{"action":"close"},"ws-message":{"action":"close"}}}]}),
            ),
            (
                &["test", r#"[{"op":"add","path":"/a","value":1}]"#, "--patch"],
                json!({"items":[{"channel":"test","formats":{"http-response":{"body-patch":[{"op":"add","path":"/a","value":1}],"code":200}}}]}),
            ),
        ];
        for (argv, want) in cases {
            assert_eq!(build_item(&args(argv)).unwrap(), want, "{argv:?}");
        }
    }

    #[test]
    fn a_file_is_sent_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        std::fs::write(&path, "filecontent\n").unwrap();
        let at = format!("@{}", path.display());
        assert_eq!(
            build_item(&args(&["test", &at])).unwrap(),
            json!({"items":[{"channel":"test","formats":{"http-response":{"body":"filecontent\n","code":200},"http-stream":{"content":"filecontent\n"},"ws-message":{"content":"filecontent\n"}}}]})
        );
        let missing = format!("@{}", dir.path().join("nope").display());
        let err = build_item(&args(&["test", &missing]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("can't read file "), "{err}");
    }

    #[test]
    fn bad_options_are_named() {
        let cases: [(&[&str], &str); 4] = [
            (&["test"], "must specify content"),
            (
                &["test", "x", "-M", "novalue"],
                "meta \"novalue\": expected K=V",
            ),
            (
                &["test", "x", "-H", "nocolon"],
                "header \"nocolon\": expected \"K: V\"",
            ),
            (
                &["test", "{", "--patch"],
                "--patch: the content is not JSON",
            ),
        ];
        for (argv, want) in cases {
            let err = build_item(&args(argv)).unwrap_err().to_string();
            assert!(err.starts_with(want), "{argv:?}: {err}");
        }
    }

    #[test]
    fn grip_urls_give_the_publish_url_and_credentials() {
        let t = target(&args(&["c", "x", "--spec", "http://localhost:5561"]), 0).unwrap();
        assert_eq!(t.url.as_str(), "http://localhost:5561/publish/");
        assert_eq!(t.authorization, None);

        let t = target(
            &args(&["c", "x", "--spec", "https://api.example/realm/?key=tok&x=1"]),
            0,
        )
        .unwrap();
        assert_eq!(t.url.as_str(), "https://api.example/realm/publish/?x=1");
        assert_eq!(t.authorization.as_deref(), Some("Bearer tok"));

        let spec = "http://127.0.0.1:5561/?iss=realm&key=base64:c2VjcmV0&verify-iss=v";
        let now = 1_800_000_000;
        let t = target(&args(&["c", "x", "--spec", spec]), now).unwrap();
        assert_eq!(t.url.as_str(), "http://127.0.0.1:5561/publish/");
        let token = t.authorization.unwrap();
        let token = token.strip_prefix("Bearer ").unwrap();
        let key = grip::sig::SigKey::parse("secret").unwrap();
        let claims = grip::sig::verify(token, &key, now).unwrap();
        assert_eq!(claims.iss.as_deref(), Some("realm"));

        let t = target(
            &args(&["c", "x", "-u", "u:p", "--spec", "http://[::1]:5561"]),
            0,
        )
        .unwrap();
        assert_eq!(t.authorization.as_deref(), Some("Basic dTpw"));
    }

    #[test]
    fn plain_credentials_are_refused_over_http_off_loopback() {
        for flags in [["-u", "u:p"], ["--bearer", "t"]] {
            let mut argv = vec!["c", "x", "--spec", "http://pub.example:5561"];
            argv.extend_from_slice(&flags);
            let err = target(&args(&argv), 0).unwrap_err().to_string();
            assert!(err.contains("need https"), "{err}");
            argv[3] = "https://pub.example:5561";
            assert!(target(&args(&argv), 0).is_ok());
        }
        let err = target(&args(&["c", "x", "--spec", "ftp://x"]), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("scheme \"ftp\""), "{err}");
    }
}
