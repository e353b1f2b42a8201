//! The write-ahead log.
//!
//! A data engine acknowledges a write only after the write's log record is on
//! disk (`fdatasync`). Many writers share one sync: a dedicated thread takes
//! every record queued while the previous sync ran, appends them all, syncs
//! once and wakes all their writers (group commit). Records whose loss a
//! later step detects (staged writes of a transaction: see
//! `Store::write`) are appended without waiting for a sync; any later sync
//! makes them durable with it.
//!
//! The log is a sequence of segment files `wal/<seq>.log`. Each record is
//! framed as
//!
//! ```text
//!   [ length: u32 LE ][ crc32 of payload: u32 LE ][ payload: postcard bytes ]
//! ```
//!
//! so a torn write at the tail (a crash in mid-append) is detected on replay
//! and cut off; everything before it was acknowledged, everything from it on
//! was not. A checkpoint starts a new segment; segments older than the newest
//! durable checkpoint are deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Frame `payload` as a log record.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Read framed records until the end or the first damaged one. Returns the
/// records and the byte offset where the valid prefix ends.
pub fn read_frames<T: DeserializeOwned>(path: &Path) -> Result<(Vec<T>, u64)> {
    let mut r = BufReader::new(File::open(path)?);
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().unwrap());
        let mut payload = vec![0u8; len];
        if r.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            break;
        }
        match postcard::from_bytes(&payload) {
            Ok(rec) => out.push(rec),
            Err(_) => break,
        }
        offset += 8 + len as u64;
    }
    Ok((out, offset))
}

struct Append {
    bytes: Vec<u8>,
    /// Wait for the disk (fdatasync) before answering.
    sync: bool,
    done: oneshot::Sender<std::io::Result<()>>,
}

enum Command {
    Append(Append),
    /// Close the current segment and continue in a new one; answers with the
    /// new segment's number once it is open.
    Rotate(oneshot::Sender<std::io::Result<u64>>),
}

/// A submitted record's wait for the disk (see [`Wal::submit`]).
pub type Pending = std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// Handle to the log writer thread.
pub struct Wal {
    tx: Mutex<mpsc::Sender<Command>>,
    dir: PathBuf,
    /// Bytes appended since the last rotation (drives checkpoints).
    pub bytes_since_rotate: Arc<AtomicU64>,
    pub syncs: Arc<AtomicU64>,
    pub bytes_total: Arc<AtomicU64>,
}

pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:010}.log"))
}

/// Segment numbers present in `dir`, ascending.
pub fn segments(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_suffix(".log")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}

impl Wal {
    /// Open segment `seq` for appending (creating it), truncated to
    /// `valid_len` bytes (the end of its last intact record).
    pub fn open(dir: &Path, seq: u64, valid_len: u64) -> Result<Wal> {
        fs::create_dir_all(dir)?;
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        file.set_len(valid_len)?;
        file.sync_all()?;
        sync_dir(dir)?;
        let (tx, rx) = mpsc::channel();
        let bytes_since_rotate = Arc::new(AtomicU64::new(valid_len));
        let syncs = Arc::new(AtomicU64::new(0));
        let bytes_total = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            dir: dir.to_path_buf(),
            seq,
            file,
            pos: valid_len,
            rx,
            bytes_since_rotate: bytes_since_rotate.clone(),
            syncs: syncs.clone(),
            bytes_total: bytes_total.clone(),
        };
        std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run())?;
        Ok(Wal {
            tx: Mutex::new(tx),
            dir: dir.to_path_buf(),
            bytes_since_rotate,
            syncs,
            bytes_total,
        })
    }

    /// Append a record and wait until it is durable.
    pub async fn append<T: Serialize>(&self, record: &T) -> Result<()> {
        self.append_with(record, true).await
    }

    /// Append a record and wait until it is written, not until it is on
    /// disk: a crash of the machine (not of the process) may lose it. The
    /// next synced record makes it durable too (the log is sequential).
    pub async fn append_unsynced<T: Serialize>(&self, record: &T) -> Result<()> {
        self.append_with(record, false).await
    }

    async fn append_with<T: Serialize>(&self, record: &T, sync: bool) -> Result<()> {
        self.submit(record, sync)?.await
    }

    /// Queue a record now and return a future that resolves once it is
    /// written (and, with `sync`, on disk). Records reach the file in the
    /// order of their `submit` calls, so a caller that submits under its own
    /// lock gets the log in its lock order and may wait outside the lock.
    pub fn submit<T: Serialize>(&self, record: &T, sync: bool) -> Result<Pending> {
        let payload = postcard::to_stdvec(record).map_err(|e| Error::Corrupt(e.to_string()))?;
        let (done, wait) = oneshot::channel();
        self.tx
            .lock()
            .unwrap()
            .send(Command::Append(Append {
                bytes: frame(&payload),
                sync,
                done,
            }))
            .map_err(|_| Error::Closed)?;
        Ok(Box::pin(async move {
            wait.await.map_err(|_| Error::Closed)??;
            Ok(())
        }))
    }

    /// Start a new segment; returns its number. Every record appended before
    /// this call is in an older segment.
    pub async fn rotate(&self) -> Result<u64> {
        let (done, wait) = oneshot::channel();
        self.tx
            .lock()
            .unwrap()
            .send(Command::Rotate(done))
            .map_err(|_| Error::Closed)?;
        Ok(wait.await.map_err(|_| Error::Closed)??)
    }

    /// Delete segments older than `seq`.
    pub fn remove_before(&self, seq: u64) -> Result<()> {
        for s in segments(&self.dir)? {
            if s < seq {
                fs::remove_file(segment_path(&self.dir, s))?;
            }
        }
        Ok(())
    }
}

struct Writer {
    dir: PathBuf,
    seq: u64,
    file: File,
    pos: u64,
    rx: mpsc::Receiver<Command>,
    bytes_since_rotate: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
    bytes_total: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self) {
        use std::io::Seek;
        let _ = self.file.seek(std::io::SeekFrom::Start(self.pos));
        while let Ok(first) = self.rx.recv() {
            let mut batch = Vec::new();
            let mut rotate = None;
            match first {
                Command::Append(a) => batch.push(a),
                Command::Rotate(r) => rotate = Some(r),
            }
            // Take everything queued meanwhile into the same sync, stopping at
            // a rotation so it sees all earlier records in the old segment.
            if rotate.is_none() {
                while let Ok(cmd) = self.rx.try_recv() {
                    match cmd {
                        Command::Append(a) => batch.push(a),
                        Command::Rotate(r) => {
                            rotate = Some(r);
                            break;
                        }
                    }
                }
            }
            if !batch.is_empty() {
                let result = self.write_batch(&batch);
                for a in batch {
                    let _ = a.done.send(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                    });
                }
            }
            if let Some(r) = rotate {
                let _ = r.send(self.rotate());
            }
        }
    }

    fn write_batch(&mut self, batch: &[Append]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(batch.iter().map(|a| a.bytes.len()).sum());
        for a in batch {
            buf.extend_from_slice(&a.bytes);
        }
        let sync = batch.iter().any(|a| a.sync);
        let r = self
            .file
            .write_all(&buf)
            .and_then(|_| if sync { self.file.sync_data() } else { Ok(()) });
        match r {
            Ok(()) => {
                self.pos += buf.len() as u64;
                self.bytes_since_rotate
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                self.bytes_total
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                if sync {
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                // Cut off whatever part of the batch reached the file, so the
                // failed records cannot reappear on replay.
                use std::io::Seek;
                let _ = self.file.set_len(self.pos);
                let _ = self.file.seek(std::io::SeekFrom::Start(self.pos));
                Err(e)
            }
        }
    }

    fn rotate(&mut self) -> std::io::Result<u64> {
        let next = self.seq + 1;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(segment_path(&self.dir, next))?;
        file.sync_all()?;
        sync_dir(&self.dir).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.file = file;
        self.seq = next;
        self.pos = 0;
        self.bytes_since_rotate.store(0, Ordering::Relaxed);
        Ok(next)
    }
}

/// fsync a directory, making file creations and renames in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1, 0).unwrap();
        for i in 0..100u64 {
            wal.append(&(i, format!("record {i}"))).await.unwrap();
        }
        drop(wal);
        let path = segment_path(dir.path(), 1);
        // Simulate a crash in the middle of an append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (recs, valid) = read_frames::<(u64, String)>(&path).unwrap();
        assert_eq!(recs.len(), 100);
        assert_eq!(recs[99], (99, "record 99".to_string()));
        // Reopen at the valid length and keep appending.
        let wal = Wal::open(dir.path(), 1, valid).unwrap();
        wal.append(&(100u64, "after".to_string())).await.unwrap();
        let (recs, _) = read_frames::<(u64, String)>(&path).unwrap();
        assert_eq!(recs.len(), 101);
        let next = wal.rotate().await.unwrap();
        assert_eq!(next, 2);
        wal.append(&(101u64, "new segment".to_string()))
            .await
            .unwrap();
        wal.remove_before(2).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![2]);
    }

    #[tokio::test]
    async fn concurrent_appends_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Wal::open(dir.path(), 1, 0).unwrap());
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let wal = wal.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50u64 {
                    wal.append(&(t, i)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (recs, _) = read_frames::<(u64, u64)>(&segment_path(dir.path(), 1)).unwrap();
        assert_eq!(recs.len(), 400);
        assert!(wal.syncs.load(Ordering::Relaxed) <= 400);
    }
}
