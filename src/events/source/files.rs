//! Which kernel notifications are which file events: a pure decision, so the inotify loop in
//! [`super::directory`] only reads, asks and publishes.
//!
//! - A file is *created* when it is closed after being created (`IN_CREATE` then
//!   `IN_CLOSE_WRITE`, so the event carries its final size, not 0), or moved in.
//! - A file is *modified* when an existing file is closed after a write (one event per write
//!   session, not one per `write(2)`).
//! - A file is *deleted* when it is removed or moved out.
//! - With `recursive`, a directory created or moved in is watched, and the files found in it
//!   right after are created files (they appeared after the watch started); a later
//!   notification about one of those is not a second creation, and its first close is not a
//!   modification (it may end the write that created it).
//! - Files already there when the watch starts are not events.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use crate::api::eventsource::FileEventType;

/// A kernel notification, reduced to what matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `IN_CREATE`.
    Created { path: PathBuf, dir: bool },
    /// `IN_CLOSE_WRITE` (or `IN_CLOSE_NOWRITE` of a file just created).
    Closed { path: PathBuf, wrote: bool },
    /// `IN_MOVED_TO`.
    MovedIn { path: PathBuf, dir: bool },
    /// `IN_DELETE` or `IN_MOVED_FROM`.
    Gone { path: PathBuf, dir: bool },
}

/// What to do about a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Publish this file event (when the source asks for its type).
    Emit(FileEventType, PathBuf),
    /// Watch this new directory, then report what is in it with [`Tracker::scanned`].
    Watch(PathBuf),
}

/// Entries remembered from scans of new directories before they are forgotten wholesale (a
/// bound on memory; forgetting costs at most a duplicate creation event).
const SCANNED_LIMIT: usize = 65_536;

/// The per-source state of the decision.
#[derive(Debug)]
pub struct Tracker {
    wants: BTreeSet<FileEventType>,
    recursive: bool,
    /// Files created and not yet closed.
    open: HashSet<PathBuf>,
    /// Files reported by a scan of a new directory (their creation was already emitted).
    scanned: HashSet<PathBuf>,
}

impl Tracker {
    /// A tracker emitting the `wants` types.
    pub fn new(wants: &[FileEventType], recursive: bool) -> Self {
        Tracker {
            wants: wants.iter().copied().collect(),
            recursive,
            open: HashSet::new(),
            scanned: HashSet::new(),
        }
    }

    fn emit(&self, out: &mut Vec<Step>, t: FileEventType, path: PathBuf) {
        if self.wants.contains(&t) {
            out.push(Step::Emit(t, path));
        }
    }

    /// The steps a notice calls for.
    pub fn on(&mut self, notice: Notice) -> Vec<Step> {
        let mut out = Vec::new();
        match notice {
            Notice::Created { path, dir: true } | Notice::MovedIn { path, dir: true } => {
                if self.recursive {
                    out.push(Step::Watch(path));
                }
            }
            Notice::Created { path, dir: false } => {
                // A second IN_CREATE of a scanned file is the notification of the creation
                // the scan already reported: wait for its close, emit nothing then either.
                self.open.insert(path);
            }
            Notice::Closed { path, wrote } => {
                if self.open.remove(&path) {
                    if !self.scanned.remove(&path) {
                        self.emit(&mut out, FileEventType::FileCreate, path);
                    }
                } else if self.scanned.remove(&path) {
                    // Closed after a scan saw it: its creation is reported.
                } else if wrote {
                    self.emit(&mut out, FileEventType::FileModify, path);
                }
            }
            Notice::MovedIn { path, dir: false } => {
                if !self.scanned.remove(&path) {
                    self.emit(&mut out, FileEventType::FileCreate, path);
                }
            }
            Notice::Gone { path, dir } => {
                self.open.remove(&path);
                self.scanned.remove(&path);
                if dir {
                    let prefix = path.clone();
                    self.open.retain(|p| !p.starts_with(&prefix));
                    self.scanned.retain(|p| !p.starts_with(&prefix));
                } else {
                    self.emit(&mut out, FileEventType::FileDelete, path);
                }
            }
        }
        out
    }

    /// What a scan of a directory just watched found: its files are created files, its
    /// directories are watched in turn (and scanned).
    pub fn scanned(&mut self, entries: Vec<(PathBuf, bool)>) -> Vec<Step> {
        if self.scanned.len() > SCANNED_LIMIT {
            self.scanned.clear();
        }
        let mut out = Vec::new();
        for (path, dir) in entries {
            if dir {
                out.push(Step::Watch(path));
            } else if !self.open.contains(&path) {
                self.scanned.insert(path.clone());
                self.emit(&mut out, FileEventType::FileCreate, path);
            }
        }
        out
    }
}

/// The event's `subject`: the path below the watched directory.
pub fn subject(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use FileEventType::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }
    fn created(s: &str) -> Notice {
        Notice::Created {
            path: p(s),
            dir: false,
        }
    }
    fn closed(s: &str) -> Notice {
        Notice::Closed {
            path: p(s),
            wrote: true,
        }
    }

    #[test]
    fn a_file_is_created_when_closed_after_its_creation_then_modified() {
        let mut t = Tracker::new(&[FileCreate, FileModify, FileDelete], false);
        assert!(t.on(created("/d/a")).is_empty());
        assert_eq!(t.on(closed("/d/a")), [Step::Emit(FileCreate, p("/d/a"))]);
        assert_eq!(t.on(closed("/d/a")), [Step::Emit(FileModify, p("/d/a"))]);
        let read_only = Notice::Closed {
            path: p("/d/a"),
            wrote: false,
        };
        assert!(t.on(read_only).is_empty());
        let gone = Notice::Gone {
            path: p("/d/a"),
            dir: false,
        };
        assert_eq!(t.on(gone), [Step::Emit(FileDelete, p("/d/a"))]);
    }

    #[test]
    fn only_the_asked_types_are_emitted() {
        let mut t = Tracker::new(&[FileCreate], false);
        t.on(created("/d/a"));
        assert_eq!(t.on(closed("/d/a")).len(), 1);
        assert!(t.on(closed("/d/a")).is_empty());
        let gone = Notice::Gone {
            path: p("/d/a"),
            dir: false,
        };
        assert!(t.on(gone).is_empty());
        let moved = Notice::MovedIn {
            path: p("/d/b"),
            dir: false,
        };
        assert_eq!(t.on(moved), [Step::Emit(FileCreate, p("/d/b"))]);
    }

    #[test]
    fn directories_are_watched_only_when_recursive() {
        let mkdir = Notice::Created {
            path: p("/d/sub"),
            dir: true,
        };
        assert!(
            Tracker::new(&[FileCreate], false)
                .on(mkdir.clone())
                .is_empty()
        );
        let mut t = Tracker::new(&[FileCreate], true);
        assert_eq!(t.on(mkdir), [Step::Watch(p("/d/sub"))]);
    }

    #[test]
    fn a_scanned_file_is_created_once_whichever_notices_follow() {
        let mut t = Tracker::new(&[FileCreate, FileModify], true);
        // Written before the watch: only the scan sees it.
        // Created before the watch, closed after it: the close is not a second event.
        // Created after the watch but before the scan: both the scan and the kernel report it.
        let steps = t.scanned(vec![
            (p("/d/sub/a"), false),
            (p("/d/sub/b"), false),
            (p("/d/sub/c"), false),
            (p("/d/sub/deeper"), true),
        ]);
        assert_eq!(
            steps,
            [
                Step::Emit(FileCreate, p("/d/sub/a")),
                Step::Emit(FileCreate, p("/d/sub/b")),
                Step::Emit(FileCreate, p("/d/sub/c")),
                Step::Watch(p("/d/sub/deeper")),
            ]
        );
        assert!(t.on(closed("/d/sub/b")).is_empty());
        assert!(t.on(created("/d/sub/c")).is_empty());
        assert!(t.on(closed("/d/sub/c")).is_empty());
        // A scanned file's first close may be the end of the write that created it: it is
        // not a modification. Later writes are, as usual.
        assert!(t.on(closed("/d/sub/a")).is_empty());
        assert_eq!(
            t.on(closed("/d/sub/a")),
            [Step::Emit(FileModify, p("/d/sub/a"))]
        );
        assert_eq!(
            t.on(closed("/d/sub/c")),
            [Step::Emit(FileModify, p("/d/sub/c"))]
        );
    }

    #[test]
    fn a_removed_directory_forgets_what_was_open_in_it() {
        let mut t = Tracker::new(&[FileCreate], true);
        t.on(created("/d/sub/a"));
        t.on(Notice::Gone {
            path: p("/d/sub"),
            dir: true,
        });
        assert!(t.open.is_empty());
        assert_eq!(subject(Path::new("/d"), Path::new("/d/sub/a")), "sub/a");
        assert_eq!(subject(Path::new("/d"), Path::new("/e/a")), "/e/a");
    }
}
