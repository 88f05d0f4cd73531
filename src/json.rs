//! [`Json`]: any serde type as self-describing data.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The name a `Json` gives serde, which the handshake's type tracer recognises.
pub(crate) const NAME: &str = "bincrew::Json";

/// Carries any `Serialize + DeserializeOwned` value as JSON, so that types that need a
/// self-describing format cross the process boundary: `serde_json::Value`, untagged and
/// internally tagged enums, `#[serde(flatten)]`, `skip_serializing_if`.
///
/// bincrew's own encoding (postcard) writes values without field names or type tags, which is
/// compact and fast but cannot carry those serde features. Wrap such a type in `Json` as a whole
/// request or response (`Worker<Json<Doc>, Json<Doc>>`), or as a field of one. It costs a JSON
/// encoding and decoding per message, and a value that does not fit the type fails its own
/// request only ([`RunError::RequestDecode`](crate::RunError::RequestDecode) and the like, with
/// `serde_json`'s message).
///
/// The handshake compares a `Json` as JSON data: two sides agree on it whatever `T` is, and each
/// message is checked when it is decoded. A type that holds a `Json` inside other fields is
/// compared by name (see the crate docs, "What the handshake compares").
///
/// Requires the `json` feature (off by default, to keep builds lean: it adds `serde_json`):
/// `bincrew = { version = "0.1", features = ["json"] }`.
///
/// ```no_run
/// use bincrew::{Json, RequestArgs, Worker};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(untagged)]
/// enum Query {
///     ById(u64),
///     ByName(String),
/// }
///
/// async fn lookup(args: RequestArgs<Json<Query>>) -> Json<serde_json::Value> {
///     Json(match args.request.0 {
///         Query::ById(id) => serde_json::json!({ "id": id }),
///         Query::ByName(name) => serde_json::json!({ "name": name }),
///     })
/// }
///
/// fn main() {
///     bincrew::init!();
///     bincrew::run_worker("lookup", lookup);
///
///     let worker = Worker::<Json<Query>, Json<serde_json::Value>>::start_blocking("lookup")
///         .expect("worker");
///     let Json(found) = worker.run_blocking(Json(Query::ById(7))).expect("answered");
///     assert_eq!(found["id"], 7);
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> From<T> for Json<T> {
    fn from(value: T) -> Self {
        Json(value)
    }
}

/// The JSON text, as bytes.
struct Text<'a>(&'a [u8]);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_vec(&self.0)
            .map_err(|e| crate::wire::codec::custom_ser(format!("as JSON: {e}")))?;
        serializer.serialize_newtype_struct(NAME, &Text(&text))
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Outer<T>(PhantomData<T>);
        struct Inner<T>(PhantomData<T>);

        impl<'de, T: DeserializeOwned> Visitor<'de> for Inner<T> {
            type Value = Json<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON text")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Json<T>, E> {
                serde_json::from_slice(v)
                    .map(Json)
                    .map_err(|e| crate::wire::codec::custom_de(format!("as JSON: {e}")))
            }
        }

        impl<'de, T: DeserializeOwned> Visitor<'de> for Outer<T> {
            type Value = Json<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bincrew::Json")
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Json<T>, D::Error> {
                deserializer.deserialize_bytes(Inner(PhantomData))
            }
        }

        deserializer.deserialize_newtype_struct(NAME, Outer(PhantomData))
    }
}
