//! The CDC message format (version 1): one committed shard transaction.
//!
//! All integers are big-endian; `varint` is unsigned LEB128; `str`/`bytes` are a
//! varint length followed by that many bytes (strings are UTF-8).
//!
//! ```text
//! u8      format version (= 1)
//! str     shard id
//! u64     commit LSN      (LSN of the commit record)
//! u64     end LSN         (end of the commit record; what `pg_current_wal_flush_lsn()` returns right after)
//! i64     commit time     (microseconds since the Unix epoch)
//! u64     previous commit LSN published for this shard (0: unknown), for gap detection
//! varint  number of row changes, then per change:
//!   str     table name
//!   u8      op: b'I' insert, b'U' update, b'D' delete
//!   varint  number of columns, then per column:
//!     str     column name
//!     u8      kind: 0 null, 1 text value, 2 unchanged TOASTed value (updates only)
//!     bytes   the value in PostgreSQL text format (kind 1 only)
//! ```
//!
//! Deletes carry the replica identity (the primary key) only.
//!
//! Heartbeats (version 1, core NATS subject `shardline.hb.<shard>`, not stored in
//! the stream) say how far the replicator has read the shard's WAL while no
//! transaction was open:
//!
//! ```text
//! u8      format version (= 1)
//! str     shard id
//! u64     previous commit LSN: the last transaction published (acknowledged) for this shard (0: none)
//! u64     position: every transaction whose commit record ends at or before it is
//!         published (if it was up to the previous commit LSN) or skipped
//! i64     sent at         (microseconds since the Unix epoch)
//! ```

use thiserror::Error;

/// The current format version.
pub const VERSION: u8 = 1;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("unsupported CDC format version {0}")]
    Version(u8),
    #[error("invalid UTF-8 in a string field")]
    Utf8,
    #[error("unknown {what} tag {tag}")]
    Tag { what: &'static str, tag: u8 },
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// A column value in text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Text(String),
    /// An unchanged TOASTed value the update did not send: keep the stored one.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange {
    pub table: String,
    pub op: Op,
    pub columns: Vec<(String, Value)>,
}

impl RowChange {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The text of a non-null column.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        }
    }
}

/// One committed transaction of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub shard: String,
    pub commit_lsn: u64,
    pub end_lsn: u64,
    pub commit_time_micros: i64,
    pub prev_commit_lsn: u64,
    pub changes: Vec<RowChange>,
}

impl Transaction {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.changes.len() * 128);
        out.push(VERSION);
        put_str(&mut out, &self.shard);
        out.extend_from_slice(&self.commit_lsn.to_be_bytes());
        out.extend_from_slice(&self.end_lsn.to_be_bytes());
        out.extend_from_slice(&self.commit_time_micros.to_be_bytes());
        out.extend_from_slice(&self.prev_commit_lsn.to_be_bytes());
        put_varint(&mut out, self.changes.len() as u64);
        for c in &self.changes {
            put_str(&mut out, &c.table);
            out.push(match c.op {
                Op::Insert => b'I',
                Op::Update => b'U',
                Op::Delete => b'D',
            });
            put_varint(&mut out, c.columns.len() as u64);
            for (name, v) in &c.columns {
                put_str(&mut out, name);
                match v {
                    Value::Null => out.push(0),
                    Value::Text(s) => {
                        out.push(1);
                        put_str(&mut out, s);
                    }
                    Value::Unchanged => out.push(2),
                }
            }
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::versioned(buf)?;
        let shard = r.string()?;
        let commit_lsn = r.u64()?;
        let end_lsn = r.u64()?;
        let commit_time_micros = r.u64()? as i64;
        let prev_commit_lsn = r.u64()?;
        let n = r.varint()?;
        let mut changes = Vec::with_capacity(n.min(4096) as usize);
        for _ in 0..n {
            let table = r.string()?;
            let op = match r.u8()? {
                b'I' => Op::Insert,
                b'U' => Op::Update,
                b'D' => Op::Delete,
                tag => return Err(WireError::Tag { what: "op", tag }),
            };
            let nc = r.varint()?;
            let mut columns = Vec::with_capacity(nc.min(256) as usize);
            for _ in 0..nc {
                let name = r.string()?;
                let v = match r.u8()? {
                    0 => Value::Null,
                    1 => Value::Text(r.string()?),
                    2 => Value::Unchanged,
                    tag => return Err(WireError::Tag { what: "value", tag }),
                };
                columns.push((name, v));
            }
            changes.push(RowChange { table, op, columns });
        }
        r.end()?;
        Ok(Transaction {
            shard,
            commit_lsn,
            end_lsn,
            commit_time_micros,
            prev_commit_lsn,
            changes,
        })
    }
}

/// "Read up to `position`; the last published commit is `prev_commit_lsn`."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub shard: String,
    pub prev_commit_lsn: u64,
    pub position: u64,
    pub sent_at_micros: i64,
}

impl Heartbeat {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.shard.len());
        out.push(VERSION);
        put_str(&mut out, &self.shard);
        out.extend_from_slice(&self.prev_commit_lsn.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.sent_at_micros.to_be_bytes());
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::versioned(buf)?;
        let hb = Heartbeat {
            shard: r.string()?,
            prev_commit_lsn: r.u64()?,
            position: r.u64()?,
            sent_at_micros: r.u64()? as i64,
        };
        r.end()?;
        Ok(hb)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader past the format version byte (refusing other versions).
    fn versioned(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader { buf };
        match r.u8()? {
            VERSION => Ok(r),
            v => Err(WireError::Version(v)),
        }
    }

    /// Nothing may follow the message.
    fn end(&self) -> Result<(), WireError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::Truncated)
    }

    fn string(&mut self) -> Result<String, WireError> {
        let n = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Utf8)
    }
}

/// `X/Y` (hex halves) as a number.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
        return None;
    }
    Some((hi << 32) | lo)
}

/// A number as `X/Y`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = Transaction {
            shard: "s1".into(),
            commit_lsn: 0x1_0000_0010,
            end_lsn: 0x1_0000_0040,
            commit_time_micros: 1_700_000_000_000_000,
            prev_commit_lsn: 7,
            changes: vec![
                RowChange {
                    table: "payments".into(),
                    op: Op::Update,
                    columns: vec![
                        ("a".into(), Value::Text("x".repeat(300))),
                        ("b".into(), Value::Null),
                        ("c".into(), Value::Unchanged),
                    ],
                },
                RowChange {
                    table: "merchants".into(),
                    op: Op::Delete,
                    columns: vec![],
                },
            ],
        };
        let b = t.encode();
        assert_eq!(Transaction::decode(&b), Ok(t));
        assert_eq!(
            Transaction::decode(&b[..b.len() - 1]),
            Err(WireError::Truncated)
        );
        let mut bad = b.clone();
        bad[0] = 9;
        assert_eq!(Transaction::decode(&bad), Err(WireError::Version(9)));
    }

    #[test]
    fn heartbeats_round_trip() {
        let h = Heartbeat {
            shard: "s2".into(),
            prev_commit_lsn: 0x1_0000_0010,
            position: 0x1_0000_0400,
            sent_at_micros: 1_700_000_000_000_001,
        };
        let b = h.encode();
        assert_eq!(Heartbeat::decode(&b), Ok(h));
        assert_eq!(
            Heartbeat::decode(&b[..b.len() - 1]),
            Err(WireError::Truncated)
        );
        let mut long = b.clone();
        long.push(0);
        assert_eq!(Heartbeat::decode(&long), Err(WireError::Trailing(1)));
    }

    #[test]
    fn lsns() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert!(parse_lsn("16B3748").is_none());
        assert!(parse_lsn("x/1").is_none());
        assert_eq!(format_lsn(0x1_0000_00AB), "1/AB");
        assert!(parse_lsn("0/FF") < parse_lsn("1/0"));
    }
}
