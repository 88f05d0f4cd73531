//! The types of the `wirecheck` worker binary, shared with the tests.
//!
//! Workers: `job` (`Job` → `u64`, whose `Job` has a field an older copy lacks), `picky`
//! (`Picky` → `Picky`, with values that do not encode or decode), `carrier` (channels inside
//! items that fail), `json` (`Json<Doc>` → `Json<Doc>`) and `plain-doc` (`Doc` → `Doc`, without
//! the wrapper).

use bincrew::IpcSender;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A job as this worker's build defines it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: u64,
    /// Its text.
    pub text: String,
    /// A field an older copy of the type does not have.
    pub level: u32,
}

/// A number whose serde code refuses some values: 13 does not encode, 66 panics as it encodes,
/// 7 does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picky(pub u32);

impl Serialize for Picky {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom("13 is unlucky"));
        }
        if self.0 == 66 {
            panic!("66 is cursed");
        }
        serializer.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(deserializer)?;
        if n == 7 {
            return Err(serde::de::Error::custom("7 is refused"));
        }
        Ok(Picky(n))
    }
}

/// What the `picky` worker answers to `Picky(n)`: `Picky(n - 1000)` from 1000 up, else
/// `Picky(n)`.
pub fn picky_answer(n: u32) -> Picky {
    Picky(n.checked_sub(1000).unwrap_or(n))
}

/// A value and a channel, the value first: when the value does not decode, the channel is
/// never taken by the decoder.
#[derive(Debug, Serialize, Deserialize)]
pub struct Carrier {
    /// The value.
    pub value: Picky,
    /// The channel.
    pub channel: IpcSender<u32>,
}

/// Requests of the `carrier` worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum CarrierRequest {
    /// Take a carrier (answered with `Taken`).
    Take(Carrier),
    /// Answer with a carrier of this value whose channel the worker watches.
    Give(u32),
    /// How many of the channels it gave were closed by the app.
    Closed,
}

/// Responses of the `carrier` worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum CarrierResponse {
    /// The carrier arrived.
    Taken,
    /// A carrier.
    Carrier(Carrier),
    /// How many given channels were closed.
    Closed(u32),
}

/// A document using serde features a format without field names cannot carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// Any JSON.
    pub value: serde_json::Value,
    /// An untagged enum.
    pub loose: Loose,
    /// An internally tagged enum.
    pub tagged: Tagged,
    /// Flattened fields.
    #[serde(flatten)]
    pub extra: Extra,
    /// Left out when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maybe: Option<u32>,
}

/// Untagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Loose {
    /// A number.
    Number(u64),
    /// A text.
    Text(String),
}

/// Internally tagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Tagged {
    /// A circle.
    Circle {
        /// Its radius.
        r: f64,
    },
    /// A square.
    Square {
        /// Its side.
        side: f64,
    },
}

/// Fields flattened into `Doc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extra {
    /// A note.
    pub note: String,
}
