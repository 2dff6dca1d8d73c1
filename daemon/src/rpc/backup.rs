//! `store.backup`: a consistent copy of the database, streamed to the
//! caller in chunks.
//!
//! The copy holds every job's parameters, so only operators (root, the
//! daemon's user, `operator_groups` members) get it. The daemon never
//! writes it where a caller says: it snapshots into its own state directory
//! (unlinked at once) and sends the bytes, and `hfctl backup FILE` writes
//! them with the caller's own rights. So a caller cannot make the daemon
//! create or overwrite a file the caller could not write (`/etc/passwd`).

use std::io::Read;

use holdfast_api::{BackupChunk, ErrorCode};
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::{Extensions, PendingSubscriptionSink};

use super::{RpcServer, caller, store_error};

/// Raw bytes per chunk (a third more once base64-encoded).
const CHUNK_BYTES: usize = 1 << 20;

pub(super) async fn handle(
    server: &RpcServer,
    pending: PendingSubscriptionSink,
    ext: &Extensions,
) -> SubscriptionResult {
    let who = caller(ext);
    if !crate::access::is_operator(&who, &server.settings) {
        let message = "a backup holds every job's parameters; it is for root, the daemon's user and operator_groups members";
        server
            .audit(&who, "store.backup", None, "refused", Some(message.into()))
            .await;
        pending
            .reject(ErrorCode::PermissionDenied.error(message))
            .await;
        return Ok(());
    }
    let file = match server.store.snapshot(&server.settings.state_dir).await {
        Ok(file) => file,
        Err(error) => {
            pending.reject(store_error(error)).await;
            return Ok(());
        }
    };
    let size = file.metadata()?.len();
    server
        .audit(
            &who,
            "store.backup",
            None,
            "ok",
            Some(format!("{size} bytes")),
        )
        .await;
    tracing::info!(user = %who.user, uid = who.uid, bytes = size, "database copy sent");
    let sink = pending.accept().await?;
    let mut file = file;
    let mut offset = 0u64;
    loop {
        let (returned, bytes) = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(CHUNK_BYTES);
            let read = (&mut file).take(CHUNK_BYTES as u64).read_to_end(&mut buf);
            (file, read.map(|_| buf))
        })
        .await?;
        file = returned;
        let bytes = bytes?;
        let complete = bytes.is_empty() || offset + bytes.len() as u64 >= size;
        let chunk = BackupChunk::new(offset, size, &bytes, complete);
        offset += bytes.len() as u64;
        sink.send(serde_json::value::to_raw_value(&chunk)?).await?;
        if complete {
            // The close notification, as the other subscriptions end.
            return Err("backup complete".into());
        }
    }
}
