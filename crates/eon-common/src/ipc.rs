//! Arrow IPC framing.
//!
//! Row data crosses process boundaries in eon only as Arrow IPC streams
//! carried in `bytes` fields of gRPC messages: a schema message followed by
//! record batches, exactly as the Arrow columnar format lays them out in
//! memory, so neither side converts rows to another format.

use std::io::Cursor;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// Encode batches (all of `schema`) as one IPC stream.
pub fn encode(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, schema)?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(buf)
}

/// Encode one batch as an IPC stream.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>> {
    encode(&batch.schema(), std::slice::from_ref(batch))
}

/// Decode an IPC stream into its schema and batches.
pub fn decode(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| Error::internal(format!("bad Arrow IPC stream: {e}")))?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// Decode an IPC stream into a single batch (concatenating if needed).
pub fn decode_one(bytes: &[u8]) -> Result<RecordBatch> {
    let (schema, batches) = decode(bytes)?;
    match batches.len() {
        0 => Ok(RecordBatch::new_empty(schema)),
        1 => Ok(batches.into_iter().next().unwrap()),
        _ => Ok(arrow::compute::concat_batches(&schema, &batches)?),
    }
}
