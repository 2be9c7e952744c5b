//! Subscription filters (`Grip-Channel: c; filter=…`): which deliveries a subscriber gets and how
//! their content is rewritten for it.
//!
//! Filters run in order; a dropping filter ends the chain. `skip-self`, `skip-users` and
//! `require-sub` decide delivery from the subscription's meta and the item's meta; `build-id` and
//! `var-subst` rewrite content with the `%` template syntax below. Unknown filter names are
//! ignored, as Pushpin does.
//!
//! Template syntax: `%%` is a literal `%`; `%X` or `%(arg)X` is a directive (`X` a letter, `arg`
//! any text with `\` escaping the next character). `build-id` renders the subscription's
//! `id_format` meta with `%(channel)s` → that channel's current position, then replaces `%I` in
//! content with the rendered id and `%(x)I` with `x` (hex-encoded when `id_encoding=hex`).
//! `var-subst` replaces `%(name)s` with the subscription's meta value `name`.
//!
//! ```
//! use std::collections::BTreeMap;
//! use grip::filter::{apply, Input};
//!
//! let sub_meta = BTreeMap::from([("id_format".to_string(), "a:%(a)s".to_string())]);
//! let positions = BTreeMap::from([("a".to_string(), "7".to_string())]);
//! let input = Input {
//!     sub_meta: &sub_meta,
//!     pub_meta: &BTreeMap::new(),
//!     positions: &positions,
//!     subscribed: &|_| true,
//! };
//! let content = b"id: %I\n";
//! let out = apply(&["build-id".to_string()], &input, None, content).unwrap();
//! assert_eq!(out.as_deref(content), Some(&b"id: a:7\n"[..]));
//! ```

use std::collections::BTreeMap;

/// Filters that change content (and so take part in `content-filters` matching).
pub const CONTENT_FILTERS: [&str; 2] = ["build-id", "var-subst"];

/// What the filters of one subscription see for one delivery.
pub struct Input<'a> {
    /// The subscription's meta (`Grip-Set-Meta`, WebSocket `set-meta`).
    pub sub_meta: &'a BTreeMap<String, String>,
    /// The item's `meta`.
    pub pub_meta: &'a BTreeMap<String, String>,
    /// The connection's position (last id) on each of its channels, by the origin's name.
    pub positions: &'a BTreeMap<String, String>,
    /// Whether the connection is subscribed to a channel (origin's name).
    pub subscribed: &'a dyn Fn(&str) -> bool,
}

/// A filter could not process content; the delivery is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// `build-id` without `id_format` meta.
    #[error("filter build-id: no sub meta 'id_format'")]
    NoIdFormat,
    /// `id_encoding` other than `hex`.
    #[error("filter build-id: unsupported id_encoding {0:?}")]
    Encoding(String),
    /// A template could not be rendered.
    #[error("filter {filter}: {message}")]
    Template {
        /// The filter.
        filter: &'static str,
        /// What is wrong, with the byte position.
        message: String,
    },
}

/// What the filters decided for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not delivered to this subscription.
    Drop,
    /// Delivered as published (no copy was made).
    Unchanged,
    /// Delivered with this content instead.
    Rewritten(Vec<u8>),
}

impl Outcome {
    /// The content to send as shared bytes: `original` itself (not copied) when unchanged;
    /// `None` when dropped.
    pub fn into_shared(self, original: &bytes::Bytes) -> Option<bytes::Bytes> {
        match self {
            Outcome::Drop => None,
            Outcome::Unchanged => Some(original.clone()),
            Outcome::Rewritten(v) => Some(bytes::Bytes::from(v)),
        }
    }

    /// The content to send, borrowing the original when unchanged; `None` when dropped.
    pub fn as_deref<'a>(&'a self, original: &'a [u8]) -> Option<&'a [u8]> {
        match self {
            Outcome::Drop => None,
            Outcome::Unchanged => Some(original),
            Outcome::Rewritten(v) => Some(v),
        }
    }
}

/// Runs `filters` over `content` for one subscription. Content is copied only by a filter that
/// rewrites it.
pub fn apply(
    filters: &[String],
    input: &Input<'_>,
    content_filters: Option<&[String]>,
    content: &[u8],
) -> Result<Outcome, FilterError> {
    if let Some(wanted) = content_filters {
        let have: Vec<&String> = filters
            .iter()
            .filter(|f| CONTENT_FILTERS.contains(&f.as_str()))
            .collect();
        if have.len() != wanted.len() || have.iter().zip(wanted).any(|(a, b)| *a != b) {
            return Ok(Outcome::Drop);
        }
    }
    let mut out: Option<Vec<u8>> = None;
    for f in filters {
        let current = out.as_deref().unwrap_or(content);
        match f.as_str() {
            "skip-self" => {
                let user = input.sub_meta.get("user").filter(|u| !u.is_empty());
                if user.is_some() && user == input.pub_meta.get("sender") {
                    return Ok(Outcome::Drop);
                }
            }
            "skip-users" => {
                let Some(user) = input.sub_meta.get("user").filter(|u| !u.is_empty()) else {
                    continue;
                };
                let skip = input.pub_meta.get("skip_users").map_or("", String::as_str);
                if skip.split(',').map(str::trim).any(|s| s == user) {
                    return Ok(Outcome::Drop);
                }
            }
            "require-sub" => {
                if let Some(required) = input.pub_meta.get("require_sub").filter(|r| !r.is_empty())
                {
                    if !(input.subscribed)(required) {
                        return Ok(Outcome::Drop);
                    }
                }
            }
            "build-id" => out = Some(build_id(input, current)?),
            "var-subst" => {
                out = Some(
                    render(current, |d, arg| variable(input.sub_meta, d, arg)).map_err(
                        |message| FilterError::Template {
                            filter: "var-subst",
                            message,
                        },
                    )?,
                )
            }
            _ => {}
        }
    }
    Ok(out.map_or(Outcome::Unchanged, Outcome::Rewritten))
}

/// Whether a list of filters contains one that rewrites content.
pub fn has_content_filter(filters: &[String]) -> bool {
    filters
        .iter()
        .any(|f| CONTENT_FILTERS.contains(&f.as_str()))
}

/// The `build-id` rewrite of `content` for a subscription.
pub fn build_id(input: &Input<'_>, content: &[u8]) -> Result<Vec<u8>, FilterError> {
    let format = input
        .sub_meta
        .get("id_format")
        .ok_or(FilterError::NoIdFormat)?;
    let hex = match input.sub_meta.get("id_encoding").map(String::as_str) {
        None => false,
        Some("hex") => true,
        Some(other) => return Err(FilterError::Encoding(other.to_string())),
    };
    let id = if input.positions.is_empty() {
        None
    } else {
        Some(render_id(format, input.positions)?)
    };
    render(content, |d, arg| {
        if d != b'I' {
            return Err(format!("Unknown directive '{}'", d as char));
        }
        let id = match arg {
            Some(a) => a.to_string(),
            None => id
                .clone()
                .ok_or_else(|| "No ID specified and no default ID in context".to_string())?,
        };
        Ok(if hex {
            id.bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes()
        } else {
            id.into_bytes()
        })
    })
    .map_err(|message| FilterError::Template {
        filter: "build-id",
        message,
    })
}

/// Renders an `id_format` with `%(channel)s` → that channel's position.
pub fn render_id(
    format: &str,
    positions: &BTreeMap<String, String>,
) -> Result<String, FilterError> {
    let out =
        render(format.as_bytes(), |d, arg| variable(positions, d, arg)).map_err(|message| {
            FilterError::Template {
                filter: "build-id",
                message,
            }
        })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The `%(name)s` directive: the value of `name` in `vars`.
fn variable(
    vars: &BTreeMap<String, String>,
    directive: u8,
    arg: Option<&str>,
) -> Result<Vec<u8>, String> {
    match (directive, arg) {
        (b's', Some(name)) => vars
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .ok_or_else(|| format!("No such variable '{name}'")),
        (b's', None) => Err("Directive 's' requires argument".to_string()),
        (d, _) => Err(format!("Unknown directive '{}'", d as char)),
    }
}

/// Processes `%` directives in `template`, asking `handle` for each `(directive, arg)`.
pub fn render(
    template: &[u8],
    mut handle: impl FnMut(u8, Option<&str>) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(template.len());
    let mut i = 0;
    while i < template.len() {
        let c = template[i];
        if c != b'%' {
            out.push(c);
            i += 1;
            continue;
        }
        let at = i;
        i += 1;
        let Some(&next) = template.get(i) else {
            return Err(format!("Expected directive after '%' at position {at}"));
        };
        if next == b'%' {
            out.push(b'%');
            i += 1;
            continue;
        }
        let mut arg = None;
        if next == b'(' {
            let start = i;
            i += 1;
            let mut a = Vec::new();
            loop {
                match template.get(i) {
                    None => return Err(format!("Unterminated field starting at position {start}")),
                    Some(b'\\') => {
                        i += 1;
                        match template.get(i) {
                            Some(&e) => a.push(e),
                            None => {
                                return Err(format!(
                                    "Expected character after '\\' at position {i}"
                                ))
                            }
                        }
                    }
                    Some(b')') => break,
                    Some(&o) => a.push(o),
                }
                i += 1;
            }
            i += 1;
            arg = Some(String::from_utf8_lossy(&a).into_owned());
        }
        let Some(&directive) = template.get(i) else {
            return Err(format!("Expected directive after ')' at position {i}"));
        };
        if !directive.is_ascii_alphabetic() {
            return Err(format!(
                "Unknown directive '{}' at position {i}",
                directive as char
            ));
        }
        let value =
            handle(directive, arg.as_deref()).map_err(|e| format!("{e} at position {i}"))?;
        out.extend_from_slice(&value);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(
        filters: &[&str],
        sub: &[(&str, &str)],
        publ: &[(&str, &str)],
        positions: &[(&str, &str)],
        content: &str,
    ) -> Result<Option<String>, FilterError> {
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let (sub, publ, positions) = (map(sub), map(publ), map(positions));
        let input = Input {
            sub_meta: &sub,
            pub_meta: &publ,
            positions: &positions,
            subscribed: &|c| c == "mine",
        };
        apply(&filters, &input, None, content.as_bytes()).map(|o| {
            o.as_deref(content.as_bytes())
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        })
    }

    type Pairs<'a> = &'a [(&'a str, &'a str)];

    #[test]
    fn delivery_filters() {
        let cases: &[(&[&str], Pairs, Pairs, bool)] = &[
            (&["skip-self"], &[("user", "a")], &[("sender", "a")], false),
            (&["skip-self"], &[("user", "a")], &[("sender", "b")], true),
            (&["skip-self"], &[], &[("sender", "")], true),
            (
                &["skip-users"],
                &[("user", "a")],
                &[("skip_users", "b, a")],
                false,
            ),
            (
                &["skip-users"],
                &[("user", "c")],
                &[("skip_users", "b,a")],
                true,
            ),
            (&["skip-users"], &[], &[("skip_users", "a")], true),
            (&["require-sub"], &[], &[("require_sub", "mine")], true),
            (&["require-sub"], &[], &[("require_sub", "other")], false),
            (&["require-sub"], &[], &[], true),
            (&["unknown-filter"], &[], &[], true),
        ];
        for (filters, sub, publ, delivered) in cases {
            let got = run(filters, sub, publ, &[], "x").unwrap();
            assert_eq!(got.is_some(), *delivered, "{filters:?} {sub:?} {publ:?}");
        }
    }

    #[test]
    fn build_id_rendering() {
        let cases: &[(Pairs, Pairs, &str, Result<&str, &str>)] = &[
            (
                &[("id_format", "%(a)s")],
                &[("a", "5")],
                "id: %I\n",
                Ok("id: 5\n"),
            ),
            (
                &[("id_format", "a:%(a)s,b:%(b)s")],
                &[("a", "1"), ("b", "2")],
                "%I",
                Ok("a:1,b:2"),
            ),
            (
                &[("id_format", "%(a)s"), ("id_encoding", "hex")],
                &[("a", "AB")],
                "%I",
                Ok("4142"),
            ),
            (
                &[("id_format", "%(a)s")],
                &[("a", "1")],
                "100%% and %(lit)I",
                Ok("100% and lit"),
            ),
            (&[("id_format", "%(a)s")], &[], "%I", Err("No ID specified")),
            (
                &[("id_format", "%(a)s")],
                &[],
                "no directive",
                Ok("no directive"),
            ),
            (
                &[("id_format", "%(zz)s")],
                &[("a", "1")],
                "%I",
                Err("No such variable 'zz'"),
            ),
            (&[], &[("a", "1")], "%I", Err("no sub meta 'id_format'")),
            (
                &[("id_format", "%(a)s")],
                &[("a", "1")],
                "%s",
                Err("Unknown directive 's'"),
            ),
            (
                &[("id_format", "%(a)s")],
                &[("a", "1")],
                "50%",
                Err("Expected directive"),
            ),
            (
                &[("id_format", "%(a)s"), ("id_encoding", "b64")],
                &[("a", "1")],
                "%I",
                Err("unsupported"),
            ),
        ];
        for (sub, positions, content, want) in cases {
            let got = run(&["build-id"], sub, &[], positions, content);
            match (got, want) {
                (Ok(Some(g)), Ok(w)) => assert_eq!(&g, w, "{sub:?} {content}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e} vs {w}"),
                (g, w) => panic!("{sub:?} {content}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn var_subst_and_chains() {
        let got = run(&["var-subst"], &[("name", "Ann")], &[], &[], "hi %(name)s").unwrap();
        assert_eq!(got.as_deref(), Some("hi Ann"));
        let err = run(&["var-subst"], &[], &[], &[], "hi %(name)s").unwrap_err();
        assert!(err.to_string().contains("No such variable 'name'"));
        let got = run(
            &["skip-self", "var-subst", "build-id"],
            &[("user", "u"), ("id_format", "%(c)s"), ("v", "%I")],
            &[("sender", "other")],
            &[("c", "9")],
            "%(v)s",
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("9"), "var-subst output feeds build-id");
    }

    #[test]
    fn content_filters_must_match_exactly() {
        let filters = vec!["skip-self".to_string(), "build-id".to_string()];
        let empty = BTreeMap::new();
        let positions = map(&[("c", "1")]);
        let sub = map(&[("id_format", "%(c)s")]);
        let input = Input {
            sub_meta: &sub,
            pub_meta: &empty,
            positions: &positions,
            subscribed: &|_| true,
        };
        let want = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let run = |f: &[String], cf: &[&str]| apply(f, &input, Some(&want(cf)), b"%I").unwrap();
        assert_eq!(
            run(&filters, &["build-id"]),
            Outcome::Rewritten(b"1".to_vec())
        );
        assert_eq!(run(&filters, &[]), Outcome::Drop);
        assert_eq!(run(&filters, &["var-subst"]), Outcome::Drop);
        assert_eq!(
            run(&[], &[]),
            Outcome::Unchanged,
            "no content filters, no copy"
        );
    }
}
