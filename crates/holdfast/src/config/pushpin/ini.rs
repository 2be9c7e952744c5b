//! Pushpin's `pushpin.conf` syntax, read as Qt's `QSettings` INI reader (which Pushpin uses)
//! reads it, with the line of every value kept.
//!
//! - `[section]` opens a section; `[General]` (any case) is the top level, as are keys before
//!   any section. A section named twice continues where it left off.
//! - `key=value`, spaces around either allowed. A line whose first character is `#` or `;` is a
//!   comment. A `;` after a value starts a comment; a `#` there is part of the value
//!   (`sig_key=a#b` is the key `a#b`), as in Qt.
//! - A value is trimmed. An unquoted `,` makes it a list (`http_port=7999,8000`); double quotes
//!   keep commas, `;` and spaces (`"a, b"`). The escapes are C's (`\\`, `\"`, `\'`, `\?`, `\a`,
//!   `\b`, `\f`, `\n`, `\r`, `\t`, `\v`, `\xHH…`, octal `\NNN`); a `\` at the end of a line joins
//!   the next line to the value, and a quoted value may go on over several lines.
//!
//! Where Qt skips what it cannot read, this reader stops at the line: a line that is none of a
//! section, a `key=value` and a comment, a section header without `]` or with text after it, a
//! quote left open at the end of the file, an unknown escape, an escape that is not a character.
//!
//! It is a reader of its own rather than an INI crate (`rust-ini`, or the `config` crate's INI
//! format that Pushpin's Rust runner uses) because those keep no line for a value, which every
//! error and warning here names, and do not read lists, `;` after values and escapes as Qt does.

use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// A value as written: one string, or a list when the value had an unquoted comma.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// No unquoted comma.
    One(String),
    /// The items between unquoted commas, empty ones included.
    List(Vec<String>),
}

impl Value {
    /// The value as one string; a list is an error, since Pushpin reads a list as no value.
    pub fn one(&self) -> Result<&str, String> {
        match self {
            Value::One(s) => Ok(s),
            Value::List(_) => Err(
                "one value is expected, not a list; put it in double quotes to keep its commas"
                    .into(),
            ),
        }
    }

    /// The items of a list (or the one value), leaving out empty ones: `a, ,b` is `a`, `b`, and
    /// an empty value has none.
    pub fn items(&self) -> Vec<&str> {
        let all: Vec<&str> = match self {
            Value::One(s) => vec![s],
            Value::List(items) => items.iter().map(String::as_str).collect(),
        };
        all.into_iter().filter(|s| !s.is_empty()).collect()
    }

    /// Applies `f` to the one value or to every item.
    pub fn map(&self, mut f: impl FnMut(&str) -> String) -> Value {
        match self {
            Value::One(s) => Value::One(f(s)),
            Value::List(items) => Value::List(items.iter().map(|s| f(s)).collect()),
        }
    }
}

/// One `key=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The section (`""` for the top level).
    pub section: String,
    /// The key.
    pub key: String,
    /// The value, unquoted and unescaped.
    pub value: Value,
    /// The value as written (trimmed), to quote in messages.
    pub raw: String,
    /// 1-based line where the entry starts.
    pub line: usize,
}

/// A parsed file: its entries in file order, repeated keys included.
#[derive(Debug, Clone)]
pub struct IniFile {
    /// The file, as given.
    pub path: PathBuf,
    /// Every `key=value`, in file order.
    pub entries: Vec<Entry>,
}

/// Parses `text`; `path` labels errors (`FILE:LINE: what is wrong`).
pub fn parse(text: &str, path: &Path) -> Result<IniFile, ConfigError> {
    let error = |line: usize, message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut section = String::new();
    let mut entries = Vec::new();
    for (line, text) in logical_lines(text).map_err(|(l, m)| error(l, m))? {
        let t = text.trim();
        if let Some(header) = t.strip_prefix('[') {
            let Some((name, rest)) = header.split_once(']') else {
                return Err(error(
                    line,
                    format!("section header {t:?} has no closing ']'"),
                ));
            };
            if !rest.trim().is_empty() {
                return Err(error(
                    line,
                    format!("text after the section header: {:?}", rest.trim()),
                ));
            }
            let name = name.trim();
            section = if name.eq_ignore_ascii_case("general") {
                String::new()
            } else {
                name.to_string()
            };
            continue;
        }
        let Some(eq) = find_unquoted(t, '=') else {
            return Err(error(
                line,
                format!("expected key=value, [section] or a comment, found {t:?}"),
            ));
        };
        let key = t[..eq].trim();
        if key.is_empty() {
            return Err(error(line, format!("no key before '=' in {t:?}")));
        }
        let raw = t[eq + 1..].trim();
        let value = parse_value(raw).map_err(|m| error(line, format!("{key}: {m}")))?;
        entries.push(Entry {
            section: section.clone(),
            key: key.to_string(),
            value,
            raw: raw.to_string(),
            line,
        });
    }
    Ok(IniFile {
        path: path.to_path_buf(),
        entries,
    })
}

/// Joins the physical lines into logical ones, with the number of each one's first line: comment
/// lines and blank lines dropped, `;` comments cut off, `\` line ends joined (the backslash and
/// the line break both gone), and line breaks inside quotes kept. Other escapes are left for
/// [`parse_value`].
fn logical_lines(text: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    let physical: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < physical.len() {
        let start = i + 1;
        let first = physical[i].trim_start();
        if first.is_empty() || first.starts_with('#') || first.starts_with(';') {
            i += 1;
            continue;
        }
        let mut logical = String::new();
        let mut in_quotes = false;
        loop {
            let mut chars = physical[i].chars();
            let mut joined = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(next) => {
                            logical.push('\\');
                            logical.push(next);
                        }
                        None => joined = true,
                    },
                    '"' => {
                        in_quotes = !in_quotes;
                        logical.push(c);
                    }
                    ';' if !in_quotes => break,
                    c => logical.push(c),
                }
            }
            i += 1;
            if !(joined || in_quotes) {
                break;
            }
            if i == physical.len() {
                if in_quotes {
                    return Err((start, "a double quote is never closed".into()));
                }
                break;
            }
            if in_quotes && !joined {
                logical.push('\n');
            }
        }
        out.push((start, logical));
    }
    Ok(out)
}

/// The byte offset of the first `c` outside double quotes.
fn find_unquoted(text: &str, c: char) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, ch) in text.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => in_quotes = !in_quotes,
            _ if ch == c && !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

/// Reads a value as Qt's `iniUnescapedStringList` does: leading spaces skipped, quotes removed,
/// escapes replaced, unquoted commas splitting a list, trailing spaces of unquoted items dropped.
fn parse_value(raw: &str) -> Result<Value, String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut is_list = false;
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = raw.chars().peekable();
    skip_spaces(&mut chars);
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(e) = chars.next() else { break };
                current.push(escape(e, &mut chars)?);
            }
            '"' => {
                quoted = true;
                in_quotes = !in_quotes;
                if !in_quotes {
                    skip_spaces(&mut chars);
                }
            }
            ',' if !in_quotes => {
                if !quoted {
                    chop_trailing_spaces(&mut current);
                }
                is_list = true;
                items.push(std::mem::take(&mut current));
                quoted = false;
                skip_spaces(&mut chars);
            }
            c => current.push(c),
        }
    }
    if in_quotes {
        return Err("a double quote is never closed".into());
    }
    if !quoted {
        chop_trailing_spaces(&mut current);
    }
    Ok(if is_list {
        items.push(current);
        Value::List(items)
    } else {
        Value::One(current)
    })
}

/// The character an escape stands for; `e` is the character after the backslash.
fn escape(e: char, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let simple = match e {
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'f' => Some('\x0c'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\x0b'),
        '"' | '?' | '\'' | '\\' => Some(e),
        _ => None,
    };
    if let Some(c) = simple {
        return Ok(c);
    }
    let (radix, mut digits) = match e {
        'x' => (16, String::new()),
        '0'..='7' => (8, e.to_string()),
        _ => return Err(format!("unknown escape \\{e}")),
    };
    while let Some(&d) = chars.peek() {
        if !d.is_digit(radix) {
            break;
        }
        digits.push(d);
        chars.next();
    }
    let prefix = if radix == 16 { "x" } else { "" };
    u32::from_str_radix(&digits, radix)
        .ok()
        .and_then(char::from_u32)
        .ok_or_else(|| format!("escape \\{prefix}{digits} is not a character"))
}

fn skip_spaces(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
}

fn chop_trailing_spaces(s: &mut String) {
    let kept = s.trim_end_matches([' ', '\t']).len();
    s.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Value {
        Value::One(s.to_string())
    }

    fn list(items: &[&str]) -> Value {
        Value::List(items.iter().map(|s| s.to_string()).collect())
    }

    fn entries(text: &str) -> Vec<(String, String, Value, usize)> {
        parse(text, Path::new("p.conf"))
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.section, e.key, e.value, e.line))
            .collect()
    }

    #[test]
    fn values_are_read_as_qt_reads_them() {
        // (the line after `[s]`, the key and value it gives)
        let cases = [
            ("k=v", "k", one("v")),
            ("  k  =  v w  ", "k", one("v w")),
            ("k=", "k", one("")),
            ("k=7999,8000", "k", list(&["7999", "8000"])),
            ("k= a , b ,", "k", list(&["a", "b", ""])),
            ("k=\"a, b\"", "k", one("a, b")),
            ("k=\" padded \"", "k", one(" padded ")),
            ("k=\"a\",\"b;c\"", "k", list(&["a", "b;c"])),
            ("k=v ; comment", "k", one("v")),
            ("k=a#b", "k", one("a#b")),
            ("k=a=b", "k", one("a=b")),
            ("k=tab\\there\\n", "k", one("tab\there\n")),
            ("k=\\\"q\\\" \\\\ \\x41\\101", "k", one("\"q\" \\ AA")),
            (
                "k={libdir}/internal.conf",
                "k",
                one("{libdir}/internal.conf"),
            ),
            (
                "k=ipc://{rundir}/{ipc_prefix}a,ipc://b",
                "k",
                list(&["ipc://{rundir}/{ipc_prefix}a", "ipc://b"]),
            ),
        ];
        for (line, key, value) in cases {
            let got = entries(&format!("[s]\n{line}\n"));
            assert_eq!(got, vec![("s".into(), key.into(), value, 2)], "{line:?}");
        }
    }

    #[test]
    fn sections_comments_and_continued_lines() {
        let text = "\
# comment
; comment too
top=1
[global]
include={libdir}/internal.conf

  # indented comment with a = sign
[General]
general=2
[runner]
http_port=7999,\\
  8000
ports=\"a
b\"
[global]
after=3
";
        let got = entries(text);
        assert_eq!(
            got,
            vec![
                ("".into(), "top".into(), one("1"), 3),
                (
                    "global".into(),
                    "include".into(),
                    one("{libdir}/internal.conf"),
                    5
                ),
                ("".into(), "general".into(), one("2"), 9),
                (
                    "runner".into(),
                    "http_port".into(),
                    list(&["7999", "8000"]),
                    11
                ),
                ("runner".into(), "ports".into(), one("a\nb"), 13),
                ("global".into(), "after".into(), one("3"), 16),
            ]
        );
        // CRLF line ends read the same.
        let crlf = entries("[a]\r\nk=v\r\n\r\nj=w\r\n");
        assert_eq!(
            crlf,
            vec![
                ("a".into(), "k".into(), one("v"), 2),
                ("a".into(), "j".into(), one("w"), 4)
            ]
        );
    }

    #[test]
    fn what_cannot_be_read_is_an_error_at_its_line() {
        let cases = [
            ("[runner]\nhttp_port 7999\n", "p.conf:2: expected key=value"),
            (
                "[runner\nk=v\n",
                "p.conf:1: section header \"[runner\" has no closing ']'",
            ),
            ("[a] x\n", "p.conf:1: text after the section header: \"x\""),
            ("[a]\n=v\n", "p.conf:2: no key before '='"),
            (
                "[a]\n\nk=\"open\n",
                "p.conf:3: a double quote is never closed",
            ),
            ("[a]\nk=\\q\n", "p.conf:2: k: unknown escape \\q"),
            (
                "[a]\nk=\\xffffffff\n",
                "p.conf:2: k: escape \\xffffffff is not a character",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text, Path::new("p.conf")).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn one_and_items() {
        assert_eq!(one("a").one(), Ok("a"));
        assert!(list(&["a", "b"])
            .one()
            .unwrap_err()
            .contains("double quotes"));
        assert_eq!(list(&["a", "", "b"]).items(), vec!["a", "b"]);
        assert!(one("").items().is_empty());
    }
}
