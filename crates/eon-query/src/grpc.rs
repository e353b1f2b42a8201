//! The `QueryEngine` gRPC service: SQL in, Arrow IPC out. This is how other
//! components (and `eon sql`) talk to a query engine; the conformance suite
//! checks it.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use eon_common::ipc;
use eon_proto::v1 as pb;
use eon_proto::v1::query_engine_server::QueryEngine;
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::errors::from_df;
use crate::session::{Engine, Output};

pub struct QueryEngineService {
    pub engine: Arc<Engine>,
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl QueryEngine for QueryEngineService {
    type ExecuteStream = ReceiverStream<Result<pb::ExecuteResponse, Status>>;

    async fn execute(&self, req: Request<pb::ExecuteRequest>) -> Reply<Self::ExecuteStream> {
        let req = req.into_inner();
        let params: Vec<ScalarValue> = req
            .params
            .into_iter()
            .map(|p| ScalarValue::Utf8(p.text))
            .collect();
        let engine = self.engine.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            // Only the cluster's components call this service: they act as the
            // admin (component authentication: see ARCHITECTURE.md).
            let session = engine.session(eon_common::ADMIN_ROLE);
            let mut outputs = session.run(&req.sql, &params).await;
            let Some(last) = outputs.pop() else {
                let _ = tx
                    .send(Ok(pb::ExecuteResponse {
                        kind: Some(pb::execute_response::Kind::CommandTag(String::new())),
                    }))
                    .await;
                return;
            };
            let result: Result<String, eon_common::Error> = async {
                match last? {
                    Output::Command(tag) | Output::TxnStart(tag) | Output::TxnEnd(tag) => Ok(tag),
                    Output::CopyIn(_) | Output::CopyOut { .. } => Err(crate::copy::wire_only()),
                    Output::Rows {
                        schema,
                        mut stream,
                        tag,
                    } => {
                        // The first message always describes the columns.
                        let empty =
                            datafusion::arrow::array::RecordBatch::new_empty(schema.clone());
                        let _ = tx.send(Ok(ipc_msg(ipc::encode_batch(&empty)?))).await;
                        let mut n = 0;
                        while let Some(batch) = stream.next().await {
                            let batch = batch.map_err(from_df)?;
                            n += batch.num_rows();
                            if batch.num_rows() > 0
                                && tx
                                    .send(Ok(ipc_msg(ipc::encode_batch(&batch)?)))
                                    .await
                                    .is_err()
                            {
                                break;
                            }
                        }
                        Ok(format!("{tag} {n}"))
                    }
                }
            }
            .await;
            let msg = match result {
                Ok(tag) => Ok(pb::ExecuteResponse {
                    kind: Some(pb::execute_response::Kind::CommandTag(tag)),
                }),
                Err(e) => Err(e.to_status()),
            };
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn stats(&self, _req: Request<pb::StatsRequest>) -> Reply<pb::Stats> {
        Ok(Response::new(self.engine.cluster.stats.snapshot(0)))
    }
}

fn ipc_msg(bytes: Vec<u8>) -> pb::ExecuteResponse {
    pb::ExecuteResponse {
        kind: Some(pb::execute_response::Kind::ArrowIpc(bytes.into())),
    }
}
