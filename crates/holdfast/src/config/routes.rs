//! The routes file, in Pushpin's syntax, and route matching.
//!
//! One route per line: `<condition>[,prop[=value]…] <target>[,param[=value]…] [<target2>…]`.
//! `#` starts a comment; values may be double-quoted (escapes `\\` and `\"`). The condition's first
//! value is `*` or an exact host; a line that starts with a prop has no host and is reachable only
//! by id. Matching ([`RouteTable::find`]) follows Pushpin: exact-host routes first, else `*` routes;
//! among the candidates that match `proto`, `ssl` and `path_beg`, `proto` set beats unset, then the
//! longer `path_beg`, then `ssl` set. Line order never matters.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::DEFAULT_SIG_KEY;

/// A routes-file problem, with the file and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct RoutesError {
    /// The file (or `<built-in>`).
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, naming the token.
    pub message: String,
}

/// Transport a route applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Plain HTTP requests.
    Http,
    /// WebSocket upgrades.
    Ws,
}

/// What a request must look like for a route to apply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Condition {
    /// Exact host (lower case), `None` for `*`.
    pub host: Option<String>,
    /// The line had no host at all: only reachable by id.
    pub id_only: bool,
    /// `proto=`.
    pub proto: Option<Proto>,
    /// `ssl=yes|no`.
    pub ssl: Option<bool>,
    /// `path_beg=`.
    pub path_beg: Option<String>,
}

/// A route's request rewrites and GRIP options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteOptions {
    /// `prefix=`: prepended to every channel name subscribed through this route.
    pub channel_prefix: String,
    /// `sig_key=`: per-route Grip-Sig key, in `grip.sig_key`'s forms; a relative `file:` path is
    /// resolved against the routes file's folder when the file is parsed.
    pub sig_key: Option<String>,
    /// `sig_iss=`: per-route Grip-Sig issuer.
    pub sig_iss: Option<String>,
    /// `as_host=`: rewrite the request host (and `Host`).
    pub as_host: Option<String>,
    /// `path_rem=N`: drop the first N characters of the path.
    pub path_rem: usize,
    /// `replace_beg=`: replace the `path_beg` prefix with this.
    pub replace_beg: Option<String>,
    /// `header=Name:Value`, in order; an empty value removes the header.
    pub headers: Vec<(String, String)>,
    /// `no_grip`: responses are relayed, never interpreted as GRIP.
    pub no_grip: bool,
    /// `debug`: error details in responses.
    pub debug: bool,
    /// `aco`: automatic cross-origin support on this route — CORS headers on responses and
    /// JSON-P — as `server.auto_cross_origin` turns on for every route.
    pub auto_cross_origin: bool,
    /// `jsonp_mode=`, `jsonp_cb=`, `jsonp_body=`, `jsonp_defcb=`, `jsonp_defmethod=`: how JSON-P
    /// requests are read and their answers wrapped, when cross-origin support is on.
    pub jsonp: JsonpConfig,
    /// `orig_headers`: send the origin a copy of every header the client sent, named with the
    /// prefix [`ORIG_HEADER_PREFIX`]; without it, client headers with that prefix are removed.
    pub orig_headers: bool,
    /// `log_level=N`: the most verbose level this route's log lines are written at, in
    /// Pushpin's numbers (0 error, 1 warn, 2 info, 3 debug, 4 trace); `None`: no limit.
    pub log_level: Option<tracing::Level>,
    /// `access_log=off|on|FRACTION`: the share of this route's requests written to the access
    /// log, in parts per million (`log.access_sample` when unset).
    pub access_log: Option<u32>,
    /// `sockjs=`: the path prefix of a SockJS endpoint on this route (see docs/sockjs.md).
    pub sockjs: Option<String>,
    /// `sockjs_as_path=`: the path the origin's WebSocket is opened on for SockJS sessions,
    /// instead of the `sockjs=` prefix.
    pub sockjs_as_path: Option<String>,
    /// `bayeux=`: the path of a Bayeux endpoint on this route (see docs/bayeux.md).
    pub bayeux: Option<String>,
}

/// The prefix of the copies `orig_headers` makes of the client's headers (Pushpin's marker).
pub const ORIG_HEADER_PREFIX: &str = "eb9bf0f5-";

/// How a JSON-P answer wraps the origin's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonpMode {
    /// `callback(<body>)`: the body alone, one trailing newline dropped.
    Basic,
    /// `callback({code, reason, headers, body})`: the whole response as a JSON object (the
    /// default, as in Pushpin).
    #[default]
    Extended,
}

/// A route's JSON-P settings, with Pushpin's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JsonpConfig {
    /// `jsonp_mode=basic|extended`.
    pub mode: JsonpMode,
    /// `jsonp_cb=`: the query parameter naming the callback; unset: `callback`.
    pub callback_param: Option<String>,
    /// `jsonp_body=`: a query parameter whose value becomes the request body (sent as
    /// `application/json`); unset: the `_body` parameter does that, with no content type.
    pub body_param: Option<String>,
    /// `jsonp_defcb=`: the callback used when the request names none but carries the body
    /// parameter (`jsonp_body=`).
    pub default_callback: Option<String>,
    /// `jsonp_defmethod=`: the method sent to the origin when the request has no `_method`
    /// parameter; unset: `POST` in basic mode, `GET` in extended mode.
    pub default_method: Option<http::Method>,
}

impl JsonpConfig {
    /// The query parameter naming the callback.
    pub fn callback_param(&self) -> &str {
        self.callback_param.as_deref().unwrap_or("callback")
    }

    /// The method a JSON-P request reaches the origin with, unless it says `_method`.
    pub fn default_method(&self) -> http::Method {
        match (&self.default_method, self.mode) {
            (Some(m), _) => m.clone(),
            (None, JsonpMode::Basic) => http::Method::POST,
            (None, JsonpMode::Extended) => http::Method::GET,
        }
    }
}

/// Whether `name` can be a JSON-P callback: letters, digits, `_`, `$`, `.`, `[` and `]` (a
/// function, a property path, an array index). Pushpin takes any text; anything else could
/// make the answer run code of the requester's choosing on a page that trusts this origin.
pub fn is_callback_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.' | b'[' | b']'))
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// An origin server.
    Origin {
        /// Host name or IP (without brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// The built-in test handler.
    Test,
}

/// One target of a route, with its params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Origin or test handler.
    pub kind: TargetKind,
    /// `ssl`: https/wss to the origin.
    pub ssl: bool,
    /// `host=`: the Host (and URI host) sent to the origin.
    pub host_header: Option<String>,
    /// `over_http`: WebSocket-over-HTTP.
    pub over_http: bool,
    /// `sub=`: implicit subscriptions, in order.
    pub subs: Vec<String>,
    /// `insecure`: skip TLS verification.
    pub insecure: bool,
    /// `untrusted`: connections to the target go through the outbound policy, and the origin
    /// is not trusted to send Holdfast elsewhere: its next and gone links may only point at the
    /// host the client asked for.
    pub untrusted: bool,
    /// `one_event`: WebSocket-over-HTTP requests carry at most one event each.
    pub one_event: bool,
    /// `trust_connect_host`: verify the origin's TLS certificate against the connect host,
    /// which is what Holdfast always does.
    pub trust_connect_host: bool,
}

impl Target {
    /// `host:port` as written, for logs and error messages.
    pub fn label(&self) -> String {
        match &self.kind {
            TargetKind::Origin { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            TargetKind::Origin { host, port } => format!("{host}:{port}"),
            TargetKind::Test => "test".to_string(),
        }
    }
}

/// One line of the routes file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `id=`, or one derived from the condition.
    pub id: String,
    /// The id was given with `id=` (only those can be picked with `Pushpin-Route`).
    pub explicit_id: bool,
    /// When the route applies.
    pub condition: Condition,
    /// Rewrites and options.
    pub options: RouteOptions,
    /// Targets, tried in order.
    pub targets: Vec<Target>,
    /// Line in the file.
    pub line: usize,
}

impl Route {
    /// The route's `id=` when one was given (not derived from the condition), as stats
    /// packets name it.
    pub fn explicit_id(&self) -> Option<&str> {
        (self.id != default_id(&self.condition)).then_some(self.id.as_str())
    }

    /// The path the origin should see for a request path (with query) on this route.
    pub fn rewrite_path(&self, path_and_query: &str) -> String {
        let mut path = path_and_query.to_string();
        if let (Some(beg), Some(rep)) = (&self.condition.path_beg, &self.options.replace_beg) {
            if let Some(rest) = path.strip_prefix(beg.as_str()) {
                path = format!("{rep}{rest}");
            }
        }
        if self.options.path_rem > 0 {
            let cut = path
                .char_indices()
                .nth(self.options.path_rem)
                .map_or(path.len(), |(i, _)| i);
            path = path[cut..].to_string();
        }
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        path
    }

    fn specificity(&self) -> (bool, usize, bool) {
        let c = &self.condition;
        (
            c.proto.is_some(),
            c.path_beg.as_ref().map_or(0, String::len),
            c.ssl.is_some(),
        )
    }

    fn matches(&self, proto: Proto, ssl: bool, path: &str) -> bool {
        let c = &self.condition;
        c.proto.is_none_or(|p| p == proto)
            && c.ssl.is_none_or(|s| s == ssl)
            && c.path_beg
                .as_ref()
                .is_none_or(|p| path.starts_with(p.as_str()))
    }
}

/// A parsed routes file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    /// Routes in file order (duplicates removed). Shared so a held session can keep its route
    /// across reloads.
    pub routes: Vec<Arc<Route>>,
    /// Non-fatal notes (duplicate conditions, Pushpin options Holdfast ignores), with lines.
    pub warnings: Vec<String>,
}

/// The routes used when no routes file is configured.
pub const DEFAULT_ROUTES: &str = "* test\n";

impl RouteTable {
    /// The built-in table, `* test`.
    pub fn builtin() -> RouteTable {
        RouteTable::parse(DEFAULT_ROUTES, Path::new("<built-in>")).expect("built-in routes parse")
    }

    /// Reads and parses a routes file.
    pub fn load(path: &Path) -> Result<RouteTable, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RoutesError {
            path: path.to_path_buf(),
            line: 0,
            message: format!("cannot read routes file: {e}"),
        })?;
        let table = RouteTable::parse(&text, path)?;
        table.check_keys(path)?;
        Ok(table)
    }

    /// Reads every route's `sig_key=`, so a key that cannot sign (a missing file, a public or
    /// malformed PEM key) is an error naming its line instead of requests going out unsigned.
    fn check_keys(&self, path: &Path) -> Result<(), RoutesError> {
        for route in &self.routes {
            if let Some(key) = &route.options.sig_key {
                super::keys::signer(key).map_err(|e| RoutesError {
                    path: path.to_path_buf(),
                    line: route.line,
                    message: format!("sig_key: {e}"),
                })?;
            }
        }
        Ok(())
    }

    /// Parses routes text; `path` labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<RouteTable, RoutesError> {
        let mut routes: Vec<Arc<Route>> = Vec::new();
        let mut warnings = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| RoutesError {
                path: path.to_path_buf(),
                line,
                message,
            };
            let tokens = tokenize(raw).map_err(err)?;
            if tokens.is_empty() {
                continue;
            }
            let mut route = parse_route(&tokens, line, &mut warnings).map_err(err)?;
            // A key file is found beside the routes file, as in Pushpin.
            if let (Some(key), Some(dir)) = (&route.options.sig_key, path.parent()) {
                route.options.sig_key = Some(super::keys::resolve(key, dir));
            }
            if let Some(prev) = routes.iter().find(|r| r.condition == route.condition) {
                warnings.push(format!(
                    "{}:{line}: duplicate condition (first on line {}), skipped",
                    path.display(),
                    prev.line
                ));
                continue;
            }
            routes.push(Arc::new(route));
        }
        Ok(RouteTable { routes, warnings })
    }

    /// The route for a request, or `None`.
    pub fn find(&self, host: &str, proto: Proto, ssl: bool, path: &str) -> Option<&Arc<Route>> {
        let host = host_without_port(host).to_ascii_lowercase();
        let best = |want_host: Option<&str>| {
            self.routes
                .iter()
                .filter(|r| !r.condition.id_only && r.condition.host.as_deref() == want_host)
                .filter(|r| r.matches(proto, ssl, path))
                .max_by_key(|r| r.specificity())
        };
        best(Some(&host)).or_else(|| best(None))
    }

    /// The route with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.id == id)
    }

    /// The route a client picks with `Pushpin-Route: <id>` (`server.accept_pushpin_route`), by
    /// its `id=`, whatever its condition says, as Pushpin does.
    pub fn by_pushpin_route(&self, id: &str) -> PushpinRoute<'_> {
        let mut named = self.routes.iter().filter(|r| r.explicit_id && r.id == id);
        match (named.next(), named.next()) {
            (Some(route), None) => PushpinRoute::Found(route),
            (Some(_), Some(_)) => PushpinRoute::Shared,
            (None, _) => PushpinRoute::Missing,
        }
    }

    /// One warning naming every route that signs its origin requests' `Grip-Sig` with
    /// [`DEFAULT_SIG_KEY`] (its own `sig_key=`, or `sig_key`, the global key, when it has none);
    /// `None` when no route does. Routes that never sign (`no_grip`, or only the `test`
    /// target) are left out.
    pub fn default_sig_key_warning(&self, sig_key: &str) -> Option<String> {
        let weak: Vec<String> = self
            .routes
            .iter()
            .filter(|r| !r.options.no_grip)
            .filter(|r| r.targets.iter().any(|t| t.kind != TargetKind::Test))
            .filter(|r| r.options.sig_key.as_deref().unwrap_or(sig_key) == DEFAULT_SIG_KEY)
            .map(|r| format!("{} (line {})", r.id, r.line))
            .collect();
        (!weak.is_empty()).then(|| {
            format!(
                "routes {} sign Grip-Sig with the default sig_key \"{DEFAULT_SIG_KEY}\", so anyone \
                 can forge requests that origins take for Holdfast's; set grip.sig_key, or \
                 sig_key= on the route",
                weak.join(", ")
            )
        })
    }
}

/// What a `Pushpin-Route` header finds.
#[derive(Debug, Clone, Copy)]
pub enum PushpinRoute<'a> {
    /// The one route with that `id=`.
    Found(&'a Arc<Route>),
    /// Several routes have that `id=`: the header is ignored and the request routed as usual.
    Shared,
    /// No route has that `id=`.
    Missing,
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// One `key[=value]` item of a comma-separated token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prop {
    key: String,
    value: Option<String>,
}

/// Splits a line into space-separated tokens, each a list of comma-separated props, honouring
/// double quotes and `#` comments.
fn tokenize(line: &str) -> Result<Vec<Vec<Prop>>, String> {
    let mut tokens: Vec<Vec<Prop>> = Vec::new();
    let mut props: Vec<Prop> = Vec::new();
    let mut cur = String::new();
    let mut key: Option<String> = None;
    let mut had_any = false;
    let mut chars = line.chars();
    let finish_prop = |cur: &mut String, key: &mut Option<String>, props: &mut Vec<Prop>| {
        let text = std::mem::take(cur);
        match key.take() {
            Some(k) => props.push(Prop {
                key: k,
                value: Some(text),
            }),
            None => props.push(Prop {
                key: text,
                value: None,
            }),
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' => break,
            '"' => {
                had_any = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quoted value".to_string()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('\\' | '"')) => cur.push(e),
                            Some(e) => return Err(format!("invalid escape \\{e} in quoted value")),
                            None => return Err("unterminated quoted value".to_string()),
                        },
                        Some(o) => cur.push(o),
                    }
                }
            }
            '=' if key.is_none() => {
                had_any = true;
                key = Some(std::mem::take(&mut cur));
            }
            ',' => {
                finish_prop(&mut cur, &mut key, &mut props);
                had_any = false;
            }
            c if c.is_whitespace() => {
                if had_any || !cur.is_empty() || key.is_some() {
                    finish_prop(&mut cur, &mut key, &mut props);
                }
                had_any = false;
                if !props.is_empty() {
                    tokens.push(std::mem::take(&mut props));
                }
            }
            c => {
                had_any = true;
                cur.push(c);
            }
        }
    }
    if had_any || !cur.is_empty() || key.is_some() {
        finish_prop(&mut cur, &mut key, &mut props);
    }
    if !props.is_empty() {
        tokens.push(props);
    }
    Ok(tokens)
}

/// Pushpin route options Holdfast accepts and ignores, so a Pushpin file loads unchanged.
const IGNORED_ROUTE_OPTIONS: &[&str] = &["session"];

// One arm per route option, as the routes-file grammar lists them: split up, the grammar would
// be scattered over several functions that each need the same state.
fn parse_route(
    tokens: &[Vec<Prop>],
    line: usize,
    warnings: &mut Vec<String>,
) -> Result<Route, String> {
    let cond_props = &tokens[0];
    if tokens.len() < 2 {
        return Err("route has no target".to_string());
    }
    let mut condition = Condition::default();
    let mut options = RouteOptions::default();
    let mut id = None;
    let mut rest = &cond_props[..];
    let first = &cond_props[0];
    if first.value.is_none() && !is_flag_option(&first.key) {
        if first.key.is_empty() {
            return Err("empty host in condition".to_string());
        }
        if first.key != "*" {
            if first.key.contains('*') {
                return Err(format!(
                    "host {:?}: only '*' or an exact host is allowed",
                    first.key
                ));
            }
            condition.host = Some(first.key.to_ascii_lowercase());
        }
        rest = &cond_props[1..];
    } else {
        condition.id_only = true;
    }
    for prop in rest {
        let value = || {
            prop.value
                .clone()
                .ok_or_else(|| format!("route option '{}' needs a value", prop.key))
        };
        match prop.key.as_str() {
            "proto" => {
                condition.proto = Some(match value()?.as_str() {
                    "http" => Proto::Http,
                    "ws" => Proto::Ws,
                    v => return Err(format!("proto={v:?}: expected 'http' or 'ws'")),
                })
            }
            "ssl" => {
                condition.ssl = Some(match value()?.as_str() {
                    "yes" => true,
                    "no" => false,
                    v => return Err(format!("ssl={v:?}: expected 'yes' or 'no'")),
                })
            }
            "path_beg" => {
                let v = value()?;
                if v.is_empty() {
                    return Err("path_beg must not be empty".to_string());
                }
                condition.path_beg = Some(v);
            }
            "id" => id = Some(value()?),
            "prefix" => options.channel_prefix = value()?,
            "sig_key" => options.sig_key = Some(value()?),
            "sig_iss" => options.sig_iss = Some(value()?),
            "as_host" => options.as_host = Some(value()?),
            "path_rem" => {
                let v = value()?;
                options.path_rem = v
                    .parse()
                    .map_err(|_| format!("path_rem={v:?}: expected a number"))?;
            }
            "replace_beg" => options.replace_beg = Some(value()?),
            "header" => {
                let v = value()?;
                let (name, val) = v
                    .split_once(':')
                    .ok_or_else(|| format!("header={v:?}: expected Name:Value"))?;
                let name = name.trim();
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("header={v:?}: {name:?} is not a header name"))?;
                options
                    .headers
                    .push((name.to_string(), val.trim().to_string()));
            }
            "sockjs" => {
                let v = value()?;
                if !v.starts_with('/') {
                    return Err(format!("sockjs={v:?}: expected a path starting with '/'"));
                }
                options.sockjs = Some(v);
            }
            "bayeux" => {
                let v = value()?;
                if !v.starts_with('/') {
                    return Err(format!("bayeux={v:?}: expected a path starting with '/'"));
                }
                options.bayeux = Some(v);
            }
            "sockjs_as_path" => {
                let v = value()?;
                if !v.starts_with('/') {
                    return Err(format!(
                        "sockjs_as_path={v:?}: expected a path starting with '/'"
                    ));
                }
                options.sockjs_as_path = Some(v);
            }
            "no_grip" => options.no_grip = true,
            "debug" => options.debug = true,
            "aco" => options.auto_cross_origin = true,
            "orig_headers" => options.orig_headers = true,
            "log_level" => options.log_level = Some(parse_log_level(&value()?)?),
            "access_log" => options.access_log = Some(parse_access_log(&value()?)?),
            "jsonp_mode" => {
                options.jsonp.mode = match value()?.as_str() {
                    "basic" => JsonpMode::Basic,
                    "extended" => JsonpMode::Extended,
                    v => return Err(format!("jsonp_mode={v:?}: expected 'basic' or 'extended'")),
                }
            }
            "jsonp_cb" => options.jsonp.callback_param = Some(non_empty("jsonp_cb", value()?)?),
            "jsonp_body" => options.jsonp.body_param = Some(non_empty("jsonp_body", value()?)?),
            "jsonp_defcb" => {
                let v = value()?;
                if !is_callback_name(&v) {
                    return Err(format!(
                        "jsonp_defcb={v:?}: a callback is letters, digits and _ $ . [ ]"
                    ));
                }
                options.jsonp.default_callback = Some(v);
            }
            "jsonp_defmethod" => {
                let v = value()?;
                options.jsonp.default_method = Some(
                    http::Method::from_bytes(v.as_bytes())
                        .map_err(|_| format!("jsonp_defmethod={v:?}: not an HTTP method"))?,
                );
            }
            k if IGNORED_ROUTE_OPTIONS.contains(&k) => warnings.push(format!(
                "line {line}: route option '{k}' is not supported, ignored"
            )),
            k => return Err(format!("unknown route option '{k}'")),
        }
    }
    if options.sockjs_as_path.is_some() && options.sockjs.is_none() {
        warnings.push(format!(
            "line {line}: route option 'sockjs_as_path' without 'sockjs' has no effect"
        ));
    }
    if options.replace_beg.is_some() && condition.path_beg.is_none() {
        return Err("replace_beg needs path_beg".to_string());
    }
    let targets = tokens[1..]
        .iter()
        .map(|t| parse_target(t, line, warnings))
        .collect::<Result<Vec<_>, _>>()?;
    let explicit_id = id.is_some();
    let id = id.unwrap_or_else(|| default_id(&condition));
    Ok(Route {
        id,
        explicit_id,
        condition,
        options,
        targets,
        line,
    })
}

fn is_flag_option(key: &str) -> bool {
    matches!(key, "no_grip" | "debug" | "aco" | "orig_headers")
        || IGNORED_ROUTE_OPTIONS.contains(&key)
}

fn non_empty(option: &str, v: String) -> Result<String, String> {
    if v.is_empty() {
        return Err(format!("{option} must not be empty"));
    }
    Ok(v)
}

/// Pushpin's log levels: 0 error, 1 warn, 2 info, 3 debug, 4 trace.
/// `access_log=`: `off`, `on`, or a share of requests from 0 to 1, in parts per million.
fn parse_access_log(v: &str) -> Result<u32, String> {
    match v {
        "off" => Ok(0),
        "on" => Ok(1_000_000),
        _ => match v.parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Ok((f * 1_000_000.0).round() as u32),
            _ => Err(format!(
                "access_log={v:?}: expected off, on, or a share of requests from 0 to 1 (0.01 logs one in a hundred)"
            )),
        },
    }
}

fn parse_log_level(v: &str) -> Result<tracing::Level, String> {
    use tracing::Level;
    Ok(match v {
        "0" => Level::ERROR,
        "1" => Level::WARN,
        "2" => Level::INFO,
        "3" => Level::DEBUG,
        "4" => Level::TRACE,
        _ => {
            return Err(format!(
                "log_level={v:?}: expected 0 (error), 1 (warn), 2 (info), 3 (debug) or 4 (trace)"
            ))
        }
    })
}

fn default_id(c: &Condition) -> String {
    format!(
        "{},{},{},{}",
        c.host.as_deref().unwrap_or("*"),
        c.path_beg.as_deref().unwrap_or("*"),
        match c.ssl {
            Some(true) => "ssl",
            Some(false) => "no-ssl",
            None => "*",
        },
        match c.proto {
            Some(Proto::Http) => "http",
            Some(Proto::Ws) => "ws",
            None => "*",
        }
    )
}

fn parse_target(
    props: &[Prop],
    _line: usize,
    warnings: &mut Vec<String>,
) -> Result<Target, String> {
    let first = &props[0];
    if first.value.is_some() {
        return Err(format!(
            "target must start with host:port or 'test', found '{}={}'",
            first.key,
            first.value.as_deref().unwrap_or("")
        ));
    }
    let kind = parse_target_addr(&first.key)?;
    let mut target = Target {
        kind,
        ssl: false,
        host_header: None,
        over_http: false,
        subs: Vec::new(),
        insecure: false,
        untrusted: false,
        one_event: false,
        trust_connect_host: false,
    };
    for prop in &props[1..] {
        let value = || {
            prop.value
                .clone()
                .ok_or_else(|| format!("target param '{}' needs a value", prop.key))
        };
        match prop.key.as_str() {
            "ssl" => target.ssl = true,
            "host" => target.host_header = Some(value()?),
            "over_http" => target.over_http = true,
            "sub" => target.subs.push(value()?),
            "insecure" => target.insecure = true,
            "untrusted" => target.untrusted = true,
            "one_event" => target.one_event = true,
            "trust_connect_host" => target.trust_connect_host = true,
            k @ ("ipc_file_mode" | "client_cert" | "client_key") => {
                warnings.push(format!("target param '{k}' is not supported, ignored"))
            }
            k => return Err(format!("unknown target param '{k}'")),
        }
    }
    Ok(target)
}

fn parse_target_addr(s: &str) -> Result<TargetKind, String> {
    if s == "test" {
        return Ok(TargetKind::Test);
    }
    if s.starts_with("zhttp") {
        return Err(format!("target '{s}': ZeroMQ targets are not supported"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("target '{s}': expected [address]:port"))?;
        h.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("target '{s}': {h:?} is not an IPv6 address"))?;
        (h, p)
    } else {
        s.rsplit_once(':')
            .filter(|(h, _)| !h.is_empty() && !h.contains(':'))
            .ok_or_else(|| format!("target '{s}': expected host:port or 'test'"))?
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("target '{s}': {port:?} is not a port"))?;
    Ok(TargetKind::Origin {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests;
