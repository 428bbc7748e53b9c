//! The file sink: one file per message, written under a temporary name and renamed, with a
//! name template that can never leave the sink's folder.

use super::finish::suffixed;
use super::temp::{NAME_MAX, clean_once, temp_path};
use async_trait::async_trait;
use sluice_engine::Template;
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Payload, Sink};
use sluice_flow::{Diagnostic, FileSinkConfig, OnConflict, OutputFormat, Span};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writes each message to `<path>/<rendered name>`.
pub struct FileSink {
    flow: Arc<str>,
    folder: Arc<PathBuf>,
    name: Template,
    format: OutputFormat,
    /// The root element's name, for `format: xml`.
    xml_root: Option<String>,
    on_conflict: OnConflict,
    fsync: bool,
}

impl FileSink {
    /// Builds the sink, compiling its name template.
    pub fn new(
        _sink: &str,
        config: &FileSinkConfig,
        cx: &BuildContext<'_>,
    ) -> Result<Self, Diagnostic> {
        let folder = config.path.value.as_str();
        if folder.trim().is_empty() {
            return Err(cx
                .diagnostic(&config.path, "the sink `path` is empty")
                .with_help("give the folder to write into, e.g. `outbox/orders`"));
        }
        let name = name_template(&config.name, cx)?;
        let xml_root = xml_root(config.format, &config.xml, cx)?;
        Ok(FileSink {
            flow: cx.flow.name.as_str().into(),
            folder: Arc::new(PathBuf::from(folder)),
            name,
            format: config.format,
            xml_root,
            on_conflict: config.on_conflict,
            fsync: config.fsync,
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
}

/// A rendered name must be a plain file name inside the folder.
pub(crate) fn check_name(name: &str) -> Result<(), FlowError> {
    let refuse = |why: &str| {
        Err(FlowError::permanent(
            ErrorKind::Sink,
            format!("refusing file name `{}`: {why}", name.escape_debug()),
        ))
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.contains('/') || name.contains('\\') {
        return refuse("it contains a path separator; names may not leave the sink folder");
    }
    if name == "." || name == ".." || name.contains("..") {
        return refuse("it contains `..`; names may not leave the sink folder");
    }
    if name.contains('\0') {
        return refuse("it contains a NUL byte");
    }
    if Path::new(name).is_absolute() {
        return refuse("it is an absolute path");
    }
    if name.len() > NAME_MAX {
        return refuse("it is longer than 255 bytes, the longest file name filesystems accept");
    }
    Ok(())
}

/// A sink's file name template, compiled; a literal name is checked now (shared with `sftp`).
pub(crate) fn name_template(
    name: &sluice_flow::Spanned<sluice_flow::Text>,
    cx: &BuildContext<'_>,
) -> Result<Template, Diagnostic> {
    let template = Template::compile(name.value.as_str()).map_err(|e| {
        let span = sluice_flow::diagnostic::position_in_scalar(
            &cx.flow.source,
            Span::of(name),
            0,
            e.offset,
        );
        cx.flow.diagnostic(span, e.message).with_help(
            "a name template is text with `{{ jmespath }}` holes, e.g. \"{{order_id}}.json\"",
        )
    })?;
    if template.is_literal() {
        check_name(name.value.as_str()).map_err(|e| {
            cx.diagnostic(name, e.message)
                .with_help("a file name, without folders")
        })?;
    }
    Ok(template)
}

/// The checked `xml.root` of a sink writing `format`.
pub(crate) fn xml_root(
    format: OutputFormat,
    xml: &sluice_flow::XmlWriteConfig,
    cx: &BuildContext<'_>,
) -> Result<Option<String>, Diagnostic> {
    let Some(root) = &xml.root else {
        return Ok(None);
    };
    if format != OutputFormat::Xml {
        return Err(cx
            .diagnostic(root, "`xml.root` names the root element of `format: xml`")
            .with_help("add `format: xml`, or remove `xml`"));
    }
    if !sluice_xml::is_name(root.value.as_str()) {
        return Err(cx
            .diagnostic(
                root,
                format!("`{}` is not an XML element name", root.value.as_str()),
            )
            .with_help("use a letter or `_` first, then letters, digits, `-`, `.`, `_`, `:`"));
    }
    Ok(Some(root.value.as_str().to_owned()))
}

/// Serializes a payload for a sink; `xml_root` names the root element for `format: xml`
/// (without it, the payload is an object of one key, the root's name).
pub fn serialize(
    format: OutputFormat,
    xml_root: Option<&str>,
    payload: &mut Payload,
) -> Result<Vec<u8>, FlowError> {
    let fail = |e: String| FlowError::permanent(ErrorKind::Sink, e);
    match format {
        OutputFormat::Xml => sluice_xml::to_xml(payload.json().map_err(fail)?, xml_root)
            .map_err(|e| fail(format!("the payload has no XML form: {e}"))),
        OutputFormat::Json => payload.to_json_vec().map_err(fail),
        OutputFormat::NdjsonLine => {
            let mut bytes = payload.to_json_vec().map_err(fail)?;
            bytes.push(b'\n');
            Ok(bytes)
        }
        OutputFormat::Pretty => {
            let value = payload.json().map_err(fail)?;
            serde_json::to_vec_pretty(value).map_err(|e| fail(e.to_string()))
        }
        OutputFormat::Text => match payload.json().map_err(fail)? {
            serde_json::Value::String(s) => Ok(s.clone().into_bytes()),
            other => serde_json::to_vec(other).map_err(|e| fail(e.to_string())),
        },
    }
}

/// Test hook: `SLUICE_TEST_SINK_DELAY=<duration>` makes every file write take at least that
/// long and logs how many writes are under way at once (`writers=N`). End-to-end tests use it
/// to stand for a slow sink (a throttle's concurrency limit must hold against it); it is not
/// part of the flow format.
const TEST_DELAY_VAR: &str = "SLUICE_TEST_SINK_DELAY";

static TEST_WRITERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn test_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var(TEST_DELAY_VAR)
            .ok()
            .and_then(|v| humantime::parse_duration(v.trim()).ok())
    })
}

/// Counts a write under way for the test hook.
struct TestWriter;

impl Drop for TestWriter {
    fn drop(&mut self) {
        TEST_WRITERS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let _writer = match test_delay() {
            Some(delay) => {
                let n = TEST_WRITERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                tracing::info!(writers = n, "test sink delay: write started");
                tokio::time::sleep(delay).await;
                Some(TestWriter)
            }
            None => None,
        };
        let name = self.render_name(out)?;
        let bytes = serialize(self.format, self.xml_root.as_deref(), &mut out.payload)?;
        let (on_conflict, fsync) = (self.on_conflict, self.fsync);
        if sluice_engine::in_place::may_block() {
            // The message runs on the thread that read it, which may block: no hand-off.
            clean_once(&self.folder, &self.flow);
            return write_file(&self.folder, &name, &bytes, on_conflict, fsync).map(|_| ());
        }
        let (folder, flow) = (self.folder.clone(), self.flow.clone());
        let written = tokio::task::spawn_blocking(move || {
            // Before the first write of this process: what a killed run left behind goes.
            clean_once(&folder, &flow);
            write_file(&folder, &name, &bytes, on_conflict, fsync)
        })
        .await
        .map_err(|e| FlowError::new(ErrorKind::Sink, format!("file write task failed: {e}")))?;
        written.map(|_| ())
    }

    fn target(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        let name = self.render_name(out)?;
        Ok(self.folder.join(name).display().to_string())
    }
    // A write that waits for the disk (`fsync`) runs on the blocking pool, so that the
    // flow's `concurrency` writes wait at once rather than one per drain.
    fn in_place(&self) -> bool {
        !self.fsync
    }
}

/// An I/O error of a write. A name (or path) too long for the filesystem fails the same way
/// on every try, so it is permanent and says what to change; anything else may pass (a full
/// disk gets space back) and is retried.
fn io_failure(what: String, e: &io::Error) -> FlowError {
    if e.kind() == io::ErrorKind::InvalidFilename {
        return FlowError::permanent(
            ErrorKind::Sink,
            format!(
                "{what}: file name too long ({e}); a file name may have at most {NAME_MAX} bytes and a whole path 4095: shorten the sink's `name` template or its `path`"
            ),
        );
    }
    FlowError::new(ErrorKind::Sink, format!("{what}: {e}"))
}

/// Writes `bytes` as `folder/name` atomically; returns the path written (or found identical).
/// With `fsync`, the data and the folder entry are on disk before it returns, or it fails.
fn write_file(
    folder: &Path,
    name: &str,
    bytes: &[u8],
    on_conflict: OnConflict,
    fsync: bool,
) -> Result<PathBuf, FlowError> {
    let in_folder = |what: &str| format!("{what} in {}", folder.display());
    let tmp = temp_path(folder, name);
    let create = |tmp: &Path| -> io::Result<()> {
        let mut file = std::fs::File::create(tmp)?;
        file.write_all(bytes)?;
        if fsync {
            file.sync_all()?;
        }
        Ok(())
    };
    if let Err(e) = create(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        if e.kind() != io::ErrorKind::NotFound {
            return Err(io_failure(in_folder("cannot write a temporary file"), &e));
        }
        std::fs::create_dir_all(folder)
            .map_err(|e| io_failure(in_folder("cannot create the folder"), &e))?;
        create(&tmp).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_failure(in_folder("cannot write a temporary file"), &e)
        })?;
    }
    let target = if on_conflict == OnConflict::Overwrite {
        // Replacing is what was asked for: one atomic rename, no comparison needed.
        let target = folder.join(name);
        std::fs::rename(&tmp, &target).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_failure(format!("cannot replace {}", target.display()), &e)
        })?;
        target
    } else {
        let mut moved = false;
        let result = place(folder, name, &tmp, bytes, on_conflict, &mut moved);
        if !moved {
            let _ = std::fs::remove_file(&tmp);
        }
        result?
    };
    if fsync {
        // The rename is durable only once the folder is: a folder that cannot be synced
        // fails the write (and the retry writes again), it is never confirmed unsynced.
        sync_folder(folder).map_err(|e| {
            FlowError::new(
                ErrorKind::Sink,
                format!(
                    "cannot fsync the folder {} after writing {}: {e}; the write is not confirmed",
                    folder.display(),
                    target.display()
                ),
            )
        })?;
    }
    Ok(target)
}

fn sync_folder(folder: &Path) -> io::Result<()> {
    std::fs::File::open(folder)?.sync_all()
}

/// Gives `tmp` the name `target` unless that name exists: one rename that refuses to replace,
/// or, where the filesystem has none, a hard link (which fails if the name exists too; the
/// temporary name then stays). Either makes "create, never replace" atomic.
fn take_name(tmp: &Path, target: &Path, moved: &mut bool) -> io::Result<()> {
    match super::finish::rename_noreplace(tmp, target) {
        Some(renamed) => {
            *moved = renamed.is_ok();
            renamed
        }
        None => std::fs::hard_link(tmp, target),
    }
}

/// Gives the temporary file its final name without ever replacing another file silently;
/// `moved` says whether the temporary name is gone (renamed away) or left for the caller.
fn place(
    folder: &Path,
    name: &str,
    tmp: &Path,
    bytes: &[u8],
    on_conflict: OnConflict,
    moved: &mut bool,
) -> Result<PathBuf, FlowError> {
    for n in 0..10_000u32 {
        let target = folder.join(suffixed(name, n));
        match take_name(tmp, &target, moved) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if std::fs::read(&target).is_ok_and(|existing| existing == bytes) {
                    // The same content is already there: a redelivery after a crash.
                    return Ok(target);
                }
                match on_conflict {
                    OnConflict::Suffix => continue,
                    OnConflict::Overwrite => {
                        std::fs::rename(tmp, &target).map_err(|e| {
                            io_failure(format!("cannot replace {}", target.display()), &e)
                        })?;
                        *moved = true;
                        return Ok(target);
                    }
                    OnConflict::Error => {
                        return Err(FlowError::permanent(
                            ErrorKind::Sink,
                            format!(
                                "{} already exists with different content (on_conflict: error)",
                                target.display()
                            ),
                        ));
                    }
                }
            }
            Err(e) => {
                return Err(io_failure(
                    format!("cannot create {}", target.display()),
                    &e,
                ));
            }
        }
    }
    Err(FlowError::permanent(
        ErrorKind::Sink,
        format!(
            "no free name for `{name}` in {} after 10000 suffixes",
            folder.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_folder() {
        for bad in ["", "../x", "a/b", "a\\b", "..", "/etc/passwd", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("order-1.json").is_ok());
    }

    #[test]
    fn identical_content_is_delivered_and_different_content_is_suffixed_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let a = write_file(&out, "x.json", b"1", OnConflict::Suffix, false).unwrap();
        assert_eq!(a, out.join("x.json"));
        let again = write_file(&out, "x.json", b"1", OnConflict::Suffix, false).unwrap();
        assert_eq!(again, out.join("x.json"));
        let other = write_file(&out, "x.json", b"2", OnConflict::Suffix, false).unwrap();
        assert_eq!(other, out.join("x-1.json"));
        let err = write_file(&out, "x.json", b"3", OnConflict::Error, false).unwrap_err();
        assert!(!err.retryable);
        write_file(&out, "x.json", b"4", OnConflict::Overwrite, true).unwrap();
        assert_eq!(std::fs::read(out.join("x.json")).unwrap(), b"4");
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }
}
