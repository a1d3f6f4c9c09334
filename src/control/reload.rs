//! Hot reload of the ingress table, which cloudflared lacks for a local config: on SIGHUP and
//! when the config file changes, re-read, validate and build a new table, then publish it with
//! one atomic swap. An invalid file is logged with its path and line and the running table
//! stays. Requests in flight keep the `Arc` of the table they started with.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::loader::LoadError;
use crate::config::file::ConfigFile;
use crate::ingress::{IngressError, IngressTable, SharedIngress};

/// Builds a table from a freshly parsed file (the caller decides about CLI rules, internal
/// hostnames, ...).
pub type TableBuilder = Box<dyn Fn(&ConfigFile) -> Result<IngressTable, IngressError> + Send>;

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadEvent {
    /// A new table is live; `generation` counts successful swaps since start.
    Applied { generation: u64, rules: usize },
    /// The file's bytes are what is already running.
    Unchanged,
    /// The new file was refused; the running table stays.
    Rejected { error: String, line: u64 },
}

/// Why a reload was attempted (logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChanged,
    Manual,
}

/// Owns the path, the last applied content and the published table.
pub struct Reloader {
    path: PathBuf,
    shared: Arc<SharedIngress>,
    build: TableBuilder,
    stamp: Option<FileStamp>,
    applied_hash: Option<u64>,
    generation: u64,
    events: Option<mpsc::Sender<ReloadEvent>>,
}

/// Cheap change detection before reading the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        // `metadata` follows symlinks, so an atomic symlink swap (Kubernetes ConfigMaps) shows up.
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

impl Reloader {
    /// `initial` is the file content the running table was built from.
    pub fn new(
        path: PathBuf,
        shared: Arc<SharedIngress>,
        initial: Option<&str>,
        build: TableBuilder,
    ) -> Reloader {
        Reloader {
            stamp: FileStamp::of(&path),
            applied_hash: initial.map(content_hash),
            path,
            shared,
            build,
            generation: 0,
            events: None,
        }
    }

    /// Reports every attempt on `tx` (tests and the supervisor listen here).
    pub fn with_events(mut self, tx: mpsc::Sender<ReloadEvent>) -> Reloader {
        self.events = Some(tx);
        self
    }

    /// Re-reads the file now and publishes it if it is valid and different.
    pub fn reload(&mut self, trigger: Trigger) -> ReloadEvent {
        self.stamp = FileStamp::of(&self.path);
        let event = self.try_reload(trigger);
        if let Some(tx) = &self.events {
            let _ = tx.send(event.clone());
        }
        event
    }

    fn try_reload(&mut self, trigger: Trigger) -> ReloadEvent {
        let file = self.path.display().to_string();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                let error = LoadError::Io {
                    path: file.clone(),
                    reason: super::loader::go_io_reason(&e),
                };
                return self.rejected(error.to_string(), 0);
            }
        };
        let hash = content_hash(&text);
        if self.applied_hash == Some(hash) {
            return ReloadEvent::Unchanged;
        }
        let parsed = match crate::config::parse_config(&text, &self.path) {
            Ok(p) => p,
            Err(e) => return self.rejected(e.to_string(), e.line),
        };
        let table = match (self.build)(&parsed) {
            Ok(t) => t,
            Err(e) => {
                let at = if e.line > 0 {
                    format!("{file}:{}: ", e.line)
                } else {
                    format!("{file}: ")
                };
                return self.rejected(format!("{at}{e}"), e.line);
            }
        };
        let rules = table.ingress().rules.len();
        self.shared.publish(table);
        self.applied_hash = Some(hash);
        self.generation += 1;
        log::info!(
            file = file.as_str(), rules = rules, generation = self.generation, trigger = format!("{trigger:?}").as_str();
            "Updated ingress rules"
        );
        ReloadEvent::Applied {
            generation: self.generation,
            rules,
        }
    }

    fn rejected(&self, error: String, line: u64) -> ReloadEvent {
        log::error!(
            error = error.as_str(), file = self.path.display().to_string().as_str(), line = line;
            "Invalid configuration, keeping the running ingress rules"
        );
        ReloadEvent::Rejected { error, line }
    }

    /// True when the file's stamp moved since the last look.
    fn file_changed(&mut self) -> bool {
        let now = FileStamp::of(&self.path);
        now.is_some() && now != self.stamp
    }

    /// Runs the watch loop on its own thread until `stop` is set: SIGHUP and (when
    /// `poll_interval` is non-zero) file changes trigger a reload.
    pub fn spawn(
        mut self,
        poll_interval: Duration,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<()>> {
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
        std::thread::Builder::new()
            .name("ringflare-reload".into())
            .spawn(move || {
                // The tick bounds SIGHUP latency (a reload need not be instant; an idle daemon
                // should rarely wake); it is a daemon loop, not test synchronisation.
                let tick = Duration::from_millis(250);
                let mut next_poll = Instant::now() + poll_interval;
                while !stop.load(Ordering::Relaxed) {
                    if hup.swap(false, Ordering::Relaxed) {
                        self.reload(Trigger::Signal);
                    } else if !poll_interval.is_zero() && Instant::now() >= next_poll {
                        next_poll = Instant::now() + poll_interval;
                        if self.file_changed() {
                            self.reload(Trigger::FileChanged);
                        }
                    }
                    let until_poll = if poll_interval.is_zero() {
                        tick
                    } else {
                        next_poll.saturating_duration_since(Instant::now())
                    };
                    std::thread::sleep(tick.min(until_poll));
                }
            })
    }
}

fn content_hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}
