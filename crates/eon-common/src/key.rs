//! Primary keys: an order-preserving byte encoding, and the hash that maps a
//! key to its shard.
//!
//! A key is the concatenation of its columns' encodings, each built so that
//! comparing encoded bytes compares the values (memcomparable encoding):
//!
//! | value            | bytes                                                   |
//! |------------------|---------------------------------------------------------|
//! | integer, date, timestamp, time | sign bit flipped, big-endian              |
//! | interval         | its span in ns (30-day months) as i128, sign flipped  |
//! | float            | IEEE bits, all flipped if negative else sign flipped   |
//! | numeric          | i128, sign bit flipped, big-endian                      |
//! | bool             | 0 or 1                                                  |
//! | text, bytea      | bytes with 0x00 escaped as 0x00 0xFF, then 0x00 0x01    |
//!
//! Because data engines keep rows ordered by encoded key, a shard's rows come
//! out in primary key order. The shard of a key is `xxh3(key) % shard_count`:
//! both query engines (to route) and data engines (to check) call
//! [`shard_of`] (on the encoding of the table's distribution key, a leading part
//! of its primary key: `TableDef::shard_of_key`), so they cannot disagree.

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result, sqlstate};
use crate::types::SqlType;
use crate::value::{Value, column_values};

pub type Key = Vec<u8>;

/// Append the encoding of one key column's value.
pub fn encode_value(out: &mut Vec<u8>, v: &Value) -> Result<()> {
    match v {
        Value::Null => {
            return Err(Error::user(
                sqlstate::NOT_NULL_VIOLATION,
                "null value in primary key column",
            ));
        }
        Value::Bool(b) => out.push(*b as u8),
        Value::Int(i) => out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes()),
        Value::Date(d) => out.extend_from_slice(&((*d as u32) ^ (1 << 31)).to_be_bytes()),
        // An array: each element after a 1 (a NULL element: a 2, after
        // every value, as PostgreSQL sorts them), then a 0 (so a prefix
        // sorts first, as PostgreSQL compares arrays element by element).
        Value::List(xs) => {
            for x in xs {
                if x.is_null() {
                    out.push(2);
                } else {
                    out.push(1);
                    encode_value(out, x)?;
                }
            }
            out.push(0)
        }
        Value::Time(t) => out.extend_from_slice(&((*t as u64) ^ (1 << 63)).to_be_bytes()),
        // PostgreSQL orders (and equates) intervals by their span with a
        // month of 30 days: '1 mon' = '30 days' is true, so they are one key.
        Value::Interval(m, d, ns) => {
            let span = (*m as i128 * 30 + *d as i128) * 86_400_000_000_000 + *ns as i128;
            out.extend_from_slice(&((span as u128) ^ (1 << 127)).to_be_bytes())
        }
        Value::Timestamp(t) => out.extend_from_slice(&((*t as u64) ^ (1 << 63)).to_be_bytes()),
        Value::Float(f) => {
            // -0.0 and 0.0 are equal in SQL, so they must encode the same.
            let f = if *f == 0.0 { 0.0 } else { *f };
            let bits = f.to_bits();
            let bits = if bits >> 63 == 1 {
                !bits
            } else {
                bits ^ (1 << 63)
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Value::Decimal(d) => out.extend_from_slice(&((*d as u128) ^ (1 << 127)).to_be_bytes()),
        Value::Text(s) => encode_bytes(out, s.as_bytes()),
        Value::Bytes(b) => encode_bytes(out, b),
    }
    Ok(())
}

fn encode_bytes(out: &mut Vec<u8>, b: &[u8]) {
    for &byte in b {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Encode a whole key from its column values.
pub fn encode_key<'a>(values: impl IntoIterator<Item = &'a Value>) -> Result<Key> {
    let mut out = Vec::with_capacity(16);
    for v in values {
        encode_value(&mut out, v)?;
    }
    Ok(out)
}

/// Encode the key of each row of a batch, from the key columns' arrays.
pub fn encode_keys(key_columns: &[ArrayRef]) -> Result<Vec<Key>> {
    let n = key_columns.first().map(|c| c.len()).unwrap_or(0);
    let mut keys = vec![Vec::with_capacity(16); n];
    for col in key_columns {
        for (key, v) in keys.iter_mut().zip(column_values(col)?) {
            encode_value(key, &v)?;
        }
    }
    Ok(keys)
}

/// Encode the keys of a batch that holds exactly the key columns, in order.
pub fn encode_batch_keys(batch: &RecordBatch) -> Result<Vec<Key>> {
    encode_keys(batch.columns())
}

/// Whether values of types `a` and `b` encode alike: equal values, equal
/// bytes (so equal distribution keys land on the same shard).
pub fn same_encoding(a: SqlType, b: SqlType) -> bool {
    use SqlType::*;
    let class = |t: SqlType| match t {
        Int2 | Int4 | Int8 => Some(0),
        Text | Varchar { .. } | Char { .. } => Some(1),
        Bytea => Some(2),
        Date => Some(3),
        Timestamp => Some(4),
        TimestampTz => Some(5),
        Bool => Some(6),
        _ => None,
    };
    match (a, b) {
        // A numeric's encoding is its value at the column's scale.
        (Numeric { scale: x, .. }, Numeric { scale: y, .. }) => x == y,
        _ => class(a).is_some() && class(a) == class(b),
    }
}

/// Whether a column of type `t` may be in a distribution key: one whose
/// encoding [`prefix_len`] can step over.
pub fn distributable(t: SqlType) -> bool {
    same_encoding(t, t)
}

/// The length of the encoding of the leading columns of `key`, of types
/// `types` (each [`distributable`]).
pub fn prefix_len(key: &[u8], types: impl IntoIterator<Item = SqlType>) -> usize {
    use SqlType::*;
    let mut at = 0;
    for t in types {
        at += match t {
            Bool => 1,
            Date => 4,
            Int2 | Int4 | Int8 | Timestamp | TimestampTz => 8,
            Numeric { .. } => 16,
            // Escaped bytes up to the 0x00 0x01 terminator.
            _ => {
                let mut i = at;
                while i + 1 < key.len() && !(key[i] == 0 && key[i + 1] == 1) {
                    i += if key[i] == 0 { 2 } else { 1 };
                }
                i + 2 - at
            }
        };
    }
    at.min(key.len())
}

/// The shard a key belongs to.
pub fn shard_of(key: &[u8], shard_count: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % shard_count.max(1) as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: Value) -> Key {
        encode_key([&v]).unwrap()
    }

    #[test]
    fn a_distribution_key_is_found_at_the_front_of_the_whole_key() {
        let text = |s: &str| Value::Text(s.to_string());
        for (lead, types) in [
            (vec![Value::Int(7)], vec![SqlType::Int8]),
            (vec![text("a\0b")], vec![SqlType::Text]),
            (
                vec![Value::Date(3), text(""), Value::Bool(true)],
                vec![
                    SqlType::Date,
                    SqlType::Varchar { max_length: None },
                    SqlType::Bool,
                ],
            ),
        ] {
            let prefix = encode_key(&lead).unwrap();
            let mut whole = lead.clone();
            whole.push(text("rest\0"));
            whole.push(Value::Int(-1));
            let key = encode_key(&whole).unwrap();
            assert_eq!(prefix_len(&key, types), prefix.len(), "{lead:?}");
        }
        assert!(same_encoding(SqlType::Int4, SqlType::Int8));
        assert!(!same_encoding(SqlType::Int4, SqlType::Text));
        let numeric = |scale| SqlType::Numeric {
            precision: 10,
            scale,
        };
        assert!(same_encoding(numeric(2), numeric(2)));
        assert!(!same_encoding(numeric(2), numeric(3)));
        assert!(!distributable(SqlType::Float8));
    }

    #[test]
    fn encoding_preserves_order() {
        let ints = [i64::MIN, -100, -1, 0, 1, 7, i64::MAX];
        for w in ints.windows(2) {
            assert!(enc(Value::Int(w[0])) < enc(Value::Int(w[1])));
        }
        let floats = [f64::NEG_INFINITY, -2.5, -0.0, 0.5, 3.0, f64::INFINITY];
        for w in floats.windows(2) {
            assert!(enc(Value::Float(w[0])) <= enc(Value::Float(w[1])), "{w:?}");
        }
        assert_eq!(enc(Value::Float(-0.0)), enc(Value::Float(0.0)));
        let texts = ["", "\0", "\0a", "a", "a\0", "ab", "b"];
        for w in texts.windows(2) {
            assert!(
                enc(Value::Text(w[0].into())) < enc(Value::Text(w[1].into())),
                "{w:?}"
            );
        }
        let decimals = [-1000i128, -1, 0, 5, 1 << 100];
        for w in decimals.windows(2) {
            assert!(enc(Value::Decimal(w[0])) < enc(Value::Decimal(w[1])));
        }
    }

    #[test]
    fn composite_keys_order_by_first_column_first() {
        let k = |a: &str, b: i64| encode_key([&Value::Text(a.into()), &Value::Int(b)]).unwrap();
        assert!(k("a", 100) < k("ab", 0));
        assert!(k("a", 1) < k("a", 2));
    }

    #[test]
    fn null_keys_are_rejected() {
        let e = encode_key([&Value::Null]).unwrap_err();
        assert_eq!(e.code, sqlstate::NOT_NULL_VIOLATION);
    }

    #[test]
    fn shards_spread_keys() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_of(&enc(Value::Int(i)), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800 && c < 1200), "{counts:?}");
    }
}
