//! What bincrew says when a request or response does not encode or decode: postcard's reason,
//! and a hint when the type uses serde features that a format without field names or type tags
//! cannot carry.

/// A type's name as users write it: bincrew's own types by their public paths.
pub(crate) fn shown(type_name: &str) -> String {
    type_name.replace("bincrew::json::Json", "bincrew::Json")
}

/// The hint for a payload that decoded from fewer bytes than it has.
pub(crate) const LEFT_OVER_HINT: &str = ": the type read fewer fields than were written (a field \
    skipped with `skip_serializing_if` or `skip_deserializing`, or another definition of the \
    type); carry such a type in `bincrew::Json`";

/// postcard's error, with a hint where one helps.
pub(crate) fn describe(error: &postcard::Error) -> String {
    use postcard::Error as E;
    let hint = match error {
        E::WontImplement => {
            ": the type needs a self-describing format (`deserialize_any`: an untagged or \
             internally tagged enum, `flatten`, or a value such as `serde_json::Value`); carry \
             it in `bincrew::Json`"
        }
        E::SerializeSeqLengthUnknown => {
            ": the type writes a sequence or map without saying its length first (`flatten`, \
             or a `Serialize` written by hand); carry it in `bincrew::Json`"
        }
        E::DeserializeUnexpectedEnd
        | E::DeserializeBadVarint
        | E::DeserializeBadBool
        | E::DeserializeBadChar
        | E::DeserializeBadUtf8
        | E::DeserializeBadOption
        | E::DeserializeBadEnum
        | E::DeserializeBadEncoding => {
            ": the bytes do not fit the type (a field skipped with `skip_serializing_if`, or \
             another definition of the type on the other side); carry such a type in \
             `bincrew::Json`"
        }
        E::SerdeSerCustom | E::SerdeDeCustom => {
            " raised by the type's own serde code (its message is lost: the type carries IPC \
             handles or could not be traced)"
        }
        _ => "",
    };
    format!("{error}{hint}")
}

/// Why `value` did not encode: postcard's reason, or the message of a custom error.
pub(crate) fn encode_error<T: serde::Serialize + ?Sized + 'static>(
    error: &postcard::Error,
    value: &T,
) -> String {
    if let postcard::Error::SerdeSerCustom = error {
        // Encoding again is safe only for a type that carries no IPC handles, which a type whose
        // shape was traced cannot.
        let message = take_custom().or_else(|| {
            crate::wire::shape::traceable::<T>()
                .then(|| custom_message_of_encode(value))
                .flatten()
        });
        if let Some(message) = message {
            return message;
        }
    }
    describe(error)
}

/// Why `bytes` did not decode as `T`: postcard's reason, or the message of a custom error.
pub(crate) fn decode_error<T: serde::de::DeserializeOwned + 'static>(
    error: &postcard::Error,
    bytes: &[u8],
) -> String {
    if let postcard::Error::SerdeDeCustom = error {
        let message = take_custom().or_else(|| {
            crate::wire::shape::traceable::<T>()
                .then(|| custom_message_of_decode::<T>(bytes))
                .flatten()
        });
        if let Some(message) = message {
            return message;
        }
    }
    describe(error)
}

thread_local! {
    /// The message of the last custom error a bincrew type raised on this thread: postcard's
    /// errors drop the messages of custom errors, so bincrew keeps its own.
    static LAST_CUSTOM: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A custom encoding error whose message survives postcard.
#[cfg_attr(not(feature = "json"), allow(dead_code))]
pub(crate) fn custom_ser<E: serde::ser::Error>(message: String) -> E {
    let error = E::custom(&message);
    LAST_CUSTOM.with(|m| *m.borrow_mut() = Some(message));
    error
}

/// A custom decoding error whose message survives postcard.
#[cfg_attr(not(feature = "json"), allow(dead_code))]
pub(crate) fn custom_de<E: serde::de::Error>(message: String) -> E {
    let error = E::custom(&message);
    LAST_CUSTOM.with(|m| *m.borrow_mut() = Some(message));
    error
}

/// Forgets a kept message: called before each value is encoded or decoded.
pub(crate) fn clear() {
    LAST_CUSTOM.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.take();
        }
    });
}

/// The kept message of the last custom error, if any.
fn take_custom() -> Option<String> {
    LAST_CUSTOM.with(|m| m.try_borrow_mut().ok().and_then(|mut m| m.take()))
}

/// An error that keeps its message, for [`custom_message_of_encode`] and
/// [`custom_message_of_decode`].
#[derive(Debug)]
struct Kept(String);

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Kept {}

impl serde::ser::Error for Kept {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Kept(msg.to_string())
    }
}

impl serde::de::Error for Kept {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Kept(msg.to_string())
    }
}

/// The message of the custom error `value`'s `Serialize` raises, which postcard dropped:
/// found by encoding it again into nothing, with an error type that keeps messages.
pub(crate) fn custom_message_of_encode<T: serde::Serialize + ?Sized>(value: &T) -> Option<String> {
    value.serialize(Discard).err().map(|e| e.0)
}

/// The message of the custom error decoding `bytes` as `T` raises, which postcard dropped:
/// found by decoding them again with a decoder of the same format whose error type keeps
/// messages. Only ever used once a decoding has failed.
pub(crate) fn custom_message_of_decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Option<String> {
    T::deserialize(&mut Replay { bytes, at: 0 })
        .err()
        .map(|e| e.0)
}

/// A serializer that writes nothing.
struct Discard;

macro_rules! discard_scalars {
    ($($method:ident($ty:ty);)*) => {
        $(fn $method(self, _: $ty) -> Result<(), Kept> { Ok(()) })*
    };
}

impl serde::Serializer for Discard {
    type Ok = ();
    type Error = Kept;
    type SerializeSeq = Discard;
    type SerializeTuple = Discard;
    type SerializeTupleStruct = Discard;
    type SerializeTupleVariant = Discard;
    type SerializeMap = Discard;
    type SerializeStruct = Discard;
    type SerializeStructVariant = Discard;

    discard_scalars! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_i128(i128); serialize_u8(u8); serialize_u16(u16);
        serialize_u32(u32); serialize_u64(u64); serialize_u128(u128); serialize_f32(f32);
        serialize_f64(f64); serialize_char(char); serialize_str(&str); serialize_bytes(&[u8]);
        serialize_unit_struct(&'static str);
    }

    fn serialize_none(self) -> Result<(), Kept> {
        Ok(())
    }
    fn serialize_some<T: serde::Serialize + ?Sized>(self, v: &T) -> Result<(), Kept> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Kept> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Kept> {
        Ok(())
    }
    fn serialize_newtype_struct<T: serde::Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Kept> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: serde::Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> Result<(), Kept> {
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Discard, Kept> {
        Ok(Discard)
    }
    fn serialize_tuple(self, _: usize) -> Result<Discard, Kept> {
        Ok(Discard)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Discard, Kept> {
        Ok(Discard)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Discard, Kept> {
        Ok(Discard)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Discard, Kept> {
        Ok(Discard)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Discard, Kept> {
        Ok(Discard)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Discard, Kept> {
        Ok(Discard)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

macro_rules! discard_compound {
    ($($trait:ident { $($method:ident $(($key:ident))?;)* })*) => {
        $(impl serde::ser::$trait for Discard {
            type Ok = ();
            type Error = Kept;
            $(fn $method<T: serde::Serialize + ?Sized>(
                &mut self,
                $($key: &'static str,)?
                value: &T,
            ) -> Result<(), Kept> {
                $(let _ = $key;)?
                value.serialize(Discard)
            })*
            fn end(self) -> Result<(), Kept> {
                Ok(())
            }
        })*
    };
}

discard_compound! {
    SerializeSeq { serialize_element; }
    SerializeTuple { serialize_element; }
    SerializeTupleStruct { serialize_field; }
    SerializeTupleVariant { serialize_field; }
    SerializeStruct { serialize_field(key); }
    SerializeStructVariant { serialize_field(key); }
}

impl serde::ser::SerializeMap for Discard {
    type Ok = ();
    type Error = Kept;
    fn serialize_key<T: serde::Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Kept> {
        key.serialize(Discard)
    }
    fn serialize_value<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Kept> {
        value.serialize(Discard)
    }
    fn end(self) -> Result<(), Kept> {
        Ok(())
    }
}

/// postcard's format, decoded again with an error type that keeps messages.
struct Replay<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Replay<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Kept> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| Kept("the bytes end early".into()))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn varint(&mut self) -> Result<u128, Kept> {
        let mut out = 0u128;
        for i in 0..19 {
            let byte = self.take(1)?[0];
            out |= u128::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(Kept("a varint that does not end".into()))
    }

    fn signed(&mut self) -> Result<i128, Kept> {
        let v = self.varint()?;
        Ok(((v >> 1) as i128) ^ -((v & 1) as i128))
    }

    fn len(&mut self) -> Result<usize, Kept> {
        usize::try_from(self.varint()?).map_err(|_| Kept("a length too large".into()))
    }

    fn str(&mut self) -> Result<&'a str, Kept> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).map_err(|_| Kept("text that is not UTF-8".into()))
    }
}

fn narrow<T: TryFrom<i128>>(v: i128) -> Result<T, Kept> {
    T::try_from(v).map_err(|_| Kept("an integer out of range".into()))
}

fn unarrow<T: TryFrom<u128>>(v: u128) -> Result<T, Kept> {
    T::try_from(v).map_err(|_| Kept("an integer out of range".into()))
}

impl<'de, 'a: 'de> serde::Deserializer<'de> for &mut Replay<'a> {
    type Error = Kept;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Kept> {
        Err(Kept("the type needs a self-describing format".into()))
    }
    fn deserialize_bool<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        match self.take(1)?[0] {
            0 => v.visit_bool(false),
            1 => v.visit_bool(true),
            _ => Err(Kept("a bool that is neither 0 nor 1".into())),
        }
    }
    fn deserialize_i8<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        v.visit_i8(self.take(1)?[0] as i8)
    }
    fn deserialize_i16<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let n = self.signed()?;
        v.visit_i16(narrow(n)?)
    }
    fn deserialize_i32<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let n = self.signed()?;
        v.visit_i32(narrow(n)?)
    }
    fn deserialize_i64<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let n = self.signed()?;
        v.visit_i64(narrow(n)?)
    }
    fn deserialize_i128<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let n = self.signed()?;
        v.visit_i128(n)
    }
    fn deserialize_u8<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        v.visit_u8(self.take(1)?[0])
    }
    fn deserialize_u16<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let n = self.varint()?;
        v.visit_u16(unarrow(n)?)
    }
    fn deserialize_u32<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let n = self.varint()?;
        v.visit_u32(unarrow(n)?)
    }
    fn deserialize_u64<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let n = self.varint()?;
        v.visit_u64(unarrow(n)?)
    }
    fn deserialize_u128<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let n = self.varint()?;
        v.visit_u128(n)
    }
    fn deserialize_f32<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let mut le = [0; 4];
        le.copy_from_slice(self.take(4)?);
        v.visit_f32(f32::from_le_bytes(le))
    }
    fn deserialize_f64<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let mut le = [0; 8];
        le.copy_from_slice(self.take(8)?);
        v.visit_f64(f64::from_le_bytes(le))
    }
    fn deserialize_char<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let mut chars = self.str()?.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => v.visit_char(c),
            _ => Err(Kept("a char that is not one character".into())),
        }
    }
    fn deserialize_str<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        v.visit_borrowed_str(self.str()?)
    }
    fn deserialize_string<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        self.deserialize_str(v)
    }
    fn deserialize_bytes<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let len = self.len()?;
        v.visit_borrowed_bytes(self.take(len)?)
    }
    fn deserialize_byte_buf<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        self.deserialize_bytes(v)
    }
    fn deserialize_option<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        match self.take(1)?[0] {
            0 => v.visit_none(),
            1 => v.visit_some(self),
            _ => Err(Kept("an option tag that is neither 0 nor 1".into())),
        }
    }
    fn deserialize_unit<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        v.visit_unit()
    }
    fn deserialize_unit_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Kept> {
        v.visit_unit()
    }
    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Kept> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let left = self.len()?;
        v.visit_seq(Counted { de: self, left })
    }
    fn deserialize_tuple<V: serde::de::Visitor<'de>>(
        self,
        len: usize,
        v: V,
    ) -> Result<V::Value, Kept> {
        v.visit_seq(Counted {
            de: self,
            left: len,
        })
    }
    fn deserialize_tuple_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, Kept> {
        v.visit_seq(Counted {
            de: self,
            left: len,
        })
    }
    fn deserialize_map<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Kept> {
        let left = self.len()?;
        v.visit_map(Counted { de: self, left })
    }
    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Kept> {
        v.visit_seq(Counted {
            de: self,
            left: fields.len(),
        })
    }
    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Kept> {
        v.visit_enum(self)
    }
    fn deserialize_identifier<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Kept> {
        Err(Kept("the type needs a self-describing format".into()))
    }
    fn deserialize_ignored_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Kept> {
        Err(Kept("the type needs a self-describing format".into()))
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

struct Counted<'r, 'a> {
    de: &'r mut Replay<'a>,
    left: usize,
}

impl<'de, 'a: 'de> serde::de::SeqAccess<'de> for Counted<'_, 'a> {
    type Error = Kept;
    fn next_element_seed<S: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Kept> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
}

impl<'de, 'a: 'de> serde::de::MapAccess<'de> for Counted<'_, 'a> {
    type Error = Kept;
    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Kept> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Kept> {
        seed.deserialize(&mut *self.de)
    }
}

impl<'de, 'a: 'de> serde::de::EnumAccess<'de> for &mut Replay<'a> {
    type Error = Kept;
    type Variant = Self;
    fn variant_seed<S: serde::de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), Kept> {
        let index: u32 = unarrow(self.varint()?)?;
        let value = seed.deserialize(serde::de::value::U32Deserializer::<Kept>::new(index))?;
        Ok((value, self))
    }
}

impl<'de, 'a: 'de> serde::de::VariantAccess<'de> for &mut Replay<'a> {
    type Error = Kept;
    fn unit_variant(self) -> Result<(), Kept> {
        Ok(())
    }
    fn newtype_variant_seed<S: serde::de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, Kept> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: serde::de::Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Kept> {
        v.visit_seq(Counted {
            de: self,
            left: len,
        })
    }
    fn struct_variant<V: serde::de::Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Kept> {
        v.visit_seq(Counted {
            de: self,
            left: fields.len(),
        })
    }
}
