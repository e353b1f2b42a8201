//! Columnar segments: committed row versions of one shard, on disk.
//!
//! A data engine keeps recent writes in memory, in each shard's B-tree of
//! [`Versions`](crate::mvcc::Versions) — the row-oriented *delta*. When the
//! engine's memory passes its limit, the committed versions of the biggest
//! shards move to a *segment*: an Arrow IPC file whose columns are the
//! encoded key, the commit timestamp, a deletion flag, and the table's
//! columns. Intents stay in memory.
//!
//! ```text
//!   _key      _ts   _deleted  id   name
//!   0x80..01  100   false     1    'ann'      ← rows sorted by key, then timestamp
//!   0x80..01  250   false     1    'anne'
//!   0x80..02  120   true      ∅    ∅          ← a deletion at 120
//! ```
//!
//! A segment never changes once written; a shard has a list of them, oldest
//! first. A row version lives in exactly one place — the delta or one
//! segment — except briefly after a restart, when the log replays versions
//! a segment already holds (same key, same timestamp, same value), so
//! readers pick, for each key, the newest version at or below their
//! snapshot across all places, which is right either way.
//!
//! Each batch of a segment holds whole keys (a key's versions never span
//! two batches). In memory a segment keeps only the first key of each batch
//! (to find the batch a key is in) and a Bloom filter of its keys (so a
//! lookup of a key the segment lacks reads nothing from disk). Scans read
//! batches in order with the projection they need; lookups read one batch.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use eon_common::key::Key;
use eon_common::value::{Row, Value, batch_from_rows, column_values};

use crate::mvcc::{Ts, Version};
use crate::{Error, Result};

/// Rows per batch (a batch is cut only between keys).
const BATCH_ROWS: usize = 4096;
/// Leading columns before the table's.
const META_COLUMNS: usize = 3;

/// One row version read from a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegVersion {
    pub ts: Ts,
    /// None: deleted at `ts`.
    pub value: Option<Row>,
}

/// An immutable file of committed versions of one shard.
pub struct Segment {
    pub path: PathBuf,
    /// Higher is newer.
    pub seq: u64,
    pub rows: u64,
    pub min_ts: Ts,
    pub max_ts: Ts,
    /// Number of table columns.
    pub columns: usize,
    /// The table's schema as the segment stores it.
    pub table_schema: SchemaRef,
    /// First key of each batch.
    index: Vec<Key>,
    bloom: Bloom,
    /// Kept open for lookups.
    reader: Mutex<FileReader<File>>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Segment({}, {} rows)", self.path.display(), self.rows)
    }
}

/// The file schema for a table schema: key, timestamp, deletion flag, then
/// the table's columns (nullable: deletions have no values).
fn file_schema(table: &Schema) -> SchemaRef {
    let mut fields = vec![
        Field::new("_key", DataType::Binary, false),
        Field::new("_ts", DataType::UInt64, false),
        Field::new("_deleted", DataType::Boolean, false),
    ];
    fields.extend(
        table
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true)),
    );
    Arc::new(Schema::new(fields))
}

impl Segment {
    /// Write a new segment file from a stream of keys in order (each with
    /// its committed versions, owned or borrowed), a batch in memory at a
    /// time: written to a temporary name, synced, renamed.
    pub fn write_iter<K: AsRef<[u8]>, V: AsRef<[Version]>>(
        path: &Path,
        seq: u64,
        table: &Schema,
        entries: impl Iterator<Item = Result<(K, V)>>,
    ) -> Result<Segment> {
        let schema = file_schema(table);
        let ncols = table.fields().len();
        let values_schema =
            Arc::new(schema.project(&(META_COLUMNS..META_COLUMNS + ncols).collect::<Vec<_>>())?);
        let tmp = path.with_extension("tmp");
        let file = File::create(&tmp)?;
        let mut w = FileWriter::try_new(BufWriter::new(file), &schema)?;
        let mut batch_keys: Vec<Key> = Vec::new();
        let mut batch_ts: Vec<u64> = Vec::new();
        let mut batch_del: Vec<bool> = Vec::new();
        let mut batch_rows: Vec<Row> = Vec::new();
        let empty: Row = vec![Value::Null; ncols];
        let flush = |w: &mut FileWriter<BufWriter<File>>,
                     keys: &mut Vec<Key>,
                     ts: &mut Vec<u64>,
                     del: &mut Vec<bool>,
                     rows: &mut Vec<Row>|
         -> Result<()> {
            if keys.is_empty() {
                return Ok(());
            }
            let refs: Vec<&Row> = rows.iter().collect();
            let values = batch_from_rows(&values_schema, &(0..ncols).collect::<Vec<_>>(), &refs)?;
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(BinaryArray::from_iter_values(std::mem::take(keys))),
                Arc::new(UInt64Array::from(std::mem::take(ts))),
                Arc::new(BooleanArray::from(std::mem::take(del))),
            ];
            columns.extend(values.columns().iter().cloned());
            rows.clear();
            w.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
            Ok(())
        };
        for entry in entries {
            let (key, versions) = entry?;
            if batch_keys.len() >= BATCH_ROWS {
                flush(
                    &mut w,
                    &mut batch_keys,
                    &mut batch_ts,
                    &mut batch_del,
                    &mut batch_rows,
                )?;
            }
            for v in versions.as_ref() {
                batch_keys.push(key.as_ref().to_vec());
                batch_ts.push(v.ts);
                batch_del.push(v.value.is_none());
                batch_rows.push(v.value.clone().unwrap_or_else(|| empty.clone()));
            }
        }
        flush(
            &mut w,
            &mut batch_keys,
            &mut batch_ts,
            &mut batch_del,
            &mut batch_rows,
        )?;
        w.finish()?;
        let file = w
            .into_inner()?
            .into_inner()
            .map_err(|e| Error::Io(e.into_error()))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        Segment::open(path, seq)
    }

    /// Open a segment file: read its keys once to build the batch index and
    /// the Bloom filter.
    pub fn open(path: &Path, seq: u64) -> Result<Segment> {
        let keys_only = FileReader::try_new(File::open(path)?, Some(vec![0, 1]))?;
        let file_fields = keys_only.schema().fields().len();
        let columns = file_fields.saturating_sub(META_COLUMNS);
        let table_schema = Arc::new(
            keys_only
                .schema()
                .project(&(META_COLUMNS..file_fields).collect::<Vec<_>>())?,
        );
        let mut index = Vec::new();
        let mut all: Vec<Key> = Vec::new();
        let (mut rows, mut min_ts, mut max_ts) = (0u64, u64::MAX, 0u64);
        for batch in keys_only {
            let batch = batch?;
            let keys = batch.column(0).as_binary::<i32>();
            let ts = batch.column(1).as_primitive::<UInt64Type>();
            if keys.is_empty() {
                continue;
            }
            index.push(keys.value(0).to_vec());
            for i in 0..keys.len() {
                if i == 0 || keys.value(i) != keys.value(i - 1) {
                    all.push(keys.value(i).to_vec());
                }
                min_ts = min_ts.min(ts.value(i));
                max_ts = max_ts.max(ts.value(i));
            }
            rows += keys.len() as u64;
        }
        let mut bloom = Bloom::new(all.len());
        for k in &all {
            bloom.insert(k);
        }
        let reader = FileReader::try_new(File::open(path)?, None)?;
        Ok(Segment {
            path: path.to_path_buf(),
            seq,
            rows,
            min_ts: if rows == 0 { 0 } else { min_ts },
            max_ts,
            columns,
            table_schema,
            index,
            bloom,
            reader: Mutex::new(reader),
        })
    }

    /// Number of batches.
    pub fn batches(&self) -> usize {
        self.index.len()
    }

    /// The batch that would hold `key` (the last whose first key is <= it).
    fn batch_of(&self, key: &[u8]) -> usize {
        self.index
            .partition_point(|first| first.as_slice() <= key)
            .saturating_sub(1)
    }

    /// Whether the segment may hold `key` (false: it certainly does not).
    pub fn may_contain(&self, key: &[u8]) -> bool {
        !self.index.is_empty() && self.bloom.contains(key)
    }

    /// The versions of `key` in this segment (reads one batch, or nothing
    /// when the Bloom filter rules the key out).
    pub fn lookup(&self, key: &[u8]) -> Result<Vec<SegVersion>> {
        if !self.may_contain(key) {
            return Ok(vec![]);
        }
        let b = self.batch_of(key);
        let batch = {
            let mut r = self.reader.lock().unwrap();
            r.set_index(b)?;
            r.next().transpose()?.ok_or_else(|| {
                Error::Corrupt(format!("{}: batch {b} missing", self.path.display()))
            })?
        };
        let part = SegBatch::new(batch, None, self.columns)?;
        let start = part.keys.partition_point(|k| k.as_slice() < key);
        let mut out = Vec::new();
        for i in start..part.keys.len() {
            if part.keys[i] != key {
                break;
            }
            out.push(part.version(i));
        }
        Ok(out)
    }

    /// Read batch `b` with the table columns `projection` (others are left
    /// null in the rows).
    pub fn read_batch(&self, b: usize, projection: &[usize]) -> Result<SegBatch> {
        let cols: Vec<usize> = (0..META_COLUMNS)
            .chain(projection.iter().map(|c| c + META_COLUMNS))
            .collect();
        let mut r = FileReader::try_new(File::open(&self.path)?, Some(cols))?;
        r.set_index(b)?;
        let batch = r
            .next()
            .transpose()?
            .ok_or_else(|| Error::Corrupt(format!("{}: batch {b} missing", self.path.display())))?;
        SegBatch::new(batch, Some(projection), self.columns)
    }

    /// A cursor over the segment's rows from `from` on (inclusive).
    pub fn cursor(self: &Arc<Self>, from: Option<&[u8]>, projection: &[usize]) -> SegCursor {
        let batch = from.map(|k| self.batch_of(k)).unwrap_or(0);
        SegCursor {
            seg: self.clone(),
            projection: projection.to_vec(),
            next_batch: batch,
            current: None,
            pos: 0,
            from: from.map(|k| k.to_vec()),
            read: 0,
        }
    }
}

/// One decoded batch of a segment.
pub struct SegBatch {
    pub keys: Vec<Key>,
    ts: Vec<u64>,
    deleted: Vec<bool>,
    rows: Vec<Row>,
}

impl SegBatch {
    fn new(batch: RecordBatch, projection: Option<&[usize]>, ncols: usize) -> Result<SegBatch> {
        let keys = batch.column(0).as_binary::<i32>();
        let keys: Vec<Key> = (0..keys.len()).map(|i| keys.value(i).to_vec()).collect();
        let ts = batch
            .column(1)
            .as_primitive::<UInt64Type>()
            .values()
            .to_vec();
        let deleted: Vec<bool> = batch
            .column(2)
            .as_boolean()
            .iter()
            .map(|d| d == Some(true))
            .collect();
        let mut rows: Vec<Row> = vec![vec![Value::Null; ncols]; batch.num_rows()];
        let table_cols: Vec<usize> = match projection {
            Some(p) => p.to_vec(),
            None => (0..ncols).collect(),
        };
        for (i, &c) in table_cols.iter().enumerate() {
            for (r, v) in column_values(batch.column(META_COLUMNS + i))?
                .into_iter()
                .enumerate()
            {
                rows[r][c] = v;
            }
        }
        Ok(SegBatch {
            keys,
            ts,
            deleted,
            rows,
        })
    }

    fn version(&self, i: usize) -> SegVersion {
        SegVersion {
            ts: self.ts[i],
            value: (!self.deleted[i]).then(|| self.rows[i].clone()),
        }
    }
}

/// Walks a segment's rows in key order, a key (all its versions) at a time.
pub struct SegCursor {
    seg: Arc<Segment>,
    projection: Vec<usize>,
    next_batch: usize,
    current: Option<SegBatch>,
    pos: usize,
    from: Option<Key>,
    /// Rows read from disk so far.
    pub read: u64,
}

impl SegCursor {
    /// Make sure a row is loaded; false at the end.
    fn fill(&mut self) -> Result<bool> {
        loop {
            if let Some(b) = &self.current {
                if self.pos < b.keys.len() {
                    return Ok(true);
                }
            }
            if self.next_batch >= self.seg.batches() {
                return Ok(false);
            }
            let b = self.seg.read_batch(self.next_batch, &self.projection)?;
            self.read += b.keys.len() as u64;
            self.next_batch += 1;
            self.pos = match self.from.take() {
                Some(k) => b.keys.partition_point(|x| *x < k),
                None => 0,
            };
            self.current = Some(b);
        }
    }

    /// The next key, without consuming it.
    pub fn peek(&mut self) -> Result<Option<&Key>> {
        if !self.fill()? {
            return Ok(None);
        }
        let b = self.current.as_ref().unwrap();
        Ok(Some(&b.keys[self.pos]))
    }

    /// Consume the next key: its versions.
    pub fn take(&mut self) -> Result<Option<(Key, Vec<SegVersion>)>> {
        if !self.fill()? {
            return Ok(None);
        }
        let b = self.current.as_ref().unwrap();
        let key = b.keys[self.pos].clone();
        let mut out = Vec::new();
        while self.pos < b.keys.len() && b.keys[self.pos] == key {
            out.push(b.version(self.pos));
            self.pos += 1;
        }
        Ok(Some((key, out)))
    }
}

/// A Bloom filter over keys: ~10 bits per key, 7 probes (about 1% false
/// positives). Hand-written (30 lines) on the xxh3 hash the key module
/// already uses, rather than another dependency for it.
struct Bloom {
    bits: Vec<u64>,
}

impl Bloom {
    const PROBES: u64 = 7;

    fn new(keys: usize) -> Bloom {
        Bloom {
            bits: vec![0; (keys * 10 / 64).max(1) + 1],
        }
    }

    fn probes(&self, key: &[u8]) -> impl Iterator<Item = usize> + '_ {
        let h = xxhash_rust::xxh3::xxh3_64(key);
        let (h1, h2) = (h & 0xFFFF_FFFF, (h >> 32) | 1);
        let n = (self.bits.len() * 64) as u64;
        (0..Self::PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % n) as usize)
    }

    fn insert(&mut self, key: &[u8]) {
        let probes: Vec<usize> = self.probes(key).collect();
        for p in probes {
            self.bits[p / 64] |= 1 << (p % 64);
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.probes(key)
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn k(i: i64) -> Key {
        eon_common::key::encode_key([&Value::Int(i)]).unwrap()
    }

    #[test]
    fn write_open_lookup_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let table = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]);
        let row = |i: i64, s: &str| Some(vec![Value::Int(i), Value::Text(s.into())]);
        let mut entries = Vec::new();
        for i in 0..10_000i64 {
            let mut versions = vec![Version {
                ts: 10,
                value: row(i, "a"),
            }];
            if i % 3 == 0 {
                versions.push(Version {
                    ts: 20,
                    value: row(i, "b"),
                });
            }
            if i % 5 == 0 {
                versions.push(Version {
                    ts: 30,
                    value: None,
                });
            }
            entries.push((k(i), versions));
        }
        let seg = Arc::new(
            Segment::write_iter(
                &dir.path().join("s.arrow"),
                1,
                &table,
                entries.iter().map(|(k, v)| Ok((k, v))),
            )
            .unwrap(),
        );
        let seg2 = Segment::open(&seg.path, 1).unwrap();
        assert_eq!(seg.rows, seg2.rows);
        assert_eq!((seg.min_ts, seg.max_ts), (10, 30));
        assert!(seg.batches() > 2);
        let got = seg.lookup(&k(15)).unwrap();
        assert_eq!(
            got,
            vec![
                SegVersion {
                    ts: 10,
                    value: row(15, "a")
                },
                SegVersion {
                    ts: 20,
                    value: row(15, "b")
                },
                SegVersion {
                    ts: 30,
                    value: None
                },
            ]
        );
        assert!(seg.lookup(&k(20_000)).unwrap().is_empty());
        // A cursor from the middle, reading only column 1 (id stays null).
        let mut c = seg.cursor(Some(&k(4097)), &[1]);
        let (key, versions) = c.take().unwrap().unwrap();
        assert_eq!(key, k(4097));
        assert_eq!(
            versions[0].value,
            Some(vec![Value::Null, Value::Text("a".into())])
        );
        let mut n = 1;
        while c.take().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 10_000 - 4097);
    }
}
