//! The shape of a request or response type as the wire format sees it, for the handshake.
//!
//! A type's shape is traced from its `Deserialize` implementation alone, without a derive of
//! bincrew's and without sample values: a tracing deserializer answers every call with the
//! smallest value it can, and records what was asked for (struct fields by name and order, enum
//! variants by name, element and key types, primitives), recursively. The wire format
//! (postcard) is not self-describing, so this is exactly what both sides must agree on.
//!
//! Enums are explored one variant per pass, as many passes as it takes; a type that contains
//! itself (through an `Option`, a sequence, a map or an enum) is traced as a back-reference,
//! choosing `None`, empty sequences and an already-known variant to end the recursion. A step
//! budget bounds the work for any type.
//!
//! Some types cannot be traced: those that decode by looking at the data (`deserialize_any`:
//! untagged and internally tagged enums, `flatten`, `serde_json::Value`), those whose
//! `Deserialize` refuses the smallest values (a `NonZeroU32`, a string that must parse), and
//! those that carry `ipc-channel` handles or shared memory. The handshake compares those by their
//! Rust type names instead, and says so in a warning.
//!
//! `serde-reflection` does the same tracing, but overflows the stack (an abort) on a recursive
//! enum whose first variant recurses, and needs each nested enum traced by hand: an app's start
//! must not abort on a user's type.
//!
//! A shape travels in the hello as text (see [`TypeShape::encode`]), one line per type:
//! the root shape, then the named types (structs and enums) it refers to, by number.

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

/// The shape of one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Not learned (yet).
    Unknown,
    /// A primitive, by its name: `bool`, `u32`, `str`, `bytes`, `unit`, ...
    Prim(Prim),
    /// `Option<T>`.
    Option(Box<Shape>),
    /// A sequence (`Vec<T>`, `HashSet<T>`, ...).
    Seq(Box<Shape>),
    /// A map.
    Map(Box<Shape>, Box<Shape>),
    /// A tuple or a fixed-size array.
    Tuple(Vec<Shape>),
    /// A named type (struct or enum), by its number in [`TypeShape::defs`].
    Named(usize),
}

/// The primitives serde knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prim {
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    Unit,
}

const PRIMS: [(Prim, &str); 17] = [
    (Prim::Bool, "bool"),
    (Prim::I8, "i8"),
    (Prim::I16, "i16"),
    (Prim::I32, "i32"),
    (Prim::I64, "i64"),
    (Prim::I128, "i128"),
    (Prim::U8, "u8"),
    (Prim::U16, "u16"),
    (Prim::U32, "u32"),
    (Prim::U64, "u64"),
    (Prim::U128, "u128"),
    (Prim::F32, "f32"),
    (Prim::F64, "f64"),
    (Prim::Char, "char"),
    (Prim::Str, "str"),
    (Prim::Bytes, "bytes"),
    (Prim::Unit, "unit"),
];

impl Prim {
    fn name(self) -> &'static str {
        PRIMS
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("?", |(_, n)| n)
    }
}

/// A named type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Def {
    /// Its name as serde sees it (after `#[serde(rename)]`), for messages; not compared.
    pub(crate) name: String,
    pub(crate) kind: Kind,
}

/// What a named type is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    UnitStruct,
    Newtype(Shape),
    TupleStruct(Vec<Shape>),
    Struct(Vec<(String, Shape)>),
    Enum(Vec<(String, Variant)>),
}

/// One variant of an enum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    /// Never reached by the tracer (only while tracing).
    Unexplored,
    Unit,
    /// A tuple variant; a newtype variant is a tuple of one (they encode alike).
    Tuple(Vec<Shape>),
    Struct(Vec<(String, Shape)>),
}

/// A traced type: its root shape and the named types it refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TypeShape {
    pub(crate) root: Shape,
    pub(crate) defs: Vec<Def>,
}

/// What tracing one type gave: its shape (and its text for the hello), or why it could not be
/// traced.
#[derive(Debug)]
pub(crate) struct Traced {
    /// The Rust type name.
    pub(crate) type_name: &'static str,
    pub(crate) shape: Result<(TypeShape, String), String>,
}

/// The name `bincrew::Json` gives serde.
const JSON: &str = "bincrew::Json";

/// The shape of a whole `Json<T>`: JSON text, whatever `T`.
fn json_shape() -> TypeShape {
    TypeShape {
        root: Shape::Named(0),
        defs: vec![Def {
            name: "Json".into(),
            kind: Kind::Newtype(Shape::Prim(Prim::Bytes)),
        }],
    }
}

/// The shape of `T`, traced once per type and process.
pub(crate) fn of<T: for<'de> serde::Deserialize<'de> + 'static>() -> Arc<Traced> {
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = crate::sync::lock(cache).get(&TypeId::of::<T>()) {
        return hit.clone();
    }
    let traced = Arc::new(Traced {
        type_name: std::any::type_name::<T>(),
        shape: trace::<T>().map(|shape| {
            let text = shape.encode();
            (shape, text)
        }),
    });
    crate::sync::lock(cache)
        .entry(TypeId::of::<T>())
        .or_insert(traced)
        .clone()
}

/// Whether `T` could be traced, which also says that it carries no IPC handles.
///
/// Asked for each message sent: answered from a cache of this thread's once the type was traced,
/// without the process-wide lock.
pub(crate) fn traceable<T: ?Sized + 'static>() -> bool {
    thread_local! {
        static KNOWN: std::cell::RefCell<HashMap<TypeId, bool>> =
            std::cell::RefCell::new(HashMap::new());
    }
    let id = TypeId::of::<T>();
    if let Some(known) = KNOWN.with(|k| k.borrow().get(&id).copied()) {
        return known;
    }
    let cache = CACHE.get_or_init(Default::default);
    let traced = crate::sync::lock(cache).get(&id).map(|t| t.shape.is_ok());
    // Only a type already traced has a final answer.
    if let Some(known) = traced {
        KNOWN.with(|k| k.borrow_mut().insert(id, known));
    }
    traced.unwrap_or(false)
}

/// Traced types, by `TypeId`.
static CACHE: OnceLock<Mutex<HashMap<TypeId, Arc<Traced>>>> = OnceLock::new();

/// The most calls into the tracing deserializer, over all passes, before giving up.
const STEP_BUDGET: usize = 200_000;
/// The most passes over a type.
const MAX_PASSES: usize = 2_000;

/// Traces `T`; `Err` says why it cannot be.
pub(crate) fn trace<T: for<'de> serde::Deserialize<'de>>() -> Result<TypeShape, String> {
    let name = std::any::type_name::<T>();
    if let Some(reason) = opaque(name) {
        return Err(reason);
    }
    if name.starts_with("bincrew::json::Json<") {
        return Ok(json_shape());
    }
    let traced = std::panic::catch_unwind(|| {
        let mut tracer = Tracer::default();
        let mut root = Shape::Unknown;
        for _ in 0..MAX_PASSES {
            let mut shape = Shape::Unknown;
            let result = T::deserialize(Slot {
                t: &mut tracer,
                out: &mut shape,
            });
            merge(&mut root, shape);
            match result {
                Ok(_) | Err(TraceError::Recursion) => {}
                Err(TraceError::Unsupported(reason)) => return Err(reason),
                Err(TraceError::Custom(message)) => {
                    return Err(format!(
                        "its `Deserialize` refused the values the tracer offered ({message})"
                    ))
                }
            }
            if tracer.complete(&root) {
                return Ok(TypeShape {
                    root,
                    defs: tracer.defs.into_iter().map(|d| d.def).collect(),
                });
            }
        }
        Err("it was not fully traced: an enum or a recursive type could not be completed".into())
    });
    traced.unwrap_or_else(|_| Err("its `Deserialize` panicked while traced".into()))
}

/// Types the tracer must not touch: `ipc-channel` handles index a table that exists only while
/// a message is decoded (and panic outside of it).
fn opaque(type_name: &str) -> Option<String> {
    (type_name.contains("ipc_channel::") || type_name.contains("bincrew::shared::SharedBuffer"))
        .then(|| format!("it carries IPC channels or shared memory (`{type_name}`)"))
}

#[derive(Debug)]
enum TraceError {
    /// A named type was met inside itself, with no known way out yet.
    Recursion,
    Unsupported(String),
    Custom(String),
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Recursion => f.write_str("recursion"),
            TraceError::Unsupported(s) | TraceError::Custom(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        TraceError::Custom(msg.to_string())
    }
}

struct TracedDef {
    def: Def,
    /// Per variant of an enum: how many passes tried it and met recursion.
    attempts: Vec<u32>,
    /// The first variant of an enum that completed: one that needs no other value of the enum,
    /// used to end a recursion.
    base: Option<usize>,
}

#[derive(Default)]
struct Tracer {
    defs: Vec<TracedDef>,
    by_type: HashMap<&'static str, usize>,
    /// Named types being traced, innermost last.
    stack: Vec<usize>,
    /// Options, sequences and maps (by Rust type) whose contents met recursion: they are traced
    /// as `None` or empty from then on.
    recursive: HashSet<&'static str>,
    steps: usize,
}

impl Tracer {
    fn step(&mut self) -> Result<(), TraceError> {
        self.steps += 1;
        if self.steps > STEP_BUDGET {
            return Err(TraceError::Unsupported(
                "it is too large to trace (its tree of nested types has too many nodes)".into(),
            ));
        }
        Ok(())
    }

    fn def(&mut self, key: &'static str, name: &'static str, kind: impl FnOnce() -> Kind) -> usize {
        if let Some(&id) = self.by_type.get(key) {
            return id;
        }
        let kind = kind();
        let variants = match &kind {
            Kind::Enum(v) => v.len(),
            _ => 0,
        };
        self.defs.push(TracedDef {
            def: Def {
                name: name.to_owned(),
                kind,
            },
            attempts: vec![0; variants],
            base: None,
        });
        let id = self.defs.len() - 1;
        self.by_type.insert(key, id);
        id
    }

    fn complete(&self, root: &Shape) -> bool {
        known(root)
            && self.defs.iter().all(|d| match &d.def.kind {
                Kind::UnitStruct => true,
                Kind::Newtype(s) => known(s),
                Kind::TupleStruct(s) => s.iter().all(known),
                Kind::Struct(f) => f.iter().all(|(_, s)| known(s)),
                Kind::Enum(v) => v.iter().all(|(_, v)| variant_known(v)),
            })
    }
}

/// Whether a shape has nothing left to learn (named types are checked on their own).
fn known(shape: &Shape) -> bool {
    match shape {
        Shape::Unknown => false,
        Shape::Prim(_) | Shape::Named(_) => true,
        Shape::Option(s) | Shape::Seq(s) => known(s),
        Shape::Map(k, v) => known(k) && known(v),
        Shape::Tuple(s) => s.iter().all(known),
    }
}

fn variant_known(v: &Variant) -> bool {
    match v {
        Variant::Unexplored => false,
        Variant::Unit => true,
        Variant::Tuple(s) => s.iter().all(known),
        Variant::Struct(f) => f.iter().all(|(_, s)| known(s)),
    }
}

/// Keeps what `new` learned that `old` did not know.
fn merge(old: &mut Shape, new: Shape) {
    match (old, new) {
        (_, Shape::Unknown) => {}
        (old @ Shape::Unknown, new) => *old = new,
        (Shape::Option(a), Shape::Option(b)) | (Shape::Seq(a), Shape::Seq(b)) => merge(a, *b),
        (Shape::Map(ak, av), Shape::Map(bk, bv)) => {
            merge(ak, *bk);
            merge(av, *bv);
        }
        (Shape::Tuple(a), Shape::Tuple(b)) => {
            for (a, b) in a.iter_mut().zip(b) {
                merge(a, b);
            }
        }
        _ => {}
    }
}

fn merge_all(old: &mut [Shape], new: Vec<Shape>) {
    for (a, b) in old.iter_mut().zip(new) {
        merge(a, b);
    }
}

/// The tracing deserializer for one value: records its shape in `out`.
struct Slot<'a> {
    t: &'a mut Tracer,
    out: &'a mut Shape,
}

impl Slot<'_> {
    fn prim(self, prim: Prim) -> Result<(), TraceError> {
        self.t.step()?;
        *self.out = Shape::Prim(prim);
        Ok(())
    }

    fn check<V>(&mut self) -> Result<&'static str, TraceError> {
        self.t.step()?;
        let key = std::any::type_name::<V>();
        match opaque(key) {
            Some(reason) => Err(TraceError::Unsupported(reason)),
            None => Ok(key),
        }
    }

    /// Enters named type `id`; `Err` when it is already being traced (a recursion).
    fn enter(&mut self, id: usize) -> Result<(), TraceError> {
        *self.out = Shape::Named(id);
        if self.t.stack.contains(&id) {
            return Err(TraceError::Recursion);
        }
        self.t.stack.push(id);
        Ok(())
    }
}

macro_rules! prims {
    ($($method:ident => $prim:ident, $visit:ident($($value:expr)?);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
                self.prim(Prim::$prim)?;
                visitor.$visit($($value)?)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Slot<'_> {
    type Error = TraceError;

    prims! {
        deserialize_bool => Bool, visit_bool(false);
        deserialize_i8 => I8, visit_i8(0);
        deserialize_i16 => I16, visit_i16(0);
        deserialize_i32 => I32, visit_i32(0);
        deserialize_i64 => I64, visit_i64(0);
        deserialize_i128 => I128, visit_i128(0);
        deserialize_u8 => U8, visit_u8(0);
        deserialize_u16 => U16, visit_u16(0);
        deserialize_u32 => U32, visit_u32(0);
        deserialize_u64 => U64, visit_u64(0);
        deserialize_u128 => U128, visit_u128(0);
        deserialize_f32 => F32, visit_f32(0.0);
        deserialize_f64 => F64, visit_f64(0.0);
        deserialize_char => Char, visit_char('\0');
        deserialize_str => Str, visit_str("");
        deserialize_string => Str, visit_string(String::new());
        deserialize_bytes => Bytes, visit_bytes(&[]);
        deserialize_byte_buf => Bytes, visit_byte_buf(Vec::new());
        deserialize_unit => Unit, visit_unit();
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(TraceError::Unsupported(format!(
            "`{}` decodes itself by looking at the data (`deserialize_any`: an untagged or \
             internally tagged enum, `flatten`, or a self-describing value such as \
             `serde_json::Value`)",
            std::any::type_name::<V::Value>()
        )))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(TraceError::Unsupported(format!(
            "`{}` decodes an identifier outside an enum",
            std::any::type_name::<V::Value>()
        )))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.prim(Prim::Unit)?;
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
        let key = self.check::<V::Value>()?;
        if self.t.recursive.contains(key) {
            if matches!(self.out, Shape::Unknown) {
                *self.out = Shape::Option(Box::new(Shape::Unknown));
            }
            return visitor.visit_none();
        }
        let mut inner = Shape::Unknown;
        let result = visitor.visit_some(Slot {
            t: &mut *self.t,
            out: &mut inner,
        });
        merge(self.out, Shape::Option(Box::new(inner)));
        if let Err(TraceError::Recursion) = result {
            self.t.recursive.insert(key);
        }
        result
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
        let key = self.check::<V::Value>()?;
        let recursive = self.t.recursive.contains(key);
        let mut elements = vec![Shape::Unknown];
        let result = visitor.visit_seq(Elements {
            t: &mut *self.t,
            shapes: &mut elements,
            next: 0,
            len: usize::from(!recursive),
        });
        let element = elements.pop().unwrap_or(Shape::Unknown);
        merge(self.out, Shape::Seq(Box::new(element)));
        if let Err(TraceError::Recursion) = result {
            self.t.recursive.insert(key);
        }
        result
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
        let key = self.check::<V::Value>()?;
        let recursive = self.t.recursive.contains(key);
        let (mut k, mut v) = (Shape::Unknown, Shape::Unknown);
        let result = visitor.visit_map(Entry {
            t: &mut *self.t,
            key: &mut k,
            value: &mut v,
            left: !recursive,
        });
        merge(self.out, Shape::Map(Box::new(k), Box::new(v)));
        if let Err(TraceError::Recursion) = result {
            self.t.recursive.insert(key);
        }
        result
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        mut self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.check::<V::Value>()?;
        let mut shapes = vec![Shape::Unknown; len.min(1 << 16)];
        let result = visitor.visit_seq(Elements {
            t: &mut *self.t,
            shapes: &mut shapes,
            next: 0,
            len,
        });
        merge(self.out, Shape::Tuple(shapes));
        result
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let key = self.check::<V::Value>()?;
        let id = self.t.def(key, name, || Kind::UnitStruct);
        *self.out = Shape::Named(id);
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let key = self.check::<V::Value>()?;
        if name == JSON {
            return Err(TraceError::Unsupported(format!(
                "it holds a `{key}` among other fields (a `Json` is compared by shape only as a \
                 whole request or response)"
            )));
        }
        let id = self.t.def(key, name, || Kind::Newtype(Shape::Unknown));
        self.enter(id)?;
        let mut inner = Shape::Unknown;
        let result = visitor.visit_newtype_struct(Slot {
            t: &mut *self.t,
            out: &mut inner,
        });
        self.t.stack.pop();
        if let Kind::Newtype(old) = &mut self.t.defs[id].def.kind {
            merge(old, inner);
        }
        result
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let key = self.check::<V::Value>()?;
        let len = len.min(1 << 16);
        let id = self
            .t
            .def(key, name, || Kind::TupleStruct(vec![Shape::Unknown; len]));
        self.enter(id)?;
        let mut shapes = vec![Shape::Unknown; len];
        let result = visitor.visit_seq(Elements {
            t: &mut *self.t,
            shapes: &mut shapes,
            next: 0,
            len,
        });
        self.t.stack.pop();
        if let Kind::TupleStruct(old) = &mut self.t.defs[id].def.kind {
            merge_all(old, shapes);
        }
        result
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let key = self.check::<V::Value>()?;
        let id = self.t.def(key, name, || {
            Kind::Struct(
                fields
                    .iter()
                    .map(|f| ((*f).to_owned(), Shape::Unknown))
                    .collect(),
            )
        });
        self.enter(id)?;
        let mut shapes = vec![Shape::Unknown; fields.len()];
        let result = visitor.visit_seq(Elements {
            t: &mut *self.t,
            shapes: &mut shapes,
            next: 0,
            len: fields.len(),
        });
        self.t.stack.pop();
        if let Kind::Struct(old) = &mut self.t.defs[id].def.kind {
            for ((_, a), b) in old.iter_mut().zip(shapes) {
                merge(a, b);
            }
        }
        result
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let key = self.check::<V::Value>()?;
        if variants.is_empty() {
            return Err(TraceError::Unsupported(format!(
                "enum `{name}` has no variants"
            )));
        }
        let id = self.t.def(key, name, || {
            Kind::Enum(
                variants
                    .iter()
                    .map(|v| ((*v).to_owned(), Variant::Unexplored))
                    .collect(),
            )
        });
        *self.out = Shape::Named(id);
        let inside_itself = self.t.stack.contains(&id);
        let entry = &self.t.defs[id];
        let choice = if inside_itself {
            // End the recursion with a variant known to need no other value of this enum.
            entry.base.ok_or(TraceError::Recursion)?
        } else {
            let Kind::Enum(known) = &entry.def.kind else {
                return Err(TraceError::Unsupported(format!(
                    "`{name}` is traced both as an enum and as a struct"
                )));
            };
            // The incomplete variant tried least, then the first that completed.
            let incomplete = known
                .iter()
                .enumerate()
                .filter(|(_, (_, v))| !variant_known(v))
                .min_by_key(|(i, _)| entry.attempts.get(*i).copied().unwrap_or(0))
                .map(|(i, _)| i);
            incomplete.or(entry.base).unwrap_or(0)
        };
        self.t.stack.push(id);
        let result = visitor.visit_enum(EnumAt {
            t: &mut *self.t,
            id,
            index: choice,
        });
        self.t.stack.pop();
        let entry = &mut self.t.defs[id];
        match &result {
            Ok(_) => {
                entry.base.get_or_insert(choice);
            }
            Err(TraceError::Recursion) => {
                if let Some(a) = entry.attempts.get_mut(choice) {
                    *a += 1;
                }
            }
            Err(_) => {}
        }
        result
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Elements of a sequence, tuple or struct: `len` of them, shapes recorded in order.
struct Elements<'a> {
    t: &'a mut Tracer,
    shapes: &'a mut Vec<Shape>,
    next: usize,
    len: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, TraceError> {
        if self.next >= self.len {
            return Ok(None);
        }
        if let Some(reason) = opaque(std::any::type_name::<S>()) {
            return Err(TraceError::Unsupported(reason));
        }
        let mut shape = Shape::Unknown;
        let result = seed.deserialize(Slot {
            t: &mut *self.t,
            out: &mut shape,
        });
        if let Some(slot) = self.shapes.get_mut(self.next) {
            merge(slot, shape);
        }
        self.next += 1;
        result.map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len - self.next)
    }
}

/// One entry of a map (none once the map met recursion).
struct Entry<'a> {
    t: &'a mut Tracer,
    key: &'a mut Shape,
    value: &'a mut Shape,
    left: bool,
}

impl<'de> de::MapAccess<'de> for Entry<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        if !self.left {
            return Ok(None);
        }
        self.left = false;
        if let Some(reason) = opaque(std::any::type_name::<K>()) {
            return Err(TraceError::Unsupported(reason));
        }
        seed.deserialize(Slot {
            t: &mut *self.t,
            out: &mut *self.key,
        })
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        if let Some(reason) = opaque(std::any::type_name::<V>()) {
            return Err(TraceError::Unsupported(reason));
        }
        seed.deserialize(Slot {
            t: &mut *self.t,
            out: &mut *self.value,
        })
    }
}

/// Variant `index` of enum `id`.
struct EnumAt<'a> {
    t: &'a mut Tracer,
    id: usize,
    index: usize,
}

impl EnumAt<'_> {
    fn record(&mut self, variant: Variant) {
        if let Kind::Enum(variants) = &mut self.t.defs[self.id].def.kind {
            if let Some((_, old)) = variants.get_mut(self.index) {
                match (old, variant) {
                    (old @ Variant::Unexplored, new) => *old = new,
                    (Variant::Tuple(a), Variant::Tuple(b)) => merge_all(a, b),
                    (Variant::Struct(a), Variant::Struct(b)) => {
                        for ((_, a), (_, b)) in a.iter_mut().zip(b) {
                            merge(a, b);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn elements<'de, V: Visitor<'de>>(
        &mut self,
        len: usize,
        visitor: V,
    ) -> (Result<V::Value, TraceError>, Vec<Shape>) {
        let mut shapes = vec![Shape::Unknown; len.min(1 << 16)];
        let result = visitor.visit_seq(Elements {
            t: &mut *self.t,
            shapes: &mut shapes,
            next: 0,
            len,
        });
        (result, shapes)
    }
}

impl<'de> de::EnumAccess<'de> for EnumAt<'_> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), TraceError> {
        let index = u32::try_from(self.index).unwrap_or(u32::MAX);
        let value = seed.deserialize(de::value::U32Deserializer::<TraceError>::new(index))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumAt<'_> {
    type Error = TraceError;

    fn unit_variant(mut self) -> Result<(), TraceError> {
        self.record(Variant::Unit);
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        mut self,
        seed: S,
    ) -> Result<S::Value, TraceError> {
        if let Some(reason) = opaque(std::any::type_name::<S>()) {
            return Err(TraceError::Unsupported(reason));
        }
        let mut shape = Shape::Unknown;
        let result = seed.deserialize(Slot {
            t: &mut *self.t,
            out: &mut shape,
        });
        self.record(Variant::Tuple(vec![shape]));
        result
    }

    fn tuple_variant<V: Visitor<'de>>(
        mut self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let (result, shapes) = self.elements(len, visitor);
        self.record(Variant::Tuple(shapes));
        result
    }

    fn struct_variant<V: Visitor<'de>>(
        mut self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let (result, shapes) = self.elements(fields.len(), visitor);
        self.record(Variant::Struct(
            fields.iter().map(|f| (*f).to_owned()).zip(shapes).collect(),
        ));
        result
    }
}

// ----- Text form -----

/// The deepest nesting the text form may have.
const MAX_DEPTH: usize = 128;

impl TypeShape {
    /// The text form: `root;def;def;...`, where a shape is a primitive's name, `?S` (option),
    /// `[S]` (sequence), `{K:V}` (map), `(S,S)` (tuple) or `#N` (named type N), and a named type
    /// is `u` + name (unit struct), `n` + name + `(S)` (newtype), `t` + name + `(S,S)` (tuple
    /// struct), `s` + name + `{f:S,f:S}` (struct) or `e` + name + `{V|V}` (enum) with variants
    /// `name`, `name(S,S)` or `name{f:S}`. Names are escaped: any character other than ASCII
    /// letters, digits and `_` as `%XX` per UTF-8 byte.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        write_shape(&mut out, &self.root);
        for def in &self.defs {
            out.push(';');
            let (tag, body): (char, &dyn Fn(&mut String)) = match &def.kind {
                Kind::UnitStruct => ('u', &|_| {}),
                Kind::Newtype(s) => ('n', &|o: &mut String| {
                    o.push('(');
                    write_shape(o, s);
                    o.push(')');
                }),
                Kind::TupleStruct(s) => ('t', &|o: &mut String| write_list(o, s)),
                Kind::Struct(f) => ('s', &|o: &mut String| write_fields(o, f)),
                Kind::Enum(v) => ('e', &|o: &mut String| {
                    o.push('{');
                    for (i, (name, variant)) in v.iter().enumerate() {
                        if i > 0 {
                            o.push('|');
                        }
                        write_name(o, name);
                        match variant {
                            Variant::Unexplored | Variant::Unit => {}
                            Variant::Tuple(s) => write_list(o, s),
                            Variant::Struct(f) => write_fields(o, f),
                        }
                    }
                    o.push('}');
                }),
            };
            out.push(tag);
            write_name(&mut out, &def.name);
            body(&mut out);
        }
        out
    }

    /// Parses the text form; `Err` says what is wrong with it.
    pub(crate) fn decode(text: &str) -> Result<TypeShape, String> {
        let mut parts = text.split(';');
        let mut p = Parser {
            s: parts.next().unwrap_or_default().as_bytes(),
            i: 0,
            depth: 0,
        };
        let root = p.shape()?;
        p.end()?;
        let mut defs = Vec::new();
        for part in parts {
            let mut p = Parser {
                s: part.as_bytes(),
                i: 0,
                depth: 0,
            };
            defs.push(p.def()?);
            p.end()?;
        }
        let shape = TypeShape { root, defs };
        shape.check_refs()?;
        Ok(shape)
    }

    fn check_refs(&self) -> Result<(), String> {
        let n = self.defs.len();
        let mut bad = None;
        let mut visit = |s: &Shape| {
            walk(s, &mut |s| {
                if let Shape::Named(i) = s {
                    if *i >= n {
                        bad = Some(*i);
                    }
                }
            })
        };
        visit(&self.root);
        for def in &self.defs {
            match &def.kind {
                Kind::UnitStruct => {}
                Kind::Newtype(s) => visit(s),
                Kind::TupleStruct(s) => s.iter().for_each(&mut visit),
                Kind::Struct(f) => f.iter().for_each(|(_, s)| visit(s)),
                Kind::Enum(v) => v.iter().for_each(|(_, v)| match v {
                    Variant::Tuple(s) => s.iter().for_each(&mut visit),
                    Variant::Struct(f) => f.iter().for_each(|(_, s)| visit(s)),
                    _ => {}
                }),
            }
        }
        match bad {
            Some(i) => Err(format!("a shape refers to type #{i} of {n}")),
            None => Ok(()),
        }
    }
}

fn walk(shape: &Shape, f: &mut dyn FnMut(&Shape)) {
    f(shape);
    match shape {
        Shape::Option(s) | Shape::Seq(s) => walk(s, f),
        Shape::Map(k, v) => {
            walk(k, f);
            walk(v, f);
        }
        Shape::Tuple(s) => s.iter().for_each(|s| walk(s, f)),
        _ => {}
    }
}

fn write_shape(out: &mut String, shape: &Shape) {
    match shape {
        Shape::Unknown => out.push('!'),
        Shape::Prim(p) => out.push_str(p.name()),
        Shape::Option(s) => {
            out.push('?');
            write_shape(out, s);
        }
        Shape::Seq(s) => {
            out.push('[');
            write_shape(out, s);
            out.push(']');
        }
        Shape::Map(k, v) => {
            out.push('{');
            write_shape(out, k);
            out.push(':');
            write_shape(out, v);
            out.push('}');
        }
        Shape::Tuple(s) => write_list(out, s),
        Shape::Named(i) => {
            out.push('#');
            out.push_str(&i.to_string());
        }
    }
}

fn write_list(out: &mut String, shapes: &[Shape]) {
    out.push('(');
    for (i, s) in shapes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_shape(out, s);
    }
    out.push(')');
}

fn write_fields(out: &mut String, fields: &[(String, Shape)]) {
    out.push('{');
    for (i, (name, s)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_name(out, name);
        out.push(':');
        write_shape(out, s);
    }
    out.push('}');
}

fn write_name(out: &mut String, name: &str) {
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.i += usize::from(hit);
        hit
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.error(&format!("`{}`", char::from(byte))))
        }
    }

    fn error(&self, wanted: &str) -> String {
        format!("a type shape has no {wanted} at byte {}", self.i)
    }

    fn end(&self) -> Result<(), String> {
        if self.i == self.s.len() {
            Ok(())
        } else {
            Err(self.error("end"))
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let mut bytes = Vec::new();
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b == b'_' {
                bytes.push(b);
                self.i += 1;
            } else if b == b'%' {
                let hex = self
                    .s
                    .get(self.i + 1..self.i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| self.error("escape"))?;
                bytes.push(hex);
                self.i += 3;
            } else {
                break;
            }
        }
        String::from_utf8(bytes).map_err(|_| self.error("UTF-8 name"))
    }

    fn number(&mut self) -> Result<usize, String> {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| self.error("number"))
    }

    fn shape(&mut self) -> Result<Shape, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("a type shape nests too deep".into());
        }
        let shape = match self.peek() {
            Some(b'!') => {
                self.i += 1;
                Shape::Unknown
            }
            Some(b'?') => {
                self.i += 1;
                Shape::Option(Box::new(self.shape()?))
            }
            Some(b'[') => {
                self.i += 1;
                let s = self.shape()?;
                self.expect(b']')?;
                Shape::Seq(Box::new(s))
            }
            Some(b'{') => {
                self.i += 1;
                let k = self.shape()?;
                self.expect(b':')?;
                let v = self.shape()?;
                self.expect(b'}')?;
                Shape::Map(Box::new(k), Box::new(v))
            }
            Some(b'(') => Shape::Tuple(self.list()?),
            Some(b'#') => {
                self.i += 1;
                Shape::Named(self.number()?)
            }
            _ => {
                let name = self.name()?;
                let prim = PRIMS
                    .iter()
                    .find(|(_, n)| *n == name)
                    .ok_or_else(|| self.error("shape"))?;
                Shape::Prim(prim.0)
            }
        };
        self.depth -= 1;
        Ok(shape)
    }

    fn list(&mut self) -> Result<Vec<Shape>, String> {
        self.expect(b'(')?;
        let mut shapes = Vec::new();
        if self.eat(b')') {
            return Ok(shapes);
        }
        loop {
            shapes.push(self.shape()?);
            if self.eat(b')') {
                return Ok(shapes);
            }
            self.expect(b',')?;
        }
    }

    fn fields(&mut self) -> Result<Vec<(String, Shape)>, String> {
        self.expect(b'{')?;
        let mut fields = Vec::new();
        if self.eat(b'}') {
            return Ok(fields);
        }
        loop {
            let name = self.name()?;
            self.expect(b':')?;
            fields.push((name, self.shape()?));
            if self.eat(b'}') {
                return Ok(fields);
            }
            self.expect(b',')?;
        }
    }

    fn def(&mut self) -> Result<Def, String> {
        let tag = self.peek().ok_or_else(|| self.error("type"))?;
        self.i += 1;
        let name = self.name()?;
        let kind = match tag {
            b'u' => Kind::UnitStruct,
            b'n' => {
                self.expect(b'(')?;
                let s = self.shape()?;
                self.expect(b')')?;
                Kind::Newtype(s)
            }
            b't' => Kind::TupleStruct(self.list()?),
            b's' => Kind::Struct(self.fields()?),
            b'e' => {
                self.expect(b'{')?;
                let mut variants = Vec::new();
                loop {
                    let name = self.name()?;
                    let variant = match self.peek() {
                        Some(b'(') => Variant::Tuple(self.list()?),
                        Some(b'{') => Variant::Struct(self.fields()?),
                        _ => Variant::Unit,
                    };
                    variants.push((name, variant));
                    if self.eat(b'}') {
                        break;
                    }
                    self.expect(b'|')?;
                }
                Kind::Enum(variants)
            }
            _ => return Err(self.error("type tag")),
        };
        Ok(Def { name, kind })
    }
}

// ----- Comparison -----

/// The handshake's check of one type: `Ok(None)` when the worker's type is the app's,
/// `Ok(Some(difference))` when it is not, `Err` when the worker's shape is not readable.
///
/// Shapes are compared when both sides traced the type; otherwise the Rust type names are, and
/// a warning says why.
pub(crate) fn compare(
    app: &Traced,
    worker_type: &str,
    worker_shape: Option<&str>,
) -> Result<Option<String>, String> {
    match (&app.shape, worker_shape) {
        (Ok((app_shape, app_text)), Some(worker_text)) => {
            if app_text == worker_text {
                return Ok(None);
            }
            let worker_shape = TypeShape::decode(worker_text)
                .map_err(|e| format!("its hello carries a type shape that does not parse: {e}"))?;
            // `None` here: the same shapes under other type names, which the wire ignores.
            Ok(first_difference(app_shape, &worker_shape))
        }
        (app_shape, worker_shape) => {
            let why = match (app_shape, worker_shape) {
                (Err(reason), _) => format!("the app cannot trace `{}`: {reason}", app.type_name),
                _ => format!("the worker sent no shape for `{worker_type}` (it cannot trace it, or its bincrew is older)"),
            };
            tracing::warn!(
                app_type = app.type_name,
                worker_type,
                "the handshake compares these types by name only: {why}"
            );
            Ok((app.type_name != worker_type)
                .then(|| format!("the type names differ (compared by name only, because {why})")))
        }
    }
}

/// How deep the comparison follows nested types.
const MAX_COMPARE_DEPTH: usize = 512;

/// Where two shapes first differ, and how, in words. `app` and `worker` name the two sides.
pub(crate) fn first_difference(app: &TypeShape, worker: &TypeShape) -> Option<String> {
    let mut cmp = Compare {
        app,
        worker,
        seen: HashSet::new(),
        path: Vec::new(),
    };
    cmp.shape(&app.root, &worker.root)
        .map(|what| match cmp.path.is_empty() {
            true => what,
            false => format!("{what} (at `{}`)", cmp.path.join(".")),
        })
}

struct Compare<'a> {
    app: &'a TypeShape,
    worker: &'a TypeShape,
    seen: HashSet<(usize, usize)>,
    path: Vec<String>,
}

impl Compare<'_> {
    fn describe(&self, ts: &TypeShape, s: &Shape) -> String {
        match s {
            Shape::Unknown => "unknown".into(),
            Shape::Prim(p) => format!("`{}`", p.name()),
            Shape::Option(_) => "an option".into(),
            Shape::Seq(_) => "a sequence".into(),
            Shape::Map(..) => "a map".into(),
            Shape::Tuple(t) => format!("a tuple of {}", t.len()),
            Shape::Named(i) => match ts.defs.get(*i) {
                Some(d) => format!(
                    "{} `{}`",
                    match d.kind {
                        Kind::Enum(_) => "enum",
                        _ => "struct",
                    },
                    d.name
                ),
                None => "unknown".into(),
            },
        }
    }

    fn differ(&self, a: &Shape, b: &Shape) -> String {
        format!(
            "it is {} in the app and {} in the worker",
            self.describe(self.app, a),
            self.describe(self.worker, b)
        )
    }

    fn nested(&mut self, step: String, a: &Shape, b: &Shape) -> Option<String> {
        if self.path.len() >= MAX_COMPARE_DEPTH {
            // A worker's shape is its own text: a chain of types as long as it likes must not
            // take the app's stack.
            return Some(format!(
                "the types nest more than {MAX_COMPARE_DEPTH} levels deep, too deep to compare"
            ));
        }
        self.path.push(step);
        let found = self.shape(a, b);
        if found.is_none() {
            self.path.pop();
        }
        found
    }

    fn shape(&mut self, a: &Shape, b: &Shape) -> Option<String> {
        match (a, b) {
            (Shape::Prim(x), Shape::Prim(y)) if x == y => None,
            (Shape::Unknown, Shape::Unknown) => None,
            (Shape::Option(x), Shape::Option(y)) => self.nested("<some>".into(), x, y),
            (Shape::Seq(x), Shape::Seq(y)) => self.nested("<element>".into(), x, y),
            (Shape::Map(xk, xv), Shape::Map(yk, yv)) => self
                .nested("<key>".into(), xk, yk)
                .or_else(|| self.nested("<value>".into(), xv, yv)),
            (Shape::Tuple(x), Shape::Tuple(y)) if x.len() == y.len() => self.list(x, y),
            (Shape::Named(i), Shape::Named(j)) => self.named(*i, *j),
            _ => Some(self.differ(a, b)),
        }
    }

    fn list(&mut self, x: &[Shape], y: &[Shape]) -> Option<String> {
        x.iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (a, b))| self.nested(i.to_string(), a, b))
    }

    fn named(&mut self, i: usize, j: usize) -> Option<String> {
        if !self.seen.insert((i, j)) {
            return None;
        }
        if self.path.len() >= MAX_COMPARE_DEPTH {
            return Some(format!(
                "the types nest more than {MAX_COMPARE_DEPTH} levels deep, too deep to compare"
            ));
        }
        let (Some(da), Some(db)) = (self.app.defs.get(i), self.worker.defs.get(j)) else {
            return Some("a type shape refers to a type it does not describe".into());
        };
        let name = da.name.clone();
        match (&da.kind, &db.kind) {
            (Kind::UnitStruct, Kind::UnitStruct) => None,
            (Kind::Newtype(a), Kind::Newtype(b)) => self.nested(name, a, b),
            (Kind::TupleStruct(a), Kind::TupleStruct(b)) if a.len() == b.len() => {
                self.path.push(name);
                let found = self.list(a, b);
                if found.is_none() {
                    self.path.pop();
                }
                found
            }
            (Kind::TupleStruct(a), Kind::TupleStruct(b)) => Some(format!(
                "`{name}` has {} fields in the app and {} in the worker",
                a.len(),
                b.len()
            )),
            (Kind::Struct(a), Kind::Struct(b)) => self.fields(&name, "field", a, b),
            (Kind::Enum(a), Kind::Enum(b)) => self.variants(&name, a, b),
            _ => Some(format!(
                "`{name}` is {} in the app and {} in the worker",
                kind_name(&da.kind),
                kind_name(&db.kind)
            )),
        }
    }

    fn fields(
        &mut self,
        owner: &str,
        what: &str,
        a: &[(String, Shape)],
        b: &[(String, Shape)],
    ) -> Option<String> {
        if let Some(diff) = names_differ(owner, what, a, b) {
            return Some(diff);
        }
        self.path.push(owner.to_owned());
        for ((name, x), (_, y)) in a.iter().zip(b) {
            if let Some(found) = self.nested(name.clone(), x, y) {
                return Some(found);
            }
        }
        self.path.pop();
        None
    }

    fn variants(
        &mut self,
        owner: &str,
        a: &[(String, Variant)],
        b: &[(String, Variant)],
    ) -> Option<String> {
        let unit = |v: &[(String, Variant)]| -> Vec<(String, Shape)> {
            v.iter().map(|(n, _)| (n.clone(), Shape::Unknown)).collect()
        };
        if let Some(diff) = names_differ(owner, "variant", &unit(a), &unit(b)) {
            return Some(diff);
        }
        self.path.push(owner.to_owned());
        for ((name, x), (_, y)) in a.iter().zip(b) {
            let found = match (x, y) {
                (Variant::Unit | Variant::Unexplored, Variant::Unit | Variant::Unexplored) => None,
                (Variant::Tuple(x), Variant::Tuple(y)) if x.len() == y.len() => {
                    self.path.push(name.clone());
                    let found = self.list(x, y);
                    if found.is_none() {
                        self.path.pop();
                    }
                    found
                }
                (Variant::Struct(x), Variant::Struct(y)) => self.fields(name, "field", x, y),
                _ => Some(format!(
                    "variant `{name}` of `{owner}` has other contents in the app than in the worker"
                )),
            };
            if found.is_some() {
                return found;
            }
        }
        self.path.pop();
        None
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::UnitStruct => "a unit struct",
        Kind::Newtype(_) => "a newtype struct",
        Kind::TupleStruct(_) => "a tuple struct",
        Kind::Struct(_) => "a struct",
        Kind::Enum(_) => "an enum",
    }
}

/// The first difference between two lists of names (fields or variants), in words.
fn names_differ(
    owner: &str,
    what: &str,
    a: &[(String, Shape)],
    b: &[(String, Shape)],
) -> Option<String> {
    let has = |list: &[(String, Shape)], name: &str| list.iter().any(|(n, _)| n == name);
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some((x, _)), Some((y, _))) if x == y => continue,
            (Some((x, _)), Some((y, _))) => {
                return Some(match (has(b, x), has(a, y)) {
                    (false, true) => format!("{what} `{x}` of `{owner}` is in the app's type, not in the worker's"),
                    (true, false) => format!("{what} `{y}` of `{owner}` is in the worker's type, not in the app's"),
                    (false, false) => format!("{what} `{x}` of `{owner}` in the app is `{y}` in the worker (renamed or replaced)"),
                    (true, true) => format!("the {what}s of `{owner}` are in another order: `{x}` in the app where the worker has `{y}`"),
                });
            }
            (Some((x, _)), None) => {
                return Some(format!(
                    "{what} `{x}` of `{owner}` is in the app's type, not in the worker's"
                ))
            }
            (None, Some((y, _))) => {
                return Some(format!(
                    "{what} `{y}` of `{owner}` is in the worker's type, not in the app's"
                ))
            }
            (None, None) => break,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::{BTreeMap, HashMap};

    #[allow(dead_code)]
    #[derive(Deserialize)]
    enum Inner {
        A,
        B(u8),
        C { x: String },
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Outer {
        id: u64,
        inner: Inner,
        many: Vec<Inner>,
        map: HashMap<String, Option<(u8, bool)>>,
        arr: [u16; 3],
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    enum Expr {
        Add(Box<Expr>, Box<Expr>),
        Neg { of: Box<Expr> },
        Lit(i64),
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Tree {
        children: Vec<Tree>,
        next: Option<Box<Tree>>,
        by_name: BTreeMap<String, Tree>,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        A(u8),
        B(String),
    }

    #[test]
    fn nested_enums_are_traced_whole() {
        let shape = trace::<Outer>().expect("traced");
        let text = shape.encode();
        assert_eq!(
            text,
            "#0;sOuter{id:u64,inner:#1,many:[#1],map:{str:?(u8,bool)},arr:(u16,u16,u16)};eInner{A|B(u8)|C{x:str}}"
        );
        assert_eq!(TypeShape::decode(&text).expect("parses"), shape);
    }

    #[test]
    fn recursive_types_end() {
        let expr = trace::<Expr>().expect("traced").encode();
        assert_eq!(expr, "#0;eExpr{Add(#0,#0)|Neg{of:#0}|Lit(i64)}");
        let tree = trace::<Tree>().expect("traced").encode();
        assert_eq!(tree, "#0;sTree{children:[#0],next:?#0,by_name:{str:#0}}");
    }

    #[test]
    fn self_describing_and_ipc_types_fall_back() {
        let err = trace::<Loose>().expect_err("untagged");
        assert!(err.contains("deserialize_any"), "{err}");
        let err = trace::<Vec<ipc_channel::ipc::IpcSender<u8>>>().expect_err("ipc");
        assert!(err.contains("IPC channels"), "{err}");
        let err = trace::<std::num::NonZeroU32>().expect_err("validates");
        assert!(err.contains("refused"), "{err}");
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Carries {
        a: u8,
        progress: ipc_channel::ipc::IpcSender<u32>,
    }

    #[test]
    fn ipc_fields_fall_back() {
        let err = trace::<Carries>().expect_err("ipc");
        assert!(err.contains("IpcSender"), "{err}");
    }

    #[test]
    fn differences_are_named() {
        let diff = |a: &str, b: &str| {
            first_difference(
                &TypeShape::decode(a).expect("a"),
                &TypeShape::decode(b).expect("b"),
            )
        };
        assert_eq!(diff("#0;sJob{a:u8}", "#0;sJob{a:u8}"), None);
        assert_eq!(
            diff("#0;sJob{a:u8,b:str}", "#0;sJob{a:u8}").as_deref(),
            Some("field `b` of `Job` is in the app's type, not in the worker's")
        );
        assert_eq!(
            diff("#0;sJob{a:u8}", "#0;sJob{a:u8,level:u32}").as_deref(),
            Some("field `level` of `Job` is in the worker's type, not in the app's")
        );
        assert_eq!(
            diff("#0;sJob{a:u8}", "#0;sJob{b:u8}").as_deref(),
            Some("field `a` of `Job` in the app is `b` in the worker (renamed or replaced)")
        );
        assert_eq!(
            diff("#0;sJob{o:#1};sOpts{n:u32}", "#0;sJob{o:#1};sOpts{n:u64}").as_deref(),
            Some("it is `u32` in the app and `u64` in the worker (at `Job.o.Opts.n`)")
        );
        assert_eq!(
            diff("#0;eMode{A|B}", "#0;eMode{A|B|C}").as_deref(),
            Some("variant `C` of `Mode` is in the worker's type, not in the app's")
        );
        assert_eq!(diff("#0;eE{A(#0)|B}", "#0;eE{A(#0)|B}"), None);
    }

    #[test]
    fn a_hostile_chain_of_types_is_compared_without_exhausting_the_stack() {
        // 200,000 newtypes, each holding the next: parsed (each is shallow), then compared.
        let n = 200_000;
        let mut text = String::from("#0");
        for i in 0..n {
            text.push_str(&format!(
                ";nT({})",
                if i + 1 < n {
                    format!("#{}", i + 1)
                } else {
                    "u8".into()
                }
            ));
        }
        let worker = TypeShape::decode(&text).expect("parses");
        let diff = first_difference(&worker, &worker).expect("refused");
        assert!(diff.contains("too deep to compare"), "{diff}");
    }

    #[test]
    fn garbage_text_is_refused() {
        for bad in [
            "",
            "#",
            "#5",
            "[u8",
            "sX{a:u8}",
            "#0;zX",
            "#0;sX{a:",
            "u8;e%G1{A}",
        ] {
            assert!(TypeShape::decode(bad).is_err(), "{bad:?}");
        }
        let deep = "?".repeat(10_000) + "u8";
        assert!(TypeShape::decode(&deep).is_err());
    }

    /// The table in the crate docs ("What the handshake compares"), row by row.
    #[cfg(feature = "json")]
    #[test]
    fn the_docs_table_holds() {
        use std::collections::{BTreeMap, HashSet};

        #[allow(dead_code)]
        #[derive(Deserialize)]
        struct Plain {
            a: u8,
        }
        #[allow(dead_code)]
        #[derive(Deserialize)]
        struct Pair(u8, String);
        #[allow(dead_code)]
        #[derive(Deserialize)]
        struct Wrapper(u64);
        #[derive(Deserialize)]
        struct Nothing;
        #[allow(dead_code)]
        #[derive(Deserialize)]
        #[serde(tag = "kind")]
        enum Internal {
            A { x: u8 },
        }
        #[allow(dead_code)]
        #[derive(Deserialize)]
        struct Flat {
            #[serde(flatten)]
            inner: Plain,
        }
        #[allow(dead_code)]
        #[derive(Deserialize)]
        struct WithJson {
            a: u8,
            j: crate::Json<u8>,
        }

        fn shape<T: for<'de> Deserialize<'de>>() -> bool {
            trace::<T>().is_ok()
        }
        // By shape.
        assert!(shape::<u32>() && shape::<String>() && shape::<Vec<u8>>() && shape::<()>());
        assert!(shape::<Plain>() && shape::<Pair>() && shape::<Wrapper>() && shape::<Nothing>());
        assert!(shape::<Inner>());
        assert!(shape::<Option<u8>>() && shape::<HashSet<u8>>() && shape::<[u8; 3]>());
        assert!(shape::<(u8, bool)>());
        assert!(shape::<HashMap<String, u8>>() && shape::<BTreeMap<u8, Plain>>());
        assert!(shape::<Outer>() && shape::<Expr>() && shape::<Tree>());
        assert_eq!(
            trace::<crate::Json<Loose>>().expect("json").encode(),
            "#0;nJson(bytes)"
        );
        // By name.
        assert!(!shape::<std::num::NonZeroU32>());
        assert!(!shape::<Loose>() && !shape::<Internal>() && !shape::<Flat>());
        assert!(!shape::<serde_json::Value>());
        assert!(!shape::<ipc_channel::ipc::IpcSender<u8>>());
        assert!(!shape::<Option<ipc_channel::ipc::IpcSharedMemory>>());
        assert!(!shape::<crate::SharedBuffer>());
        assert!(!shape::<WithJson>());
    }
}
