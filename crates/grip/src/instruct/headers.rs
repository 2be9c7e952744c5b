//! The `Grip-*` response headers (reference §2.2).
//!
//! Headers that take one value (`Grip-Hold`, `Grip-Timeout`, `Grip-Status`,
//! `Grip-Keep-Alive`) use the first occurrence; list headers (`Grip-Channel`,
//! `Grip-Set-Meta`, `Grip-Link`, `Grip-Expose-Headers`) read every occurrence
//! and every comma-separated item.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use super::params::{self, Head, Item};
use super::{
    ChannelSpec, HoldMode, InstructError, Instruction, KeepAlive, KeepAliveMode, NextLink,
    StatusOverride, DEFAULT_KEEP_ALIVE_TIMEOUT_SECS, DEFAULT_NEXT_LINK_TIMEOUT_SECS,
    DEFAULT_TIMEOUT_SECS, MAX_FILTERS_PER_CHANNEL, MAX_TIMEOUT_SECS,
};
use crate::channel::check_channel_name;
use crate::fields::decode_base64;

const HOLD: &str = "Grip-Hold";
const CHANNEL: &str = "Grip-Channel";
const TIMEOUT: &str = "Grip-Timeout";
const KEEP_ALIVE: &str = "Grip-Keep-Alive";
const SET_META: &str = "Grip-Set-Meta";
const LINK: &str = "Grip-Link";
const STATUS: &str = "Grip-Status";
const EXPOSE: &str = "Grip-Expose-Headers";

/// Reads every `Grip-*` header into an instruction (before clamping).
pub(super) fn parse(headers: &HeaderMap) -> Result<Instruction, InstructError> {
    let mut out = Instruction {
        hold: hold(headers)?,
        channels: channels(headers)?,
        timeout_secs: timeout(headers)?.unwrap_or(DEFAULT_TIMEOUT_SECS),
        keep_alive: keep_alive(headers)?,
        status: status(headers)?,
        expose_headers: expose_headers(headers)?,
        ..Instruction::default()
    };
    for (key, value) in set_meta(headers)? {
        out.meta.insert(key, value);
    }
    (out.next_link, out.gone_link) = links(headers)?;
    Ok(out)
}

fn text<'a>(header: &'static str, value: &'a HeaderValue) -> Result<&'a str, InstructError> {
    std::str::from_utf8(value.as_bytes())
        .map(str::trim)
        .map_err(|_| InstructError::NotUtf8 { header })
}

fn first<'a>(
    headers: &'a HeaderMap,
    header: &'static str,
) -> Result<Option<&'a str>, InstructError> {
    headers.get(header).map(|v| text(header, v)).transpose()
}

/// Every item of every occurrence of a list header.
fn items(
    headers: &HeaderMap,
    header: &'static str,
    head: Head,
) -> Result<Vec<Item>, InstructError> {
    let mut out = Vec::new();
    for value in headers.get_all(header) {
        let value = text(header, value)?;
        let parsed =
            params::parse_list(value, head).map_err(|reason| InstructError::Malformed {
                header,
                value: value.to_string(),
                reason,
            })?;
        out.extend(parsed);
    }
    Ok(out)
}

/// A whole number of seconds up to [`MAX_TIMEOUT_SECS`]; Pushpin rejects negatives,
/// non-integers and values over a 32-bit int.
fn seconds(value: &str) -> Option<u64> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|s| *s <= MAX_TIMEOUT_SECS)
}

fn hold(headers: &HeaderMap) -> Result<Option<HoldMode>, InstructError> {
    match first(headers, HOLD)? {
        None => Ok(None),
        Some("response") => Ok(Some(HoldMode::Response)),
        Some("stream") => Ok(Some(HoldMode::Stream)),
        Some(other) => Err(InstructError::InvalidHold(other.to_string())),
    }
}

fn channels(headers: &HeaderMap) -> Result<Vec<ChannelSpec>, InstructError> {
    let mut out = Vec::new();
    for value in headers.get_all(CHANNEL) {
        let value = text(CHANNEL, value)?;
        // Empty items are kept: `a,,b` or an empty value names an empty channel.
        let items = params::parse_elements(value, Head::Token).map_err(|reason| {
            InstructError::Malformed {
                header: CHANNEL,
                value: value.to_string(),
                reason,
            }
        })?;
        for item in items {
            if item.head.is_empty() {
                return Err(InstructError::EmptyChannel(value.to_string()));
            }
            check_channel_name(&item.head).map_err(|error| InstructError::InvalidChannel {
                place: CHANNEL,
                error,
            })?;
            let filters: Vec<String> = item.all("filter").map(str::to_string).collect();
            if filters.len() > MAX_FILTERS_PER_CHANNEL {
                return Err(InstructError::TooManyFilters {
                    channel: item.head,
                    count: filters.len(),
                });
            }
            out.push(ChannelSpec {
                prev_id: item.get("prev-id").map(str::to_string),
                name: item.head,
                filters,
            });
        }
    }
    Ok(out)
}

fn timeout(headers: &HeaderMap) -> Result<Option<u64>, InstructError> {
    first(headers, TIMEOUT)?
        .map(|v| seconds(v).ok_or_else(|| InstructError::InvalidTimeout(v.to_string())))
        .transpose()
}

fn keep_alive(headers: &HeaderMap) -> Result<Option<KeepAlive>, InstructError> {
    let Some(value) = first(headers, KEEP_ALIVE)? else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(None);
    }
    let item = params::parse_single(value).map_err(|reason| InstructError::Malformed {
        header: KEEP_ALIVE,
        value: value.to_string(),
        reason,
    })?;
    if item.head.is_empty() {
        return Err(InstructError::EmptyKeepAlive);
    }
    let mode = match item.get("mode") {
        None | Some("") | Some("idle") => KeepAliveMode::Idle,
        Some("interval") => KeepAliveMode::Interval,
        Some(other) => return Err(InstructError::InvalidKeepAliveMode(other.to_string())),
    };
    let timeout_secs = match item.get("timeout") {
        None => DEFAULT_KEEP_ALIVE_TIMEOUT_SECS,
        Some(t) => {
            seconds(t).ok_or_else(|| InstructError::InvalidKeepAliveTimeout(t.to_string()))?
        }
    };
    let data = &item.head;
    let content = match item.get("format") {
        None | Some("") | Some("raw") => Bytes::copy_from_slice(data.as_bytes()),
        Some("cstring") => unescape_cstring(data)
            .map(Bytes::from)
            .map_err(|reason| invalid_data(data, "cstring", reason))?,
        Some("base64") => decode_base64(data)
            .map(Bytes::from)
            .map_err(|e| invalid_data(data, "base64", e.to_string()))?,
        Some(other) => return Err(InstructError::InvalidKeepAliveFormat(other.to_string())),
    };
    if content.is_empty() {
        return Err(InstructError::EmptyKeepAlive);
    }
    Ok(Some(KeepAlive {
        content,
        timeout_secs,
        mode,
    }))
}

fn invalid_data(data: &str, format: &'static str, reason: String) -> InstructError {
    InstructError::InvalidKeepAliveData {
        data: data.to_string(),
        format,
        reason,
    }
}

/// C-style escapes: `\\`, `\r`, `\n`, `\t` and `\xHH`. Pushpin silently drops
/// unknown escapes; here they are an error so a typo is visible.
fn unescape_cstring(data: &str) -> Result<Vec<u8>, String> {
    let bytes = data.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let Some(&escape) = bytes.get(i + 1) else {
            return Err(format!("lone '\\' at byte {i}"));
        };
        match escape {
            b'\\' => out.push(b'\\'),
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'x' => {
                let hex = bytes.get(i + 2..i + 4).unwrap_or_default();
                let value = std::str::from_utf8(hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("'\\x' at byte {i} needs two hex digits"))?;
                out.push(value);
                i += 2;
            }
            other => {
                let shown = String::from_utf8_lossy(&bytes[i + 1..]);
                let shown = shown.chars().next().unwrap_or(other as char);
                return Err(format!("unknown escape '\\{shown}' at byte {i}"));
            }
        }
        i += 2;
    }
    Ok(out)
}

fn set_meta(headers: &HeaderMap) -> Result<Vec<(String, String)>, InstructError> {
    if !headers.contains_key(SET_META) {
        return Ok(Vec::new());
    }
    let pairs: Vec<(String, String)> = items(headers, SET_META, Head::Param)?
        .into_iter()
        .flat_map(|item| item.params)
        .map(|p| (p.name, p.value))
        .collect();
    if pairs.is_empty() {
        return Err(InstructError::EmptySetMeta);
    }
    Ok(pairs)
}

fn links(headers: &HeaderMap) -> Result<(Option<NextLink>, Option<String>), InstructError> {
    let mut next = None;
    let mut gone = None;
    for item in items(headers, LINK, Head::Link)? {
        // As in Pushpin, a bare `<url>` with no parameters is ignored.
        if item.params.is_empty() {
            continue;
        }
        let uri = item
            .head
            .strip_prefix('<')
            .and_then(|rest| rest.strip_suffix('>'))
            .filter(|uri| !uri.trim().is_empty())
            .ok_or_else(|| InstructError::InvalidLink(item.head.clone()))?
            .trim()
            .to_string();
        match item.get("rel") {
            Some("next") => {
                let timeout_secs = match item.get("timeout") {
                    None => DEFAULT_NEXT_LINK_TIMEOUT_SECS,
                    Some(t) => seconds(t)
                        .ok_or_else(|| InstructError::InvalidLinkTimeout(t.to_string()))?,
                };
                next = Some(NextLink { uri, timeout_secs });
            }
            Some("gone") => gone = Some(uri),
            _ => {}
        }
    }
    Ok((next, gone))
}

fn status(headers: &HeaderMap) -> Result<Option<StatusOverride>, InstructError> {
    let Some(value) = first(headers, STATUS)? else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(None);
    }
    let (code, reason) = value.split_once(' ').unwrap_or((value, ""));
    let code = code
        .parse::<u16>()
        .ok()
        .filter(|c| *c <= 999 && code.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| InstructError::InvalidStatus(value.to_string()))?;
    let reason = reason.trim();
    Ok(Some(StatusOverride {
        code,
        reason: (!reason.is_empty()).then(|| reason.to_string()),
    }))
}

fn expose_headers(headers: &HeaderMap) -> Result<Option<Vec<String>>, InstructError> {
    let names: Vec<String> = items(headers, EXPOSE, Head::Token)?
        .into_iter()
        .map(|item| item.head)
        .filter(|name| !name.is_empty())
        .collect();
    Ok((!names.is_empty()).then_some(names))
}

#[cfg(test)]
mod tests;
