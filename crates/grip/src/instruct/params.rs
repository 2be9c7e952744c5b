//! The parameter syntax shared by the `Grip-*` headers.
//!
//! A header value is a comma-separated list of items; an item is a head
//! followed by `;`-separated parameters, `name[=value]`. A value may be a
//! quoted string in which `\` escapes the next character, so `,` and `;` can
//! appear inside quotes. Parameter names compare case-insensitively; values and
//! heads are kept exactly (trimmed of surrounding spaces), as Pushpin does.
//!
//! Heads come in three shapes: a plain token (a channel name, keep-alive data),
//! a `<link>` that may itself contain `,` and `;`, or a parameter
//! (`Grip-Set-Meta: user="alice"`).

/// One `name[=value]` parameter. A missing value is the empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Param {
    pub(super) name: String,
    pub(super) value: String,
}

/// One list item: its head and its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Item {
    pub(super) head: String,
    pub(super) params: Vec<Param>,
}

impl Item {
    /// The value of the first parameter called `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str())
    }

    /// The values of every parameter called `name`.
    pub(super) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter(move |p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str())
    }
}

/// How an item's head is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Head {
    /// Raw text up to the first `;`.
    Token,
    /// `<url>` (anything up to `>`), or raw text when it does not start with `<`.
    Link,
    /// The head is itself a `name=value` parameter; `Item::head` stays empty.
    Param,
}

/// Parses a comma-separated list of items. Empty items are skipped.
pub(super) fn parse_list(value: &str, head: Head) -> Result<Vec<Item>, String> {
    let mut items = parse_elements(value, head)?;
    items.retain(|item| !item.head.is_empty() || !item.params.is_empty());
    Ok(items)
}

/// Parses a comma-separated list of items, keeping empty ones: `a,,b` has three items, the
/// second empty, and an empty value is one empty item. As in Pushpin's header splitting, one
/// comma at the end closes the list without adding an item (`a,` is just `a`).
pub(super) fn parse_elements(value: &str, head: Head) -> Result<Vec<Item>, String> {
    let mut cursor = Cursor {
        text: value.as_bytes(),
        pos: 0,
        list: true,
    };
    let mut items = Vec::new();
    loop {
        items.push(cursor.item(head)?);
        // An item ends at a comma or at the end of the value.
        if cursor.peek().is_none() {
            return Ok(items);
        }
        cursor.pos += 1;
        cursor.skip_spaces();
        if cursor.peek().is_none() {
            return Ok(items);
        }
    }
}

/// Parses a single item in which commas are ordinary characters
/// (`Grip-Keep-Alive` data may contain them).
pub(super) fn parse_single(value: &str) -> Result<Item, String> {
    let mut cursor = Cursor {
        text: value.as_bytes(),
        pos: 0,
        list: false,
    };
    cursor.item(Head::Token)
}

struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
    list: bool,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn is_stop(&self, byte: u8, stops: &[u8]) -> bool {
        stops.contains(&byte) || (self.list && byte == b',')
    }

    fn at_item_end(&self) -> bool {
        match self.peek() {
            None => true,
            Some(b) => b == b';' || (self.list && b == b','),
        }
    }

    /// Raw text up to (not including) a stop byte, trimmed.
    fn take_until(&mut self, stops: &[u8]) -> String {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if self.is_stop(b, stops) {
                break;
            }
            self.pos += 1;
        }
        text_of(&self.text[start..self.pos]).trim().to_string()
    }

    fn item(&mut self, head: Head) -> Result<Item, String> {
        self.skip_spaces();
        let mut params = Vec::new();
        let head_text = match head {
            Head::Token => self.take_until(b";"),
            Head::Link if self.peek() == Some(b'<') => self.link()?,
            Head::Link => self.take_until(b";"),
            Head::Param => {
                params.extend(self.param()?);
                String::new()
            }
        };
        while self.peek() == Some(b';') {
            self.pos += 1;
            params.extend(self.param()?);
        }
        Ok(Item {
            head: head_text,
            params,
        })
    }

    fn link(&mut self) -> Result<String, String> {
        let start = self.pos;
        let Some(len) = self.text[start..].iter().position(|&b| b == b'>') else {
            return Err(format!("'<' at byte {start} has no closing '>'"));
        };
        self.pos = start + len + 1;
        let link = text_of(&self.text[start..self.pos]).to_string();
        self.skip_spaces();
        if !self.at_item_end() {
            return Err(format!("unexpected text after '>' at byte {}", self.pos));
        }
        Ok(link)
    }

    fn param(&mut self) -> Result<Option<Param>, String> {
        self.skip_spaces();
        let name_at = self.pos;
        let name = self.take_until(b"=;");
        let mut value = String::new();
        if self.peek() == Some(b'=') {
            self.pos += 1;
            self.skip_spaces();
            if self.peek() == Some(b'"') {
                value = self.quoted()?;
                self.skip_spaces();
                if !self.at_item_end() {
                    return Err(format!(
                        "unexpected text after quoted string at byte {}",
                        self.pos
                    ));
                }
            } else {
                value = self.take_until(b";");
            }
        }
        if name.is_empty() {
            if value.is_empty() {
                return Ok(None);
            }
            return Err(format!(
                "parameter at byte {name_at} has a value but no name"
            ));
        }
        Ok(Some(Param { name, value }))
    }

    fn quoted(&mut self) -> Result<String, String> {
        let start = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(format!("quoted string at byte {start} is not terminated")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(escaped) = self.peek() else {
                        return Err(format!("quoted string at byte {start} is not terminated"));
                    };
                    out.push(escaped);
                    self.pos += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }
}

/// The input is a `&str` and every cut is at an ASCII byte, so slices stay UTF-8.
fn text_of(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(head: &str, params: &[(&str, &str)]) -> Item {
        Item {
            head: head.to_string(),
            params: params
                .iter()
                .map(|(n, v)| Param {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn lists_of_tokens() {
        let cases: Vec<(&str, Vec<Item>)> = vec![
            ("a", vec![item("a", &[])]),
            ("a, b", vec![item("a", &[]), item("b", &[])]),
            (
                "a; prev-id=3, b",
                vec![item("a", &[("prev-id", "3")]), item("b", &[])],
            ),
            (
                "a;filter=x ; filter = y",
                vec![item("a", &[("filter", "x"), ("filter", "y")])],
            ),
            ("a; p=\"x, y; z\"", vec![item("a", &[("p", "x, y; z")])]),
            (
                "a; p=\"q\\\"uote\\\\\"",
                vec![item("a", &[("p", "q\"uote\\")])],
            ),
            ("a; flag; ; p=", vec![item("a", &[("flag", ""), ("p", "")])]),
            ("a; f=a=b", vec![item("a", &[("f", "a=b")])]),
            (" , a,, ,b ,", vec![item("a", &[]), item("b", &[])]),
            (
                "caf\u{e9}; p=\u{fc}",
                vec![item("caf\u{e9}", &[("p", "\u{fc}")])],
            ),
            ("", vec![]),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_list(input, Head::Token).unwrap(),
                want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn elements_keep_empty_items() {
        let cases: Vec<(&str, Vec<Item>)> = vec![
            ("", vec![item("", &[])]),
            ("  ", vec![item("", &[])]),
            ("a", vec![item("a", &[])]),
            ("a,", vec![item("a", &[])]),
            ("a, ", vec![item("a", &[])]),
            ("a,,b", vec![item("a", &[]), item("", &[]), item("b", &[])]),
            (",a", vec![item("", &[]), item("a", &[])]),
            ("a,,", vec![item("a", &[]), item("", &[])]),
            (
                "a; p=\"x,y\", ; q=1",
                vec![item("a", &[("p", "x,y")]), item("", &[("q", "1")])],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_elements(input, Head::Token).unwrap(),
                want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn links_may_contain_separators() {
        let got = parse_list(
            "</a?x=1,2;3>; rel=next; timeout=5, </g>; rel=gone",
            Head::Link,
        );
        assert_eq!(
            got.unwrap(),
            vec![
                item("</a?x=1,2;3>", &[("rel", "next"), ("timeout", "5")]),
                item("</g>", &[("rel", "gone")]),
            ]
        );
    }

    #[test]
    fn heads_as_params() {
        let got = parse_list("user=\"a,b\", id_format=x; y=z, bare", Head::Param).unwrap();
        assert_eq!(
            got,
            vec![
                item("", &[("user", "a,b")]),
                item("", &[("id_format", "x"), ("y", "z")]),
                item("", &[("bare", "")]),
            ]
        );
    }

    #[test]
    fn single_item_keeps_commas() {
        let got = parse_single(":a, b\\n; format=cstring; timeout=20").unwrap();
        assert_eq!(
            got,
            item(":a, b\\n", &[("format", "cstring"), ("timeout", "20")])
        );
        assert_eq!(got.get("FORMAT"), Some("cstring"));
        assert_eq!(got.get("mode"), None);
    }

    #[test]
    fn malformed_values() {
        let cases = [
            (
                "a; p=\"open",
                Head::Token,
                "quoted string at byte 5 is not terminated",
            ),
            (
                "a; p=\"x\\",
                Head::Token,
                "quoted string at byte 5 is not terminated",
            ),
            (
                "a; p=\"x\"junk",
                Head::Token,
                "unexpected text after quoted string at byte 8",
            ),
            (
                "a; =v",
                Head::Token,
                "parameter at byte 3 has a value but no name",
            ),
            ("<http://x", Head::Link, "'<' at byte 0 has no closing '>'"),
            (
                "<x> y; rel=next",
                Head::Link,
                "unexpected text after '>' at byte 4",
            ),
        ];
        for (input, head, want) in cases {
            assert_eq!(
                parse_list(input, head).unwrap_err(),
                want,
                "input {input:?}"
            );
        }
    }
}
