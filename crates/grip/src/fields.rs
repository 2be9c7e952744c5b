//! Typed access to the fields of a JSON object, with Pushpin-style messages.
//!
//! Every GRIP JSON document (grip-instruct bodies, publish items, WebSocket
//! control messages) is read through [`Obj`], so a wrong type or a missing key
//! is reported the same way everywhere: `<parent> contains '<key>' with wrong
//! type`, `<parent> does not contain '<key>'`. A JSON `null` counts as absent,
//! as it does in Pushpin. Errors are plain strings; each public module wraps
//! them in its own error enum.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::instruct::MAX_TIMEOUT_SECS;

/// Standard alphabet, padding optional: publishers differ on padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes base64 the way the `*-bin` fields need it: ASCII whitespace (line
/// breaks from MIME-style encoders) is skipped and padding is optional.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if text.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        LENIENT_BASE64.decode(compact)
    } else {
        LENIENT_BASE64.decode(text)
    }
}

/// A JSON object together with the name used for it in error messages.
#[derive(Clone, Copy)]
pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    name: &'a str,
}

impl<'a> Obj<'a> {
    /// Wraps `value`, or fails with `<name> is not an object`.
    pub(crate) fn new(value: &'a Value, name: &'a str) -> Result<Self, String> {
        match value {
            Value::Object(map) => Ok(Obj { map, name }),
            _ => Err(format!("{name} is not an object")),
        }
    }

    /// The name this object has in error messages.
    pub(crate) fn name(&self) -> &'a str {
        self.name
    }

    /// The raw value of `key`, `None` when absent or `null`.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// The value of `key` as given, `null` included.
    pub(crate) fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// Whether `key` is present with a non-null value.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn wrong_type(&self, key: &str) -> String {
        format!("{} contains '{key}' with wrong type", self.name)
    }

    pub(crate) fn invalid_value(&self, key: &str, shown: impl std::fmt::Display) -> String {
        format!("{} contains '{key}' with invalid value {shown}", self.name)
    }

    fn missing(&self, key: &str) -> String {
        format!("{} does not contain '{key}'", self.name)
    }

    pub(crate) fn str_opt(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong_type(key)),
        }
    }

    pub(crate) fn str_req(&self, key: &str) -> Result<&'a str, String> {
        if !self.map.contains_key(key) {
            return Err(self.missing(key));
        }
        self.str_opt(key)?.ok_or_else(|| self.wrong_type(key))
    }

    pub(crate) fn bool_opt(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong_type(key)),
        }
    }

    /// An integer field. Floats with no fractional part are accepted, since
    /// some JSON encoders write every number as a float.
    pub(crate) fn int_opt(&self, key: &str) -> Result<Option<i64>, String> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let Value::Number(n) = value else {
            return Err(self.wrong_type(key));
        };
        if let Some(i) = n.as_i64() {
            return Ok(Some(i));
        }
        if n.is_u64() {
            return Err(self.invalid_value(key, n));
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
            _ => Err(self.wrong_type(key)),
        }
    }

    /// A non-negative integer field, e.g. a timeout in seconds.
    pub(crate) fn uint_opt(&self, key: &str) -> Result<Option<u64>, String> {
        match self.int_opt(key)? {
            None => Ok(None),
            Some(i) => u64::try_from(i)
                .map(Some)
                .map_err(|_| self.invalid_value(key, i)),
        }
    }

    /// A timeout or interval in whole seconds, from 0 to [`MAX_TIMEOUT_SECS`].
    pub(crate) fn seconds_opt(&self, key: &str) -> Result<Option<u64>, String> {
        match self.uint_opt(key)? {
            Some(secs) if secs > MAX_TIMEOUT_SECS => Err(format!(
                "{}, more than {MAX_TIMEOUT_SECS} seconds",
                self.invalid_value(key, secs)
            )),
            secs => Ok(secs),
        }
    }

    pub(crate) fn list_opt(&self, key: &str) -> Result<Option<&'a Vec<Value>>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(list)) => Ok(Some(list)),
            Some(_) => Err(self.wrong_type(key)),
        }
    }

    pub(crate) fn obj_opt(&self, key: &str, name: &'a str) -> Result<Option<Obj<'a>>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(value @ Value::Object(_)) => Obj::new(value, name).map(Some),
            Some(_) => Err(self.wrong_type(key)),
        }
    }

    /// A list of strings; `element_error` is the message for a non-string.
    pub(crate) fn string_list_opt(
        &self,
        key: &str,
        element_error: &str,
    ) -> Result<Option<Vec<String>>, String> {
        let Some(list) = self.list_opt(key)? else {
            return Ok(None);
        };
        list.iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(element_error.to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Binary content given as `bin_key` (base64, preferred when both are
    /// present, as in Pushpin) or as the UTF-8 text of `text_key`.
    pub(crate) fn content_opt(
        &self,
        text_key: &str,
        bin_key: &str,
    ) -> Result<Option<Bytes>, String> {
        if let Some(encoded) = self.str_opt(bin_key)? {
            return decode_base64(encoded)
                .map(|raw| Some(Bytes::from(raw)))
                .map_err(|e| {
                    format!(
                        "{} contains '{bin_key}' with invalid base64: {e}",
                        self.name
                    )
                });
        }
        Ok(self
            .str_opt(text_key)?
            .map(|text| Bytes::copy_from_slice(text.as_bytes())))
    }

    /// A string-to-string map such as `meta`; a non-string value is reported
    /// as `'<key>' contains '<entry>' with wrong type`.
    pub(crate) fn string_map_opt(
        &self,
        key: &str,
    ) -> Result<Option<Vec<(String, String)>>, String> {
        let Some(obj) = self.obj_opt(key, key)? else {
            return Ok(None);
        };
        obj.map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(format!("'{key}' contains '{k}' with wrong type")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Response headers given either as an object or as a list of
    /// `[name, value]` pairs (both forms are in use by GRIP libraries).
    pub(crate) fn headers_opt(&self, key: &str) -> Result<Option<Vec<(String, String)>>, String> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match value {
            Value::Object(map) => map
                .iter()
                .map(|(name, v)| match v {
                    Value::String(s) => Ok((name.clone(), s.clone())),
                    _ => Err(format!("headers contains '{name}' with wrong type")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Value::Array(list) => list
                .iter()
                .map(header_pair)
                .collect::<Result<_, _>>()
                .map(Some),
            _ => Err(self.wrong_type(key)),
        }
    }
}

fn header_pair(value: &Value) -> Result<(String, String), String> {
    let Value::Array(pair) = value else {
        return Err("headers contains element with wrong type".to_string());
    };
    let [name, val] = pair.as_slice() else {
        return Err(format!(
            "headers contains list with wrong number of elements ({}, expected 2)",
            pair.len()
        ));
    };
    let Value::String(name) = name else {
        return Err("header contains name element with wrong type".to_string());
    };
    let Value::String(val) = val else {
        return Err(format!(
            "header '{name}' contains value element with wrong type"
        ));
    };
    Ok((name.clone(), val.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_is_lenient_about_padding_and_whitespace() {
        let cases: &[(&str, &[u8])] = &[
            ("aGk=", b"hi"),
            ("aGk", b"hi"),
            ("aG\r\nk=", b"hi"),
            ("", b""),
        ];
        for (input, want) in cases {
            assert_eq!(decode_base64(input).unwrap(), *want, "input {input:?}");
        }
        assert!(decode_base64("a*b").is_err());
    }

    #[test]
    fn field_errors_name_parent_and_key() {
        let v = json!({"s": 1, "n": "x", "l": {}, "h": 5, "neg": -3, "f": 2.0, "nul": null});
        let o = Obj::new(&v, "thing").unwrap();
        assert_eq!(
            o.str_opt("s").unwrap_err(),
            "thing contains 's' with wrong type"
        );
        assert_eq!(o.str_req("zz").unwrap_err(), "thing does not contain 'zz'");
        assert_eq!(
            o.int_opt("n").unwrap_err(),
            "thing contains 'n' with wrong type"
        );
        assert_eq!(
            o.list_opt("l").unwrap_err(),
            "thing contains 'l' with wrong type"
        );
        assert_eq!(
            o.headers_opt("h").unwrap_err(),
            "thing contains 'h' with wrong type"
        );
        assert_eq!(
            o.uint_opt("neg").unwrap_err(),
            "thing contains 'neg' with invalid value -3"
        );
        assert_eq!(o.int_opt("f").unwrap(), Some(2));
        assert_eq!(o.str_opt("nul").unwrap(), None);
        assert_eq!(
            Obj::new(&json!([]), "thing").err().unwrap(),
            "thing is not an object"
        );
    }

    #[test]
    fn seconds_stop_at_a_32_bit_int() {
        let cases: &[(Value, Result<Option<u64>, &str>)] = &[
            (json!({}), Ok(None)),
            (json!({"t": 0}), Ok(Some(0))),
            (json!({"t": 2147483647}), Ok(Some(2147483647))),
            (json!({"t": 30.0}), Ok(Some(30))),
            (
                json!({"t": 2147483648_u64}),
                Err("thing contains 't' with invalid value 2147483648, more than 2147483647 seconds"),
            ),
            (
                json!({"t": i64::MAX}),
                Err("thing contains 't' with invalid value 9223372036854775807, more than 2147483647 seconds"),
            ),
            (
                json!({"t": u64::MAX}),
                Err("thing contains 't' with invalid value 18446744073709551615"),
            ),
            (json!({"t": -1}), Err("thing contains 't' with invalid value -1")),
        ];
        for (doc, want) in cases {
            let got = Obj::new(doc, "thing").unwrap().seconds_opt("t");
            assert_eq!(got, want.map_err(str::to_string), "{doc}");
        }
    }

    #[test]
    fn headers_accept_object_and_pairs() {
        let v = json!({"a": {"X": "1"}, "b": [["X", "1"], ["Y", "2"]]});
        let o = Obj::new(&v, "r").unwrap();
        assert_eq!(
            o.headers_opt("a").unwrap().unwrap(),
            vec![("X".into(), "1".into())]
        );
        assert_eq!(o.headers_opt("b").unwrap().unwrap().len(), 2);
        let bad = [
            (
                json!({"h": [["X"]]}),
                "headers contains list with wrong number of elements (1, expected 2)",
            ),
            (
                json!({"h": ["X"]}),
                "headers contains element with wrong type",
            ),
            (
                json!({"h": [[1, "v"]]}),
                "header contains name element with wrong type",
            ),
            (
                json!({"h": [["X", 1]]}),
                "header 'X' contains value element with wrong type",
            ),
            (
                json!({"h": {"X": 1}}),
                "headers contains 'X' with wrong type",
            ),
        ];
        for (value, want) in bad {
            let o = Obj::new(&value, "r").unwrap();
            assert_eq!(o.headers_opt("h").unwrap_err(), want);
        }
    }
}
