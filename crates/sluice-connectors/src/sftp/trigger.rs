//! The SFTP trigger's scanner: lists the folder, passes each file through the stability
//! gate, and hands ready files to their own tasks (`take.rs`), at most `max_in_flight` at
//! once; it also lists `.inflight/` and moves files whose lease ran out back into the
//! folder (`lease.rs`), so that they are taken again like new ones.

use super::Remote;
use super::lease::{Watcher, refresh};
use super::link::{Link, SftpError};
use super::take::take;
use crate::file::is_ignored_name;
use crate::file::stability::Stability;
use async_trait::async_trait;
use sluice_engine::{BuildContext, Inlet, Trigger};
use sluice_flow::{Diagnostic, SftpTriggerConfig};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// The shortest lease: the touches (every third of it) must change the modification time,
/// which SFTP carries in whole seconds.
const MIN_LEASE: Duration = Duration::from_secs(3);

/// Takes stable files from a folder on an SSH server.
pub struct SftpTrigger {
    remote: Remote,
    glob: globset::GlobMatcher,
    config: SftpTriggerConfig,
}

impl SftpTrigger {
    /// Checks the configuration; nothing is opened until the trigger runs.
    pub fn new(config: &SftpTriggerConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let remote = Remote::load(&config.url, &config.auth(), &config.known_hosts, cx)?;
        let glob = crate::file::trigger::name_glob(&config.glob, cx)?;
        crate::file::trigger::check_csv(&config.csv, cx)?;
        crate::file::decode::XmlReading::checked(&config.xml, config.format, cx)?;
        if config.lease.0 < MIN_LEASE {
            return Err(cx
                .diagnostic(&config.url, "the sftp trigger's `lease` is shorter than 3s")
                .with_help("give `lease: 3s` or more (the default is 30s)"));
        }
        Ok(SftpTrigger {
            remote,
            glob,
            config: config.clone(),
        })
    }
}

/// What the scanner, the file tasks and the lease touches share.
pub(super) struct Shared {
    pub(super) flow: String,
    pub(super) link: Link,
    pub(super) config: SftpTriggerConfig,
    /// The files this process holds in `.inflight/`, with the modification time it last
    /// gave each (the lease, `lease.rs`).
    pub(super) held: Mutex<HashMap<String, u32>>,
    /// Outcome folders known to exist.
    pub(super) made: Mutex<HashSet<String>>,
    /// Told when a file is finished or abandoned (its slot is free).
    pub(super) freed: Notify,
    pub(super) stop: CancellationToken,
}

#[async_trait]
impl Trigger for SftpTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let shared = Arc::new(Shared {
            flow: inlet.flow().to_owned(),
            link: Link::new(self.remote.clone()),
            config: self.config.clone(),
            held: Mutex::new(HashMap::new()),
            made: Mutex::new(HashSet::new()),
            freed: Notify::new(),
            stop: stop.clone(),
        });
        let slots = Arc::new(Semaphore::new(self.config.max_in_flight));
        let touching = CancellationToken::new();
        tokio::spawn(refresh(shared.clone(), touching.clone()));
        let mut scan = Scan {
            gate: Stability::new(
                self.config.min_age.0,
                self.config.check_interval.0,
                self.config.stable_checks,
            ),
            watcher: Watcher::new(self.config.lease.0),
            ready: VecDeque::new(),
            prepared: false,
            last_error: None,
        };
        let mut backoff = Duration::from_millis(200);
        let mut listed = Instant::now();
        loop {
            let wait = match self.scan(&shared, &mut scan).await {
                Ok(()) => {
                    if scan.last_error.take().is_some() {
                        tracing::info!(flow = %shared.flow, server = %self.remote.shown(), "sftp trigger connected again");
                    }
                    inlet.set_healthy();
                    backoff = Duration::from_millis(200);
                    if scan.gate.has_pending() {
                        self.config.check_interval.0
                    } else {
                        self.config.poll_interval.0
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if scan.last_error.as_deref() != Some(text.as_str()) {
                        tracing::error!(flow = %shared.flow, "sftp trigger: {text}; trying again");
                    }
                    inlet.set_unhealthy(text.clone());
                    scan.last_error = Some(text);
                    scan.prepared = false;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    backoff
                }
            };
            listed = listed.max(Instant::now());
            loop {
                self.dispatch(&shared, &slots, &inlet, &mut scan);
                let left = wait.saturating_sub(listed.elapsed());
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(left) => break,
                    // A slot came free: hand out the next ready files without listing again.
                    _ = shared.freed.notified() => continue,
                }
            }
            if stop.is_cancelled() {
                break;
            }
            listed = Instant::now();
        }
        // Nothing new is claimed. The files in flight end (moved, or abandoned and left in
        // `.inflight/` for their lease to run out) before the trigger does; the queue is let
        // go of first, since messages held by an aggregate settle only once it is closed.
        drop(inlet);
        let all = u32::try_from(self.config.max_in_flight).unwrap_or(u32::MAX);
        let _ = slots.acquire_many(all).await;
        touching.cancel();
    }
}

/// The scanner's state between listings.
struct Scan {
    gate: Stability,
    watcher: Watcher,
    /// Ready files waiting for a slot, with their listed size.
    ready: VecDeque<(String, u64)>,
    /// Whether `.inflight/` was made on this connection.
    prepared: bool,
    /// The last error, logged once until it changes or the trigger works again.
    last_error: Option<String>,
}

impl SftpTrigger {
    /// One round: makes `.inflight/`, recovers expired claims, lists the folder.
    async fn scan(&self, shared: &Arc<Shared>, scan: &mut Scan) -> Result<(), SftpError> {
        let link = &shared.link;
        if !scan.prepared {
            make_folder(link, &self.remote.path(".inflight")).await?;
            scan.prepared = true;
        }
        self.recover(shared, scan).await?;
        let folder = self.remote.folder.clone();
        let entries = link
            .run("list", &self.remote.folder, |s| async move {
                s.sftp.read_dir(folder).await
            })
            .await?;
        let now = Instant::now();
        scan.gate.start_listing();
        let mut newly_ready = Vec::new();
        for entry in entries {
            let name = entry.file_name();
            if is_ignored_name(&name) || !self.glob.is_match(&name) {
                continue;
            }
            let meta = entry.metadata();
            if !meta.is_regular() {
                continue;
            }
            if !scan.gate.wants_look(&name, now) {
                scan.gate.listed(&name);
                continue;
            }
            let mtime = meta
                .mtime
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(s)));
            let size = meta.size.unwrap_or(0);
            if scan.gate.observe(&name, size, mtime, now) {
                newly_ready.push((name, size));
            }
        }
        scan.gate.end_listing();
        newly_ready.sort();
        scan.ready.extend(newly_ready);
        Ok(())
    }

    /// Moves the files in `.inflight/` whose lease ran out back into the folder.
    async fn recover(&self, shared: &Arc<Shared>, scan: &mut Scan) -> Result<(), SftpError> {
        let link = &shared.link;
        let inflight = self.remote.path(".inflight");
        let listed = {
            let path = inflight.clone();
            link.run(
                "list",
                &inflight,
                |s| async move { s.sftp.read_dir(path).await },
            )
            .await?
        };
        let files: Vec<(String, Option<u32>)> = listed
            .filter(|e| e.metadata().is_regular() && !e.file_name().starts_with('.'))
            .map(|e| (e.file_name(), e.metadata().mtime))
            .collect();
        let held: HashSet<String> = lock(&shared.held).keys().cloned().collect();
        let stale = scan.watcher.observe(files, &held, Instant::now());
        if !stale.is_empty() {
            tracing::info!(flow = %shared.flow, count = stale.len(), "taking back files left in .inflight/ whose lease ran out (a process stopped while it held them)");
        }
        for name in stale {
            let from = self.remote.path_in(".inflight", &name);
            let to = self.remote.path(&name);
            let moved = {
                let (f, t) = (from.clone(), to.clone());
                link.run(
                    "rename",
                    &from,
                    |s| async move { s.sftp.rename(f, t).await },
                )
                .await
            };
            match moved {
                Ok(()) => scan.watcher.forget(&name),
                // Taken back by another process first.
                Err(e) if e.not_found() => scan.watcher.forget(&name),
                Err(e) if e.refused() => {
                    tracing::warn!(flow = %shared.flow, file = %from, "cannot move the file back into the folder (is a file of the same name there?): {e}; trying again at the next listing");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Starts a task for each ready file while slots are free.
    fn dispatch(
        &self,
        shared: &Arc<Shared>,
        slots: &Arc<Semaphore>,
        inlet: &Inlet,
        scan: &mut Scan,
    ) {
        while let Some((name, size)) = scan.ready.front().cloned() {
            if shared.stop.is_cancelled() {
                return;
            }
            if lock(&shared.held).contains_key(&name) {
                // A file of this name is in flight here: this one waits until it is done
                // (the gate sees it again after the next listing).
                scan.ready.pop_front();
                scan.gate.forget(&name);
                continue;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                return;
            };
            scan.ready.pop_front();
            scan.gate.forget(&name);
            tokio::spawn(take(shared.clone(), inlet.clone(), name, size, slot));
        }
    }
}

/// Makes a folder on the server unless it is there.
pub(super) async fn make_folder(link: &Link, path: &str) -> Result<(), SftpError> {
    let made = {
        let path = path.to_owned();
        link.run("mkdir", &path.clone(), |s| async move {
            s.sftp.create_dir(path).await
        })
        .await
    };
    match made {
        Ok(()) => Ok(()),
        Err(e) if e.refused() => {
            // Most likely there already; anything else shows when it is used.
            let path = path.to_owned();
            let there = link
                .run("stat", &path.clone(), |s| async move {
                    s.sftp.metadata(path).await
                })
                .await;
            match there {
                Ok(meta) if meta.is_dir() => Ok(()),
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
