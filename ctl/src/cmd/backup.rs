//! `hfctl backup FILE`: a consistent copy of the daemon's database, received
//! through the `store.backup` subscription and written by hfctl itself, with
//! the caller's rights, to a new file (mode 0600: it holds every job's
//! parameters). An existing file is never overwritten, and a copy that did
//! not arrive whole is removed.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use holdfast_api::rpc::HoldfastClient;
use serde_json::json;

use super::Context;
use crate::daemon::Daemon;
use crate::error::{Error, Outcome};
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The new file to write the copy to (refused if it exists).
    pub file: PathBuf,
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect_subscribing().await?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.file)
        .map_err(|source| write_error(&args.file, source))?;
    let size = match receive(&daemon, &mut file, &args.file).await {
        Ok(size) => size,
        Err(error) => {
            drop(file);
            let _ = std::fs::remove_file(&args.file);
            return Err(error);
        }
    };
    if ctx.json {
        output::print_json(&json!({"file": args.file, "bytes": size}))?;
    } else {
        output::print(&format!(
            "wrote a copy of the database ({size} bytes) to {}\n",
            args.file.display()
        ))?;
    }
    Ok(Outcome::Success)
}

/// Write every chunk at its place and return the copy's size once the last
/// one arrived and the file is on disk.
async fn receive(daemon: &Daemon, file: &mut File, path: &Path) -> Result<u64, Error> {
    let mut subscription = daemon.call(daemon.client.store_backup()).await?;
    let mut received = 0u64;
    let mut size = 0u64;
    while let Some(item) = subscription.next().await {
        let chunk = item.map_err(|e| daemon.bad_item(e))?;
        size = chunk.size;
        let bytes = chunk.bytes();
        let (true, Some(bytes)) = (chunk.offset == received, bytes) else {
            break;
        };
        file.write_all(&bytes)
            .map_err(|source| write_error(path, source))?;
        received += bytes.len() as u64;
        if chunk.complete {
            break;
        }
    }
    if received != size || size == 0 {
        return Err(Error::BackupIncomplete {
            socket: daemon.socket.clone(),
            received,
            size,
        });
    }
    file.sync_all()
        .map_err(|source| write_error(path, source))?;
    Ok(size)
}

fn write_error(path: &Path, source: std::io::Error) -> Error {
    Error::WriteFile {
        path: path.to_path_buf(),
        source,
    }
}
