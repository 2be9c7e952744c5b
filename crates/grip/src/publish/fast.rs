//! A typed parse of the publish bodies GRIP libraries send most: items with `channel`, `id`,
//! `prev-id` and `formats` holding `http-stream` `content`, `ws-message` `content` or
//! `http-response` `body`, and nothing else. It reads straight into [`PublishItem`], without
//! the `serde_json::Value` tree the general parser walks, which is most of a small publish's
//! parsing cost.
//!
//! It only ever accepts: any body it does not fully understand (another field, another format,
//! a `null` where a string belongs, a duplicate key, an invalid channel name) gives `None`, and
//! the general parser, which knows every field and words every error as Pushpin does, reads the
//! body instead. So for every body the two give the same answer; a property test checks that.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{
    Action, Formats, HttpResponseFormat, HttpStreamFormat, MessageType, PublishItem, ResponseBody,
    WsMessageFormat,
};
use crate::channel::check_channel_name;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    #[serde(borrow)]
    items: Vec<Object<Item<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "prev-id")]
    prev_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    formats: Object<ItemFormats<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemFormats<'a> {
    #[serde(borrow, default, rename = "http-stream")]
    http_stream: Option<Object<Content<'a>>>,
    #[serde(borrow, default, rename = "ws-message")]
    ws_message: Option<Object<Content<'a>>>,
    #[serde(borrow, default, rename = "http-response")]
    http_response: Option<Object<ResponseText<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Content<'a> {
    #[serde(borrow)]
    content: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseText<'a> {
    #[serde(borrow)]
    body: Cow<'a, str>,
}

/// A JSON object read as `T`. serde's derived structs also accept a JSON array of their fields
/// in order, which the general parser refuses; this accepts only an object.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMaps<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(OnlyMaps(std::marker::PhantomData))
            .map(Object)
    }
}

/// The items of `body` when it has only the common shapes, else `None`.
pub(super) fn parse(body: &[u8]) -> Option<Vec<PublishItem>> {
    let Object(body): Object<Body<'_>> = serde_json::from_slice(body).ok()?;
    body.items.into_iter().map(|Object(i)| item(i)).collect()
}

fn item(item: Item<'_>) -> Option<PublishItem> {
    check_channel_name(&item.channel).ok()?;
    let Object(f) = item.formats;
    let formats = Formats {
        http_response: f.http_response.map(|Object(r)| HttpResponseFormat {
            action: Action::Send,
            code: 200,
            reason: None,
            headers: Vec::new(),
            body: ResponseBody::Bytes(bytes(r.body)),
            content_filters: None,
        }),
        http_stream: f.http_stream.map(|Object(s)| HttpStreamFormat {
            action: Action::Send,
            content: bytes(s.content),
            content_filters: None,
        }),
        ws_message: f.ws_message.map(|Object(m)| WsMessageFormat {
            action: Action::Send,
            message_type: MessageType::Text,
            content: bytes(m.content),
            close_code: None,
            close_reason: None,
            content_filters: None,
        }),
        json_object: None,
        http_request: None,
    };
    if formats.http_response.is_none()
        && formats.http_stream.is_none()
        && formats.ws_message.is_none()
    {
        return None;
    }
    Some(PublishItem {
        channel: item.channel.into_owned(),
        id: item.id.map(Cow::into_owned),
        prev_id: item.prev_id.map(Cow::into_owned),
        formats,
        meta: Default::default(),
        size: None,
        no_seq: false,
    })
}

/// Text as bytes, without a copy when serde_json already made an owned string (it had escapes).
fn bytes(text: Cow<'_, str>) -> Bytes {
    match text {
        Cow::Borrowed(s) => Bytes::copy_from_slice(s.as_bytes()),
        Cow::Owned(s) => Bytes::from(s.into_bytes()),
    }
}

#[cfg(test)]
mod tests;
