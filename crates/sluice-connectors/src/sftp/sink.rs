//! The SFTP sink: one file per message in a folder on the server, written under a temporary
//! name (`.<name>.tmp-<uuid>`, which readers and the `sftp` and `file` triggers ignore) and
//! renamed, so that a reader never sees half a file. The name template is checked like the
//! file sink's: it can never leave the folder.

use super::Remote;
use super::link::{Link, SftpError};
use super::place::write_file;
use super::trigger::make_folder;
use crate::file::finish::suffixed;
use crate::file::sink::{check_name, serialize};
use crate::file::temp::temp_path;
use async_trait::async_trait;
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Sink, Template};
use sluice_flow::{Diagnostic, OnConflict, OutputFormat, SftpSinkConfig};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::AsyncReadExt;

/// Writes each message to `<folder>/<rendered name>` on the server.
pub struct SftpSink {
    link: Link,
    name: Template,
    format: OutputFormat,
    /// The root element's name, for `format: xml`.
    xml_root: Option<String>,
    on_conflict: OnConflict,
    /// Whether the folder was made (or found) on the server.
    made: AtomicBool,
}

impl SftpSink {
    /// Builds the sink, compiling its name template; nothing is opened yet.
    pub fn new(
        _sink: &str,
        config: &SftpSinkConfig,
        cx: &BuildContext<'_>,
    ) -> Result<Self, Diagnostic> {
        let remote = Remote::load(&config.url, &config.auth(), &config.known_hosts, cx)?;
        let name = crate::file::sink::name_template(&config.name, cx)?;
        let xml_root = crate::file::sink::xml_root(config.format, &config.xml, cx)?;
        Ok(SftpSink {
            link: Link::new(remote),
            name,
            format: config.format,
            xml_root,
            on_conflict: config.on_conflict,
            made: AtomicBool::new(false),
        })
    }

    fn render_name(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        let name = self
            .name
            .render(&mut out.payload, &out.meta)
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, format!("file name: {e}")))?;
        check_name(&name)?;
        Ok(name)
    }

    async fn put(&self, name: &str, bytes: &[u8]) -> Result<String, FlowError> {
        let retry = |e: SftpError| FlowError::new(ErrorKind::Sink, e.to_string());
        let link = &self.link;
        let remote = &link.remote;
        if !self.made.load(Ordering::Relaxed) {
            make_folder(link, &remote.folder).await.map_err(retry)?;
            self.made.store(true, Ordering::Relaxed);
        }
        let temp = remote.path(&temp_path(Path::new(""), name).to_string_lossy());
        write_file(link, &temp, bytes).await.map_err(retry)?;
        let placed = self.name_it(&temp, name, bytes).await;
        if !matches!(placed, Ok(Placed::Renamed(_))) {
            let path = temp.clone();
            let _ = link
                .run("remove", &temp, |s| async move {
                    s.sftp.remove_file(path).await
                })
                .await;
        }
        // Everything but a conflict may pass: the server comes back, a login is fixed.
        match placed.map_err(retry)? {
            Placed::Renamed(to) | Placed::Same(to) => Ok(to),
            Placed::Conflict(to) => Err(FlowError::permanent(
                ErrorKind::Sink,
                format!("{to} already exists with different content (on_conflict: error)"),
            )),
        }
    }

    /// Gives the temporary file its name. An SFTP rename never replaces a file, so a name
    /// that is taken fails the rename; then the content decides (the same content is a
    /// redelivery), and `on_conflict`.
    async fn name_it(&self, temp: &str, name: &str, bytes: &[u8]) -> Result<Placed, SftpError> {
        let link = &self.link;
        for n in 0..10_000u32 {
            let target = link.remote.path(&suffixed(name, n));
            let renamed = {
                let (from, to) = (temp.to_owned(), target.clone());
                link.run(
                    "rename",
                    temp,
                    |s| async move { s.sftp.rename(from, to).await },
                )
                .await
            };
            match renamed {
                Ok(()) => return Ok(Placed::Renamed(target)),
                Err(e) if e.refused() => {
                    let Some(existing) = self.read_if_there(&target, bytes.len()).await? else {
                        // Not there: the rename failed for another reason.
                        return Err(e);
                    };
                    if existing == bytes {
                        return Ok(Placed::Same(target));
                    }
                    match self.on_conflict {
                        OnConflict::Suffix => continue,
                        OnConflict::Error => return Ok(Placed::Conflict(target)),
                        OnConflict::Overwrite => {
                            // SFTP v3 has no replacing rename: remove, then rename. A reader
                            // may see no file for a moment, never half of one.
                            let path = target.clone();
                            link.run("remove", &target, |s| async move {
                                s.sftp.remove_file(path).await
                            })
                            .await?;
                            let (from, to) = (temp.to_owned(), target.clone());
                            link.run(
                                "rename",
                                temp,
                                |s| async move { s.sftp.rename(from, to).await },
                            )
                            .await?;
                            return Ok(Placed::Renamed(target));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(SftpError::Request {
            what: "rename",
            path: link.remote.path(name),
            source: russh_sftp::client::error::Error::UnexpectedBehavior(
                "no free name after 10000 suffixes".to_owned(),
            ),
        })
    }

    /// The content of `path` if it exists (read up to one byte more than `len`, enough to
    /// tell it from content of that length).
    async fn read_if_there(&self, path: &str, len: usize) -> Result<Option<Vec<u8>>, SftpError> {
        let owned = path.to_owned();
        let read = self
            .link
            .run("read", path, |s| async move {
                let file = s.sftp.open(owned).await?;
                let mut bytes = Vec::new();
                file.take(len as u64 + 1)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(russh_sftp::client::error::Error::from)?;
                Ok(bytes)
            })
            .await;
        match read {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

enum Placed {
    Renamed(String),
    Same(String),
    Conflict(String),
}

#[async_trait]
impl Sink for SftpSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let name = self.render_name(out)?;
        let bytes = serialize(self.format, self.xml_root.as_deref(), &mut out.payload)?;
        self.put(&name, &bytes).await.map(|_| ())
    }

    fn target(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        let name = self.render_name(out)?;
        Ok(format!("{}/{name}", self.link.remote.shown()))
    }
}
