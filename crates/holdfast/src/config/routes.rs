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
    /// `untrusted`: marks the target untrusted (accepted for compatibility).
    pub untrusted: bool,
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
const IGNORED_ROUTE_OPTIONS: &[&str] = &[
    "aco",
    "jsonp_mode",
    "jsonp_cb",
    "jsonp_body",
    "jsonp_defcb",
    "jsonp_defmethod",
    "session",
    "sockjs",
    "sockjs_as_path",
    "orig_headers",
    "log_level",
];

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
            "no_grip" => options.no_grip = true,
            "debug" => options.debug = true,
            k if IGNORED_ROUTE_OPTIONS.contains(&k) => warnings.push(format!(
                "line {line}: route option '{k}' is not supported, ignored"
            )),
            k => return Err(format!("unknown route option '{k}'")),
        }
    }
    if options.replace_beg.is_some() && condition.path_beg.is_none() {
        return Err("replace_beg needs path_beg".to_string());
    }
    let targets = tokens[1..]
        .iter()
        .map(|t| parse_target(t, line, warnings))
        .collect::<Result<Vec<_>, _>>()?;
    let id = id.unwrap_or_else(|| default_id(&condition));
    Ok(Route {
        id,
        condition,
        options,
        targets,
        line,
    })
}

fn is_flag_option(key: &str) -> bool {
    matches!(key, "no_grip" | "debug") || IGNORED_ROUTE_OPTIONS.contains(&key)
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
            k @ ("trust_connect_host" | "one_event" | "ipc_file_mode" | "client_cert"
            | "client_key") => {
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RouteTable, RoutesError> {
        RouteTable::parse(text, Path::new("routes"))
    }

    fn origin(host: &str, port: u16) -> TargetKind {
        TargetKind::Origin {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_pushpin_examples() {
        let t = parse(
            "# comment\n\
             * localhost:8000\n\
             *,path_beg=/api/,replace_beg=/ api.internal:80,ssl,host=api.example.com\n\
             *,proto=ws localhost:8000,over_http\n\
             example.com,id=ex,prefix=p-,no_grip 127.0.0.1:1 [::1]:2,sub=a,sub=b,insecure\n\
             *,path_beg=/q,header=X-A:1,header=\"X-B: two words\",debug,sig_key=k,sig_iss=i,as_host=o:81,path_rem=2 test\n",
        )
        .unwrap();
        assert_eq!(t.routes.len(), 5);
        let r = &t.routes[0];
        assert_eq!(r.id, "*,*,*,*");
        assert_eq!(r.targets[0].kind, origin("localhost", 8000));
        let r = &t.routes[1];
        assert_eq!(r.condition.path_beg.as_deref(), Some("/api/"));
        assert_eq!(r.options.replace_beg.as_deref(), Some("/"));
        assert!(r.targets[0].ssl);
        assert_eq!(r.targets[0].host_header.as_deref(), Some("api.example.com"));
        assert_eq!(t.routes[2].condition.proto, Some(Proto::Ws));
        assert!(t.routes[2].targets[0].over_http);
        let r = &t.routes[3];
        assert_eq!(r.id, "ex");
        assert_eq!(r.condition.host.as_deref(), Some("example.com"));
        assert_eq!(r.options.channel_prefix, "p-");
        assert!(r.options.no_grip);
        assert_eq!(r.targets[1].kind, origin("::1", 2));
        assert_eq!(r.targets[1].subs, vec!["a", "b"]);
        assert!(r.targets[1].insecure);
        assert_eq!(r.targets[1].label(), "[::1]:2");
        let r = &t.routes[4];
        assert_eq!(
            r.options.headers,
            vec![
                ("X-A".to_string(), "1".to_string()),
                ("X-B".to_string(), "two words".to_string())
            ]
        );
        assert!(r.options.debug);
        assert_eq!(r.options.sig_key.as_deref(), Some("k"));
        assert_eq!(r.options.as_host.as_deref(), Some("o:81"));
        assert_eq!(r.options.path_rem, 2);
        assert_eq!(r.targets[0].kind, TargetKind::Test);
    }

    #[test]
    fn errors_name_line_and_token() {
        let cases = [
            ("* localhost:8000\n*", 2, "no target"),
            ("*,proto=udp x:1", 1, "proto=\"udp\""),
            ("*,ssl=maybe x:1", 1, "ssl=\"maybe\""),
            ("*,colour=red x:1", 1, "unknown route option 'colour'"),
            ("* x:1,wat", 1, "unknown target param 'wat'"),
            ("* localhost", 1, "target 'localhost'"),
            ("* localhost:99999", 1, "is not a port"),
            ("* [zz]:1", 1, "not an IPv6 address"),
            ("\n\n*,path_beg=\"/a x:1", 3, "unterminated"),
            ("example.* x:1", 1, "exact host"),
            ("*,replace_beg=/x x:1", 1, "replace_beg needs path_beg"),
            ("*,path_rem=abc x:1", 1, "path_rem"),
            ("*,header=NoColon x:1", 1, "Name:Value"),
            ("* zhttpreq/tcp://127.0.0.1:1", 1, "ZeroMQ"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("routes:{line}:")), "{e}");
        }
    }

    #[test]
    fn duplicates_and_pushpin_only_options_warn() {
        let t = parse("* a:1\n* b:2\n*,aco,path_beg=/x c:3,one_event\n").unwrap();
        assert_eq!(t.routes.len(), 2);
        assert_eq!(t.warnings.len(), 3, "{:?}", t.warnings);
    }

    #[test]
    fn most_specific_route_wins() {
        let t = parse(
            "* any:1\n\
             *,path_beg=/a any-a:1\n\
             *,path_beg=/a/b any-ab:1\n\
             *,path_beg=/a,ssl=yes any-a-ssl:1\n\
             *,proto=ws any-ws:1\n\
             example.com ex:1\n\
             example.com,path_beg=/a ex-a:1\n\
             id=hidden hidden:1\n",
        )
        .unwrap();
        let cases = [
            ("other.org", Proto::Http, false, "/", "any"),
            ("other.org", Proto::Http, false, "/a/x", "any-a"),
            ("other.org", Proto::Http, false, "/a/b/c", "any-ab"),
            ("other.org", Proto::Http, true, "/a/x", "any-a-ssl"),
            ("other.org", Proto::Ws, false, "/a/b", "any-ws"),
            ("example.com:8080", Proto::Http, false, "/", "ex"),
            ("EXAMPLE.com", Proto::Http, false, "/a", "ex-a"),
            ("hidden", Proto::Http, false, "/", "any"),
        ];
        for (host, proto, ssl, path, want) in cases {
            let r = t.find(host, proto, ssl, path).unwrap();
            let got = match &r.targets[0].kind {
                TargetKind::Origin { host, .. } => host.clone(),
                TargetKind::Test => "test".into(),
            };
            assert_eq!(got, want, "{host} {proto:?} {ssl} {path}");
        }
        assert_eq!(t.by_id("hidden").unwrap().targets[0].label(), "hidden:1");
    }

    #[test]
    fn falls_back_to_star_when_host_routes_do_not_match() {
        let t = parse("example.com,path_beg=/only ex:1\n* any:1\n").unwrap();
        let r = t.find("example.com", Proto::Http, false, "/else").unwrap();
        assert_eq!(r.targets[0].label(), "any:1");
        assert!(parse("example.com ex:1\n")
            .unwrap()
            .find("nope", Proto::Http, false, "/")
            .is_none());
    }

    #[test]
    fn path_rewrites() {
        let t = parse(
            "*,path_beg=/api/,replace_beg=/v2/ a:1\n*,path_beg=/x,path_rem=2 b:1\n*,path_beg=/full,replace_beg=/ c:1\n",
        )
        .unwrap();
        let cases = [
            (0, "/api/items?q=1", "/v2/items?q=1"),
            (1, "/xyz/abc", "/yz/abc"),
            (2, "/full", "/"),
            (2, "/fullpath", "/path"),
        ];
        for (i, input, want) in cases {
            assert_eq!(t.routes[i].rewrite_path(input), want, "{input}");
        }
    }
}
