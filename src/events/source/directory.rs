//! The directory source (the original's file-create source): inotify on a directory of the
//! controller's host, and with `recursive` on every directory below it. [`super::files`]
//! decides which notifications are events; this loop reads them, stats the files and
//! publishes, up to [`IN_FLIGHT`] events awaiting their confirm at a time.
//!
//! A directory that does not exist, is not a directory or cannot be read is reported
//! (`Connected=False`, the path and the error) and retried with backoff; one removed while
//! watched likewise. A kernel queue overflow (more than `fs.inotify.max_queued_events`
//! notifications unread) loses notifications: it is counted and reported as an error.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use chrono::Utc;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::eventsource::{DirectorySource, FileEventType};
use crate::events::cloudevent::{CloudEvent, CloudEventError, Data};

use super::files::{Notice, Step, Tracker, subject};
use super::{Sink, SourceError, backoff, pause};

/// Events published and not yet confirmed, at most.
const IN_FLIGHT: usize = 64;
/// Bytes read from the inotify descriptor at once.
const BUFFER: usize = 64 * 1024;

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::CLOSE_WRITE
        | WatchMask::CLOSE_NOWRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::EXCL_UNLINK
}

/// Runs the source until `stop`.
pub async fn run(spec: DirectorySource, source: String, sink: Sink, stop: CancellationToken) {
    let report = sink.report().clone();
    let mut attempt = 0u32;
    while !stop.is_cancelled() {
        let mut w = Watcher {
            root: PathBuf::from(&spec.path),
            source: source.clone(),
            tracker: Tracker::new(&spec.events, spec.recursive),
            dirs: HashMap::new(),
            sink: sink.clone(),
            stop: stop.clone(),
            in_flight: FuturesUnordered::new(),
        };
        match w.watch(spec.recursive).await {
            Ok(()) => {}
            Err(e) => report.down("DirectoryUnavailable", e.to_string()),
        }
        // What was taken is published before the watch is set up again.
        while w.in_flight.next().await.is_some() {}
        if stop.is_cancelled() || !pause(backoff(attempt), &stop).await {
            return;
        }
        attempt += 1;
    }
}

struct Watcher {
    root: PathBuf,
    source: String,
    tracker: Tracker,
    /// Watched directories by watch descriptor.
    dirs: HashMap<WatchDescriptor, PathBuf>,
    sink: Sink,
    stop: CancellationToken,
    in_flight: FuturesUnordered<BoxFuture<'static, bool>>,
}

fn dir_error(path: &Path, source: std::io::Error) -> SourceError {
    SourceError::Directory {
        path: path.display().to_string(),
        source,
    }
}

/// The directories below `dir` (not following symbolic links).
fn subdirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// A directory's entries with whether each is a directory.
fn entries(dir: &Path) -> std::io::Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.push((entry.path(), is_dir));
    }
    Ok(out)
}

impl Watcher {
    /// Watches until stopped (`Ok`) or the directory becomes unavailable (`Err`).
    async fn watch(&mut self, recursive: bool) -> Result<(), SourceError> {
        let root = self.root.clone();
        let meta = std::fs::metadata(&root).map_err(|e| dir_error(&root, e))?;
        if !meta.is_dir() {
            return Err(dir_error(
                &root,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        // Listing it checks that it can be read, not only watched.
        std::fs::read_dir(&root).map_err(|e| dir_error(&root, e))?;
        let inotify = Inotify::init().map_err(|e| dir_error(&root, e))?;
        let mut stream = inotify
            .into_event_stream(vec![0u8; BUFFER])
            .map_err(|e| dir_error(&root, e))?;
        let mut watches = stream.watches();
        let root_wd = watches
            .add(&root, mask())
            .map_err(|e| dir_error(&root, e))?;
        self.dirs.insert(root_wd.clone(), root.clone());
        if recursive {
            let mut todo = subdirs(&root).map_err(|e| dir_error(&root, e))?;
            while let Some(d) = todo.pop() {
                // Existing files are not events: only the directories are walked.
                match watches.add(&d, mask()) {
                    Ok(wd) => {
                        self.dirs.insert(wd, d.clone());
                        todo.extend(subdirs(&d).unwrap_or_default());
                    }
                    Err(e) => self.watch_failed(&d, e),
                }
            }
        }
        self.sink.report().up(format!(
            "watching {} ({} director{})",
            root.display(),
            self.dirs.len(),
            if self.dirs.len() == 1 { "y" } else { "ies" }
        ));
        loop {
            let next = tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                Some(_) = self.in_flight.next(), if !self.in_flight.is_empty() => continue,
                n = stream.next() => n,
            };
            let ev = match next {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => return Err(dir_error(&root, e)),
                None => {
                    return Err(dir_error(
                        &root,
                        std::io::Error::other("the inotify descriptor closed"),
                    ));
                }
            };
            if ev.mask.contains(EventMask::Q_OVERFLOW) {
                self.sink.report().skipped(format!(
                    "watching {}: the kernel's inotify queue overflowed and file events were \
                     lost (raise fs.inotify.max_queued_events)",
                    root.display()
                ));
                continue;
            }
            let self_gone = ev
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED);
            if self_gone {
                if ev.wd == root_wd {
                    return Err(dir_error(
                        &root,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "removed or moved while watched",
                        ),
                    ));
                }
                if ev.mask.contains(EventMask::IGNORED) {
                    self.dirs.remove(&ev.wd);
                }
                continue;
            }
            let Some(notice) = self.notice(&ev.wd, ev.mask, ev.name) else {
                continue;
            };
            let steps = self.tracker.on(notice);
            self.run_steps(steps, &mut watches).await;
        }
    }

    fn watch_failed(&self, dir: &Path, e: std::io::Error) {
        let hint = if e.raw_os_error() == Some(28) {
            " (the inotify watch limit fs.inotify.max_user_watches is reached)"
        } else {
            ""
        };
        self.sink.report().error(format!(
            "watching {}: {e}{hint}; files below it are not events",
            dir.display()
        ));
    }

    fn notice(
        &self,
        wd: &WatchDescriptor,
        mask: EventMask,
        name: Option<OsString>,
    ) -> Option<Notice> {
        let path = self.dirs.get(wd)?.join(name?);
        let dir = mask.contains(EventMask::ISDIR);
        Some(if mask.contains(EventMask::CREATE) {
            Notice::Created { path, dir }
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            Notice::Closed { path, wrote: true }
        } else if mask.contains(EventMask::CLOSE_NOWRITE) {
            Notice::Closed { path, wrote: false }
        } else if mask.contains(EventMask::MOVED_TO) {
            Notice::MovedIn { path, dir }
        } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            Notice::Gone { path, dir }
        } else {
            return None;
        })
    }

    async fn run_steps(&mut self, steps: Vec<Step>, watches: &mut Watches) {
        let mut todo: Vec<Step> = steps.into_iter().rev().collect();
        while let Some(step) = todo.pop() {
            match step {
                Step::Emit(t, path) => self.emit(t, path).await,
                Step::Watch(dir) => match watches.add(&dir, mask()) {
                    Ok(wd) => {
                        self.dirs.insert(wd, dir.clone());
                        // What appeared before the watch existed is found by listing it.
                        let found = entries(&dir).unwrap_or_default();
                        todo.extend(self.tracker.scanned(found).into_iter().rev());
                    }
                    Err(e) => self.watch_failed(&dir, e),
                },
            }
        }
    }

    async fn emit(&mut self, t: FileEventType, path: PathBuf) {
        let size = match t {
            FileEventType::FileDelete => None,
            _ => match std::fs::symlink_metadata(&path) {
                Ok(m) => Some(m.len()),
                Err(e) => {
                    self.sink.report().skipped(format!(
                        "{} {}: gone before it could be read ({e})",
                        t.as_str(),
                        path.display()
                    ));
                    return;
                }
            },
        };
        let event = match file_event(&self.source, &self.root, t, &path, size) {
            Ok(e) => e,
            Err(e) => {
                self.sink
                    .report()
                    .skipped(format!("{} {}: {e}", t.as_str(), path.display()));
                return;
            }
        };
        while self.in_flight.len() >= IN_FLIGHT {
            self.in_flight.next().await;
        }
        let (sink, stop) = (self.sink.clone(), self.stop.clone());
        self.in_flight
            .push(async move { sink.publish(event, &stop).await }.boxed());
    }
}

/// The CloudEvent of a file event: type = the event type, subject = the path below the
/// watched directory, data = name, path, size (none for a deletion) and the directory.
pub fn file_event(
    source: &str,
    root: &Path,
    t: FileEventType,
    path: &Path,
    size: Option<u64>,
) -> Result<CloudEvent, CloudEventError> {
    let mut e = CloudEvent::new(uuid::Uuid::new_v4().to_string(), source, t.as_str())?;
    e.subject = Some(subject(root, path));
    e.time = Some(Utc::now());
    e.datacontenttype = Some("application/json".into());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    e.data = Some(Data::Json(json!({
        "name": name,
        "path": path.to_string_lossy(),
        "size": size,
        "directory": root.to_string_lossy(),
    })));
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_event_carries_name_path_and_size() {
        let e = file_event(
            "S1",
            Path::new("/srv/drop"),
            FileEventType::FileCreate,
            Path::new("/srv/drop/in/a.csv"),
            Some(42),
        )
        .expect("event");
        assert_eq!((e.source.as_str(), e.type_.as_str()), ("S1", "FileCreate"));
        assert_eq!(e.subject.as_deref(), Some("in/a.csv"));
        assert_eq!(
            e.data,
            Some(Data::Json(json!({
                "name": "a.csv", "path": "/srv/drop/in/a.csv", "size": 42,
                "directory": "/srv/drop"
            })))
        );
        assert!(
            file_event(
                "",
                Path::new("/"),
                FileEventType::FileDelete,
                Path::new("/a"),
                None
            )
            .is_err()
        );
    }

    fn sink() -> (
        Sink,
        tokio::sync::mpsc::UnboundedReceiver<crate::api::ObjectKey>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let report = super::super::Report::new(crate::api::ObjectKey::new("a", "d"), tx);
        let publisher = std::sync::Arc::new(crate::events::publisher::Publisher::new(
            "amqp://u:p@127.0.0.1:9/%2f",
        ));
        (Sink::new(publisher, "a", report), rx)
    }

    #[tokio::test]
    async fn a_missing_directory_is_reported_with_its_path_and_retried() {
        let (sink, mut rx) = sink();
        let report = sink.report().clone();
        let stop = CancellationToken::new();
        let spec = DirectorySource {
            path: "/nonexistent/lambda-drop".into(),
            recursive: false,
            events: vec![FileEventType::FileCreate],
        };
        let task = tokio::spawn(run(spec, "S1".into(), sink, stop.clone()));
        let _ = rx.recv().await;
        match report.snapshot().link {
            super::super::Link::Down { reason, message } => {
                assert_eq!(reason, "DirectoryUnavailable");
                assert!(
                    message.starts_with("directory /nonexistent/lambda-drop: "),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        stop.cancel();
        task.await.expect("stops");
    }

    #[tokio::test]
    async fn files_there_at_start_are_not_events_new_ones_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("old"), "x").expect("old");
        let (sink, mut rx) = sink();
        let report = sink.report().clone();
        let stop = CancellationToken::new();
        let spec = DirectorySource {
            path: dir.path().display().to_string(),
            recursive: true,
            events: vec![FileEventType::FileCreate],
        };
        let task = tokio::spawn(run(spec, "S1".into(), sink, stop.clone()));
        let _ = rx.recv().await;
        assert!(matches!(report.snapshot().link, super::super::Link::Up(_)));
        std::fs::create_dir(dir.path().join("sub")).expect("sub");
        std::fs::write(dir.path().join("sub/new"), "xy").expect("new");
        // The broker at 127.0.0.1:9 refuses: the event waits and the failure is reported.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
        let s = report.snapshot();
        assert!(s.publish_failing, "{s:?}");
        assert!(
            s.last_error
                .is_some_and(|e| e.1.contains("publishing event"))
        );
        assert_eq!(s.published, 0);
        stop.cancel();
        task.await.expect("stops");
    }
}
