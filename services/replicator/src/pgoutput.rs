//! A decoder for the pgoutput logical replication messages (protocol version 1)
//! that `pgwire-replication` hands over as raw `XLogData` payloads: Relation,
//! Origin, Insert, Update, Delete, Truncate and Type. Begin and Commit are parsed
//! by `pgwire-replication` itself.

use std::collections::HashMap;

use thiserror::Error;

use crate::wire::{Op, RowChange, Value};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PgOutputError {
    #[error("pgoutput message truncated")]
    Truncated,
    #[error("pgoutput string is not NUL-terminated UTF-8")]
    BadString,
    #[error("unknown pgoutput message tag {0:?}")]
    UnknownTag(char),
    #[error("unexpected tuple tag {0:?}")]
    TupleTag(char),
    #[error("change for relation {0} before its Relation message")]
    UnknownRelation(u32),
    #[error("tuple has {got} columns, relation {rel} has {want}")]
    ColumnCount {
        rel: String,
        got: usize,
        want: usize,
    },
    #[error("binary tuple values are not supported")]
    Binary,
}

/// A relation as described by a Relation message.
#[derive(Debug, Clone)]
pub struct Relation {
    pub namespace: String,
    pub name: String,
    pub columns: Vec<String>,
}

/// What one pgoutput message means to the replicator.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Relation or Type metadata (cached by the decoder).
    Meta,
    /// The transaction was applied under a replication origin.
    Origin(String),
    Change(RowChange),
    /// Truncate of these relations (not replicated to edges; logged).
    Truncate(Vec<String>),
}

/// Stateful decoder: remembers Relation messages (sent before the first change of
/// a relation on each connection, and again after a schema change).
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn decode(&mut self, data: &[u8]) -> Result<Decoded, PgOutputError> {
        let mut r = Cursor { buf: data };
        let tag = r.u8()?;
        match tag {
            b'R' => {
                let oid = r.u32()?;
                let namespace = r.cstr()?;
                let name = r.cstr()?;
                let _identity = r.u8()?;
                let n = r.u16()?;
                let mut columns = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let _flags = r.u8()?;
                    columns.push(r.cstr()?);
                    let _type_oid = r.u32()?;
                    let _typmod = r.u32()?;
                }
                self.relations.insert(
                    oid,
                    Relation {
                        namespace,
                        name,
                        columns,
                    },
                );
                Ok(Decoded::Meta)
            }
            b'Y' => Ok(Decoded::Meta),
            b'O' => {
                let _lsn = r.u64()?;
                Ok(Decoded::Origin(r.cstr()?))
            }
            b'I' => {
                let rel = self.relation(r.u32()?)?;
                match r.u8()? {
                    b'N' => {}
                    t => return Err(PgOutputError::TupleTag(char::from(t))),
                }
                let columns = tuple(&mut r, rel)?;
                Ok(Decoded::Change(RowChange {
                    table: rel.name.clone(),
                    op: Op::Insert,
                    columns,
                }))
            }
            b'U' => {
                let rel = self.relation(r.u32()?)?;
                let mut t = r.u8()?;
                if t == b'K' || t == b'O' {
                    let _old = tuple(&mut r, rel)?;
                    t = r.u8()?;
                }
                if t != b'N' {
                    return Err(PgOutputError::TupleTag(char::from(t)));
                }
                let columns = tuple(&mut r, rel)?;
                Ok(Decoded::Change(RowChange {
                    table: rel.name.clone(),
                    op: Op::Update,
                    columns,
                }))
            }
            b'D' => {
                let rel = self.relation(r.u32()?)?;
                let t = r.u8()?;
                if t != b'K' && t != b'O' {
                    return Err(PgOutputError::TupleTag(char::from(t)));
                }
                // A key tuple sends NULL for non-key columns: keep only the values sent.
                let columns = tuple(&mut r, rel)?
                    .into_iter()
                    .filter(|(_, v)| *v != Value::Null)
                    .collect();
                Ok(Decoded::Change(RowChange {
                    table: rel.name.clone(),
                    op: Op::Delete,
                    columns,
                }))
            }
            b'T' => {
                let n = r.u32()?;
                let _options = r.u8()?;
                let mut names = Vec::new();
                for _ in 0..n {
                    let oid = r.u32()?;
                    names.push(
                        self.relations
                            .get(&oid)
                            .map_or_else(|| oid.to_string(), |rel| rel.name.clone()),
                    );
                }
                Ok(Decoded::Truncate(names))
            }
            other => Err(PgOutputError::UnknownTag(char::from(other))),
        }
    }

    fn relation(&self, oid: u32) -> Result<&Relation, PgOutputError> {
        self.relations
            .get(&oid)
            .ok_or(PgOutputError::UnknownRelation(oid))
    }
}

fn tuple(r: &mut Cursor<'_>, rel: &Relation) -> Result<Vec<(String, Value)>, PgOutputError> {
    let n = usize::from(r.u16()?);
    if n != rel.columns.len() {
        return Err(PgOutputError::ColumnCount {
            rel: format!("{}.{}", rel.namespace, rel.name),
            got: n,
            want: rel.columns.len(),
        });
    }
    let mut out = Vec::with_capacity(n);
    for name in &rel.columns {
        let v = match r.u8()? {
            b'n' => Value::Null,
            b'u' => Value::Unchanged,
            b't' => {
                let len = r.u32()? as usize;
                let b = r.take(len)?;
                Value::Text(
                    std::str::from_utf8(b)
                        .map_err(|_| PgOutputError::BadString)?
                        .to_owned(),
                )
            }
            b'b' => return Err(PgOutputError::Binary),
            t => return Err(PgOutputError::TupleTag(char::from(t))),
        };
        out.push((name.clone(), v));
    }
    Ok(out)
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PgOutputError> {
        if self.buf.len() < n {
            return Err(PgOutputError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, PgOutputError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PgOutputError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PgOutputError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, PgOutputError> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok((hi << 32) | lo)
    }
    fn cstr(&mut self) -> Result<String, PgOutputError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(PgOutputError::BadString)?;
        let s = std::str::from_utf8(&self.buf[..end])
            .map_err(|_| PgOutputError::BadString)?
            .to_owned();
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation_msg() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&42u32.to_be_bytes());
        m.extend_from_slice(b"public\0merchants\0");
        m.push(b'd');
        m.extend_from_slice(&2u16.to_be_bytes());
        for name in ["id", "name"] {
            m.push(1);
            m.extend_from_slice(name.as_bytes());
            m.push(0);
            m.extend_from_slice(&25u32.to_be_bytes());
            m.extend_from_slice(&(-1i32).to_be_bytes());
        }
        m
    }

    #[test]
    fn decodes_relation_insert_delete_origin() {
        let mut d = Decoder::new();
        assert_eq!(d.decode(&relation_msg()), Ok(Decoded::Meta));
        let mut ins = vec![b'I'];
        ins.extend_from_slice(&42u32.to_be_bytes());
        ins.push(b'N');
        ins.extend_from_slice(&2u16.to_be_bytes());
        ins.push(b't');
        ins.extend_from_slice(&1u32.to_be_bytes());
        ins.push(b'7');
        ins.push(b'n');
        let Ok(Decoded::Change(c)) = d.decode(&ins) else {
            panic!("not a change");
        };
        assert_eq!(c.table, "merchants");
        assert_eq!(c.op, Op::Insert);
        assert_eq!(c.text("id"), Some("7"));
        assert_eq!(c.get("name"), Some(&Value::Null));
        let mut del = vec![b'D'];
        del.extend_from_slice(&42u32.to_be_bytes());
        del.push(b'K');
        del.extend_from_slice(&ins[6..]);
        let Ok(Decoded::Change(c)) = d.decode(&del) else {
            panic!("not a change");
        };
        assert_eq!(c.op, Op::Delete);
        assert_eq!(c.columns.len(), 1);
        let mut o = vec![b'O'];
        o.extend_from_slice(&5u64.to_be_bytes());
        o.extend_from_slice(b"pg_1\0");
        assert_eq!(d.decode(&o), Ok(Decoded::Origin("pg_1".into())));
        let mut unknown = ins.clone();
        unknown[4] = 9;
        assert!(matches!(
            d.decode(&unknown),
            Err(PgOutputError::UnknownRelation(_))
        ));
        assert!(d.decode(&ins[..8]).is_err());
    }
}
