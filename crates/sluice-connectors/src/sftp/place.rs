//! Moving a finished file out of `.inflight/` on the server: to `.done/` (or deleted),
//! `.rejected/`, `.error/` or `.partial/`, under a free name (`name`, `name-1.ext`, …: an
//! SFTP rename never replaces a file), with its `<name>.error.json` sidecar written first
//! under a temporary name and renamed. Tried again over a broken connection until it
//! succeeds or the trigger stops (then the file stays in `.inflight/` and is taken again
//! once its lease runs out).

use super::link::{Link, SftpError};
use super::take::Held;
use super::trigger::{lock, make_folder};
use crate::file::claim::Verdict;
use crate::file::finish::{Disposition, sidecar_path, suffixed};
use crate::file::temp::temp_path;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The longest pause between two tries to move a finished file.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Places a finished file; its slot is free once this returns.
pub(super) async fn place(held: Held, verdict: Verdict) {
    let shared = held.shared.clone();
    let Verdict {
        disposition,
        sidecar,
        summary,
    } = verdict;
    let mut failures = 0u32;
    let mut pause = Duration::from_millis(100);
    // The target, once chosen, is kept across tries, so that a sidecar written by an
    // earlier try is not left without its file.
    let mut chosen: Option<String> = None;
    loop {
        match try_place(&held, disposition, sidecar.as_ref(), &mut chosen).await {
            Ok(to) => {
                if failures > 0 {
                    tracing::info!(flow = %shared.flow, file = %held.name, to = %to, "moved the finished file after {failures} failed attempts");
                }
                return summary.log(&shared.flow, &held.name, &to);
            }
            Err(e) if e.not_found() && chosen_source_gone(&e, &held) => {
                tracing::warn!(flow = %shared.flow, file = %held.name, "the finished file is no longer in .inflight/ (its lease ran out and another process took it again?): {e}");
                return;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::error!(flow = %shared.flow, file = %held.name, attempts = failures, "cannot move the finished file out of .inflight/: {e}; its messages are done, and sluice tries again until the move succeeds");
                }
                tokio::select! {
                    _ = shared.stop.cancelled() => {
                        tracing::warn!(flow = %shared.flow, file = %held.name, "stopping before the finished file could be moved: it stays in .inflight/ and is taken again once its lease runs out");
                        return;
                    }
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Whether a not-found error is about the claimed file itself (not a folder).
fn chosen_source_gone(e: &SftpError, held: &Held) -> bool {
    matches!(e, SftpError::Request { path, .. } if *path == held.shared.link.remote.path_in(".inflight", &held.name))
}

/// One try; returns where the file went (`(deleted)` when it was removed).
async fn try_place(
    held: &Held,
    disposition: Disposition,
    sidecar: Option<&Value>,
    chosen: &mut Option<String>,
) -> Result<String, SftpError> {
    let shared = &held.shared;
    let link = &shared.link;
    let remote = &link.remote;
    let claimed = remote.path_in(".inflight", &held.name);
    if disposition == Disposition::Delete {
        let path = claimed.clone();
        link.run("remove", &claimed, |s| async move {
            s.sftp.remove_file(path).await
        })
        .await?;
        return Ok("(deleted)".to_owned());
    }
    let folder = remote.path(disposition.folder());
    if !lock(&shared.made).contains(&folder) {
        make_folder(link, &folder).await?;
        lock(&shared.made).insert(folder.clone());
    }
    if let Some(to) = chosen.clone() {
        if let Some(sidecar) = sidecar {
            write_sidecar(link, &folder, &to, sidecar).await?;
        }
        return rename(link, &claimed, &format!("{folder}/{to}")).await;
    }
    for n in 0..10_000u32 {
        let candidate = suffixed(&held.name, n);
        let target = format!("{folder}/{candidate}");
        if let Some(sidecar) = sidecar {
            // A name free of a file and of a sidecar, so that the sidecar names its file.
            let sidecar_name = sidecar_name(&candidate);
            if exists(link, &target).await?
                || exists(link, &format!("{folder}/{sidecar_name}")).await?
            {
                continue;
            }
            *chosen = Some(candidate.clone());
            write_sidecar(link, &folder, &candidate, sidecar).await?;
            return rename(link, &claimed, &target).await;
        }
        match rename(link, &claimed, &target).await {
            Ok(to) => return Ok(to),
            // The rename refuses to replace: a file of that name is there, or the claimed
            // file is gone; the next name, unless it is the latter.
            Err(e) if e.refused() && exists(link, &target).await? => continue,
            Err(e) => return Err(e),
        }
    }
    Err(SftpError::Request {
        what: "rename",
        path: claimed,
        source: russh_sftp::client::error::Error::UnexpectedBehavior(format!(
            "no free name for it in {folder} after 10000 suffixes"
        )),
    })
}

/// `<name>.error.json` (shortened for very long names, as beside a local file).
fn sidecar_name(name: &str) -> String {
    sidecar_path(Path::new(name)).to_string_lossy().into_owned()
}

async fn exists(link: &Link, path: &str) -> Result<bool, SftpError> {
    let owned = path.to_owned();
    link.run(
        "stat",
        path,
        |s| async move { s.sftp.try_exists(owned).await },
    )
    .await
}

async fn rename(link: &Link, from: &str, to: &str) -> Result<String, SftpError> {
    let (f, t) = (from.to_owned(), to.to_owned());
    link.run("rename", from, |s| async move { s.sftp.rename(f, t).await })
        .await?;
    Ok(to.to_owned())
}

/// Writes the sidecar of `name` in `folder`: a temporary name, then a rename (removing an
/// earlier try's sidecar of the same file first, since a rename does not replace).
async fn write_sidecar(
    link: &Link,
    folder: &str,
    name: &str,
    sidecar: &Value,
) -> Result<(), SftpError> {
    let text = serde_json::to_vec_pretty(sidecar).unwrap_or_default();
    let final_name = sidecar_name(name);
    let target = format!("{folder}/{final_name}");
    let temp = format!(
        "{folder}/{}",
        temp_path(Path::new(""), &final_name).to_string_lossy()
    );
    write_file(link, &temp, &text).await?;
    if exists(link, &target).await? {
        let path = target.clone();
        link.run("remove", &target, |s| async move {
            s.sftp.remove_file(path).await
        })
        .await?;
    }
    rename(link, &temp, &target).await.map(|_| ())
}

/// Creates (or truncates) `path` on the server and writes `bytes` to it.
pub(super) async fn write_file(link: &Link, path: &str, bytes: &[u8]) -> Result<(), SftpError> {
    let owned = path.to_owned();
    let bytes = bytes.to_vec();
    link.run("write", path, |s| async move {
        let mut file = s.sftp.create(owned).await?;
        file.write_all(&bytes).await?;
        file.shutdown().await?;
        Ok(())
    })
    .await
}
