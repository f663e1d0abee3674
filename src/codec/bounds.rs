//! Bounded decoding: a frame is checked against the layout of its message before
//! kafka-protocol's decoder sees it.
//!
//! kafka-protocol 0.18 decodes an array with `Vec::with_capacity(count)` straight from
//! the count on the wire, before it knows whether the elements are there. A 40-byte
//! frame claiming 2^31 elements makes it ask for hundreds of gigabytes, and a failed
//! allocation aborts the process (it is not a panic: nothing can catch it). The walk
//! here reads the same bytes the decoder will, in the same order, without allocating,
//! and refuses any array whose count cannot fit in the bytes left (each element takes
//! at least its smallest encoding), any string or bytes longer than what is left, and
//! any known tagged field whose content does not fill exactly its declared size (the
//! decoder reads known tags from the buffer without that bound, so a lying size would
//! let it read past what was checked). After a walk succeeds, every count the decoder
//! reads is one whose elements are really in the frame: what it allocates is bounded
//! by a small multiple of the frame.
//!
//! The layouts are data (`super::schema`, which also ties each message type to its
//! layout with [`Bounded`]), tested against kafka-protocol's own
//! encoder and decoder below.

use kafka_protocol::protocol::Decodable;

/// Wire types that are not made of other fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prim {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U16,
    Uuid,
    /// STRING / NULLABLE_STRING; COMPACT_ variants in flexible versions.
    Str,
    /// BYTES / NULLABLE_BYTES / RECORDS; COMPACT_ variants in flexible versions.
    Bytes,
}

#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Prim(Prim),
    /// A nested struct (no length prefix).
    Struct(&'static [Field]),
    /// A nullable struct: an int8 (1 = present) then the struct.
    OptStruct(&'static [Field]),
    /// An array of structs.
    Array(&'static [Field]),
    /// An array of a primitive type.
    ArrayOf(Prim),
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub min: i16,
    pub max: i16,
    /// Set for a tagged field (flexible versions only).
    pub tag: Option<u32>,
}

/// Versions a message (and therefore any field of it) can never reach.
pub const NEVER: i16 = i16::MAX;

#[derive(Debug)]
pub struct Message {
    pub name: &'static str,
    pub min: i16,
    pub max: i16,
    /// First flexible version (KIP-482), or [`NEVER`].
    pub flexible_from: i16,
    pub fields: &'static [Field],
}

impl Message {
    pub const fn new(
        name: &'static str,
        min: i16,
        max: i16,
        flexible_from: i16,
        fields: &'static [Field],
    ) -> Self {
        Message {
            name,
            min,
            max,
            flexible_from,
            fields,
        }
    }

    pub fn versions(&self) -> std::ops::RangeInclusive<i16> {
        self.min..=self.max
    }
}

pub const BOOL: Ty = Ty::Prim(Prim::Bool);
pub const I8: Ty = Ty::Prim(Prim::I8);
pub const I16: Ty = Ty::Prim(Prim::I16);
pub const I32: Ty = Ty::Prim(Prim::I32);
pub const I64: Ty = Ty::Prim(Prim::I64);
pub const U16: Ty = Ty::Prim(Prim::U16);
pub const UUID: Ty = Ty::Prim(Prim::Uuid);
pub const STR: Ty = Ty::Prim(Prim::Str);
pub const BYTES: Ty = Ty::Prim(Prim::Bytes);

/// A field present in every version of its message.
pub const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        min: 0,
        max: NEVER,
        tag: None,
    }
}

pub const fn arr(fields: &'static [Field]) -> Ty {
    Ty::Array(fields)
}

pub const fn arr_of(t: Ty) -> Ty {
    match t {
        Ty::Prim(p) => Ty::ArrayOf(p),
        _ => panic!("arr_of takes a primitive type"),
    }
}

pub const fn st(fields: &'static [Field]) -> Ty {
    Ty::Struct(fields)
}

pub const fn opt(fields: &'static [Field]) -> Ty {
    Ty::OptStruct(fields)
}

impl Field {
    pub const fn since(mut self, v: i16) -> Self {
        self.min = v;
        self
    }
    pub const fn until(mut self, v: i16) -> Self {
        self.max = v;
        self
    }
    pub const fn range(self, min: i16, max: i16) -> Self {
        self.since(min).until(max)
    }
    pub const fn tag(mut self, tag: u32) -> Self {
        self.tag = Some(tag);
        self
    }
    fn in_version(&self, v: i16) -> bool {
        (self.min..=self.max).contains(&v)
    }
}

/// What was wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A fixed-size field or a length-prefixed value runs past the end.
    Truncated { need: u64, left: usize },
    /// An array claims more elements than the bytes left could hold.
    Count {
        claimed: u64,
        min_each: usize,
        left: usize,
    },
    /// A length below -1.
    NegativeLength(i64),
    /// A varint longer than 5 bytes.
    Varint,
    /// A known tagged field whose content does not fill its declared size.
    TagSize {
        tag: u32,
        declared: u32,
        used: usize,
    },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Truncated { need, left } => {
                write!(f, "needs {need} bytes but only {left} remain")
            }
            Fault::Count {
                claimed,
                min_each,
                left,
            } => write!(
                f,
                "claims {claimed} elements of at least {min_each} bytes each but only {left} bytes remain"
            ),
            Fault::NegativeLength(n) => write!(f, "has length {n}"),
            Fault::Varint => write!(f, "has a varint longer than 5 bytes"),
            Fault::TagSize {
                tag,
                declared,
                used,
            } => write!(
                f,
                "tagged field {tag} declares {declared} bytes but its content takes {used}"
            ),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BoundsError {
    #[error(
        "{message} v{version} is not a version the proxy knows the layout of (v{min}..=v{max})"
    )]
    UnknownVersion {
        message: &'static str,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error(
        "malformed {message} v{version}: field `{field}` {fault} (byte {at} of a {len}-byte body)"
    )]
    Malformed {
        message: &'static str,
        version: i16,
        field: &'static str,
        fault: Fault,
        at: usize,
        len: usize,
    },
}

/// Walks `body` (a message body, after its header) as `msg` at `version`. Returns the
/// number of bytes the message takes; bytes after it are not looked at (the decoder
/// ignores them too).
pub fn check(msg: &Message, version: i16, body: &[u8]) -> Result<usize, BoundsError> {
    walk(msg, version, body, None)
}

/// Where one primitive field of a checked body lies: what the in-place patching of
/// topic ids and leader epochs looks for (by field name and the struct holding it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    /// The field (or array field) whose struct holds this one; the message name at
    /// the top level.
    pub owner: &'static str,
    pub field: &'static str,
    pub prim: Prim,
    /// The value's bytes in the body (after any length prefix).
    pub at: usize,
    pub len: usize,
}

/// [`check`], calling `visit` for every primitive field present in the body, in wire
/// order. Nothing is allocated; a body that lies is refused as by [`check`].
pub fn visit(
    msg: &Message,
    version: i16,
    body: &[u8],
    visit: &mut dyn FnMut(Spot),
) -> Result<usize, BoundsError> {
    walk(msg, version, body, Some(visit))
}

fn walk(
    msg: &Message,
    version: i16,
    body: &[u8],
    visit: Option<&mut dyn FnMut(Spot)>,
) -> Result<usize, BoundsError> {
    if !msg.versions().contains(&version) {
        return Err(BoundsError::UnknownVersion {
            message: msg.name,
            version,
            min: msg.min,
            max: msg.max,
        });
    }
    let mut w = Walk {
        b: body,
        at: 0,
        flexible: version >= msg.flexible_from,
        version,
        visit,
    };
    match w.fields(msg.fields, msg.name) {
        Ok(()) => Ok(w.at),
        Err((field, at, fault)) => Err(BoundsError::Malformed {
            message: msg.name,
            version,
            field,
            fault,
            at,
            len: body.len(),
        }),
    }
}

type WalkResult<T> = Result<T, (&'static str, usize, Fault)>;

struct Walk<'a, 'v> {
    b: &'a [u8],
    at: usize,
    flexible: bool,
    version: i16,
    visit: Option<&'v mut dyn FnMut(Spot)>,
}

impl Walk<'_, '_> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }

    fn fail<T>(&self, field: &'static str, fault: Fault) -> WalkResult<T> {
        Err((field, self.at, fault))
    }

    fn skip(&mut self, n: u64, field: &'static str) -> WalkResult<()> {
        if n > self.left() as u64 {
            return self.fail(
                field,
                Fault::Truncated {
                    need: n,
                    left: self.left(),
                },
            );
        }
        self.at += n as usize;
        Ok(())
    }

    fn fixed<const N: usize>(&mut self, field: &'static str) -> WalkResult<[u8; N]> {
        let start = self.at;
        self.skip(N as u64, field)?;
        Ok(self.b[start..self.at].try_into().expect("N bytes"))
    }

    /// An unsigned varint, read as kafka-protocol reads it (at most 5 bytes).
    fn uvarint(&mut self, field: &'static str) -> WalkResult<u32> {
        match super::read_uvarint(&self.b[self.at..]) {
            Some((v, n)) => {
                self.at += n;
                Ok(v)
            }
            None if self.left() >= 5 => self.fail(field, Fault::Varint),
            None => self.fail(
                field,
                Fault::Truncated {
                    need: self.left() as u64 + 1,
                    left: self.left(),
                },
            ),
        }
    }

    /// A string or bytes length: -1 (null) is zero bytes.
    fn length(&mut self, p: Prim, field: &'static str) -> WalkResult<u64> {
        let n: i64 = if self.flexible {
            i64::from(self.uvarint(field)?) - 1
        } else if p == Prim::Str {
            i64::from(i16::from_be_bytes(self.fixed(field)?))
        } else {
            i64::from(i32::from_be_bytes(self.fixed(field)?))
        };
        if n < -1 {
            return self.fail(field, Fault::NegativeLength(n));
        }
        Ok(n.max(0) as u64)
    }

    fn prim(&mut self, p: Prim, field: &'static str, owner: &'static str) -> WalkResult<()> {
        let n = match p {
            Prim::Bool | Prim::I8 => 1,
            Prim::I16 | Prim::U16 => 2,
            Prim::I32 => 4,
            Prim::I64 => 8,
            Prim::Uuid => 16,
            Prim::Str | Prim::Bytes => self.length(p, field)?,
        };
        let at = self.at;
        self.skip(n, field)?;
        if let Some(v) = self.visit.as_mut() {
            v(Spot {
                owner,
                field,
                prim: p,
                at,
                len: n as usize,
            });
        }
        Ok(())
    }

    fn value(&mut self, ty: Ty, field: &'static str, owner: &'static str) -> WalkResult<()> {
        match ty {
            Ty::Prim(p) => self.prim(p, field, owner),
            Ty::Struct(fields) => self.fields(fields, field),
            Ty::OptStruct(fields) => {
                let [present] = self.fixed::<1>(field)?;
                if present == 1 {
                    self.fields(fields, field)?;
                }
                Ok(())
            }
            Ty::Array(fields) => {
                let n = self.count(Ty::Struct(fields), field)?;
                for _ in 0..n {
                    self.fields(fields, field)?;
                }
                Ok(())
            }
            Ty::ArrayOf(p) => {
                let n = self.count(Ty::Prim(p), field)?;
                for _ in 0..n {
                    self.prim(p, field, owner)?;
                }
                Ok(())
            }
        }
    }

    /// An array's element count, refused when the elements cannot all fit.
    fn count(&mut self, elem: Ty, field: &'static str) -> WalkResult<u64> {
        let n: u64 = if self.flexible {
            u64::from(self.uvarint(field)?).saturating_sub(1)
        } else {
            let n = i32::from_be_bytes(self.fixed(field)?);
            if n < -1 {
                return self.fail(field, Fault::NegativeLength(i64::from(n)));
            }
            n.max(0) as u64
        };
        let min_each = self.min_size(elem).max(1);
        if n.saturating_mul(min_each as u64) > self.left() as u64 {
            return self.fail(
                field,
                Fault::Count {
                    claimed: n,
                    min_each,
                    left: self.left(),
                },
            );
        }
        Ok(n)
    }

    /// The fewest bytes a value of `ty` takes at this version.
    fn min_size(&self, ty: Ty) -> usize {
        match ty {
            Ty::Prim(Prim::Bool | Prim::I8) => 1,
            Ty::Prim(Prim::I16 | Prim::U16) => 2,
            Ty::Prim(Prim::I32) => 4,
            Ty::Prim(Prim::I64) => 8,
            Ty::Prim(Prim::Uuid) => 16,
            Ty::Prim(Prim::Str) if !self.flexible => 2,
            Ty::Prim(Prim::Bytes) | Ty::Array(_) | Ty::ArrayOf(_) if !self.flexible => 4,
            Ty::Prim(Prim::Str | Prim::Bytes) | Ty::Array(_) | Ty::ArrayOf(_) => 1,
            Ty::OptStruct(_) => 1,
            Ty::Struct(fields) => {
                let own: usize = fields
                    .iter()
                    .filter(|f| f.tag.is_none() && f.in_version(self.version))
                    .map(|f| self.min_size(f.ty))
                    .sum();
                own + usize::from(self.flexible)
            }
        }
    }

    fn fields(&mut self, fields: &'static [Field], owner: &'static str) -> WalkResult<()> {
        for f in fields {
            if f.tag.is_none() && f.in_version(self.version) {
                self.value(f.ty, f.name, owner)?;
            }
        }
        if self.flexible {
            self.tagged(fields, owner)?;
        }
        Ok(())
    }

    fn tagged(&mut self, fields: &'static [Field], owner: &'static str) -> WalkResult<()> {
        let n = self.uvarint(owner)?;
        // Each tagged field takes at least two bytes (tag, size).
        if u64::from(n) * 2 > self.left() as u64 {
            return self.fail(
                owner,
                Fault::Count {
                    claimed: u64::from(n),
                    min_each: 2,
                    left: self.left(),
                },
            );
        }
        for _ in 0..n {
            let tag = self.uvarint(owner)?;
            let size = self.uvarint(owner)?;
            let known = fields
                .iter()
                .find(|f| f.tag == Some(tag) && f.in_version(self.version));
            let Some(known) = known else {
                self.skip(u64::from(size), owner)?;
                continue;
            };
            if u64::from(size) > self.left() as u64 {
                return self.fail(
                    known.name,
                    Fault::Truncated {
                        need: u64::from(size),
                        left: self.left(),
                    },
                );
            }
            // The decoder reads a known tag's content from the buffer itself: it must
            // end exactly where the declared size says, or the decoder would go on
            // from a place this walk never checked.
            let start = self.at;
            let mut inner = Walk {
                b: &self.b[..start + size as usize],
                at: start,
                flexible: self.flexible,
                version: self.version,
                visit: self.visit.take(),
            };
            let walked = inner.value(known.ty, known.name, owner);
            let end = inner.at;
            self.visit = inner.visit.take();
            walked?;
            if end != start + size as usize {
                return self.fail(
                    known.name,
                    Fault::TagSize {
                        tag,
                        declared: size,
                        used: end - start,
                    },
                );
            }
            self.at = end;
        }
        Ok(())
    }
}

/// A message type whose layout is known: the only kind [`super::decode_body`] and
/// friends decode.
pub trait Bounded: Decodable {
    const LAYOUT: &'static Message;
}

#[cfg(test)]
mod tests;
