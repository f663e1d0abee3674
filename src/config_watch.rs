//! Hot reload of the config file and the secret/TLS files it references.
//!
//! # Why the directory is watched, not the file
//!
//! A Kubernetes ConfigMap (or Secret) mounted as a volume is a symlink farm:
//!
//! ```text
//! config.yaml -> ..data/config.yaml
//! ..data      -> ..2026_11_22_07_00_00.123
//! ```
//!
//! On an update the kubelet writes a new timestamped directory, points a temporary
//! `..data_tmp` symlink at it, renames that over `..data` and deletes the old
//! directory. A watch on the file (its inode) therefore goes dead after the first
//! update. So we watch the *directory* holding the config file and the directory of
//! every file the config references (SASL `{file: ...}` secrets and TLS files),
//! non-recursively, debounce bursts of events (`watch.debounce`), re-read everything
//! and compare a digest of the content (config text plus referenced files): only a real
//! change is parsed, validated and published. A timer (`watch.poll_interval`) does the
//! same read-and-compare as a fallback where events do not arrive (network file
//! systems, a secret nested in a sub-directory of its mount, a watch that failed).
//!
//! A broken edit (YAML error, unknown cluster, missing secret file, ...) is refused:
//! the last good config stays in force, the error chain is logged at warn level and
//! recorded in [`ReloadStatus`]; a later repair is picked up like any other change.
//!
//! Propagation of a ConfigMap change to the pod takes up to the kubelet sync period
//! plus its cache TTL (about a minute by default), not seconds.
//!
//! **A volume mounted with `subPath` never updates**: the kubelet bind-mounts the file
//! once and never swaps it, so no reload will ever happen. Mount the whole ConfigMap
//! as a directory and point `--config` at the file inside it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::names;
use crate::config::{Config, Secret};

/// Result of the last reload attempt (a detected content change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new config was valid and is now in force.
    Applied,
    /// The new content was refused; the previous config stays in force.
    Failed { error: String },
}

/// What the admin/status code can show about config reloads.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadStatus {
    /// The watched config file.
    pub path: PathBuf,
    /// When the watcher started (the initial config was loaded before this).
    pub started_at: SystemTime,
    /// Last time a content change was detected and evaluated.
    pub last_attempt: Option<SystemTime>,
    pub last_outcome: Option<ReloadOutcome>,
    /// Last time a changed config was applied.
    pub last_success: Option<SystemTime>,
    /// Hex SHA-256 of the text of the config file in force (compare with
    /// `sha256sum config.yaml`). Deliberately excludes secret file contents.
    pub config_hash: String,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Read-and-compare cycles done (event-driven or polled), changed or not.
    pub checks: u64,
    pub last_check: Option<SystemTime>,
}

impl ReloadStatus {
    /// JSON for `/status`; times are RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        let t = |t: Option<SystemTime>| {
            t.map(|t| humantime_serde::re::humantime::format_rfc3339_millis(t).to_string())
        };
        serde_json::json!({
            "path": self.path.display().to_string(),
            "started_at": t(Some(self.started_at)),
            "last_attempt": t(self.last_attempt),
            "last_outcome": self.last_outcome,
            "last_success": t(self.last_success),
            "config_hash": self.config_hash,
            "reloads_ok": self.reloads_ok,
            "reloads_failed": self.reloads_failed,
            "checks": self.checks,
            "last_check": t(self.last_check),
        })
    }
}

/// Shared, cheaply clonable view of the [`ReloadStatus`]; `subscribe` lets a caller
/// await the next update instead of polling.
#[derive(Debug, Clone)]
pub struct ReloadStatusHandle {
    inner: Arc<watch::Sender<ReloadStatus>>,
}

impl ReloadStatusHandle {
    fn new(status: ReloadStatus) -> Self {
        ReloadStatusHandle {
            inner: Arc::new(watch::Sender::new(status)),
        }
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> ReloadStatus {
        self.inner.borrow().clone()
    }

    /// Notified on every status update (including unchanged checks).
    pub fn subscribe(&self) -> watch::Receiver<ReloadStatus> {
        self.inner.subscribe()
    }

    pub fn to_json(&self) -> serde_json::Value {
        self.inner.borrow().to_json()
    }

    fn update(&self, f: impl FnOnce(&mut ReloadStatus)) {
        self.inner.send_modify(f);
    }
}

type ShutdownFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Builder for the watcher task. [`spawn`] covers the common case.
pub struct ConfigWatcher {
    path: PathBuf,
    initial: Arc<Config>,
    tx: watch::Sender<Arc<Config>>,
    use_notify: bool,
    shutdown: Option<ShutdownFuture>,
}

/// Watches `path` and publishes each valid changed config on `tx`. The task ends when
/// every receiver of `tx` is dropped. `initial` is the config already loaded from
/// `path` (it is not re-published).
pub fn spawn(
    path: PathBuf,
    initial: Arc<Config>,
    tx: watch::Sender<Arc<Config>>,
) -> anyhow::Result<(ReloadStatusHandle, JoinHandle<()>)> {
    ConfigWatcher::new(path, initial, tx).spawn()
}

impl ConfigWatcher {
    pub fn new(path: PathBuf, initial: Arc<Config>, tx: watch::Sender<Arc<Config>>) -> Self {
        ConfigWatcher {
            path,
            initial,
            tx,
            use_notify: true,
            shutdown: None,
        }
    }

    /// Poll only, no file-system events (tests of the fallback; file systems where
    /// inotify is unavailable).
    pub fn without_notify(mut self) -> Self {
        self.use_notify = false;
        self
    }

    /// Stop the task when `shutdown` completes (in addition to `tx` being closed).
    pub fn with_shutdown(mut self, shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(shutdown));
        self
    }

    /// Starts the watcher task on the current tokio runtime.
    pub fn spawn(self) -> anyhow::Result<(ReloadStatusHandle, JoinHandle<()>)> {
        let (ev_tx, ev_rx) = mpsc::channel::<()>(1);
        let watcher = if self.use_notify {
            Some(new_fs_watcher(ev_tx).context("cannot create file system watcher")?)
        } else {
            drop(ev_tx);
            None
        };
        let mut task = Task {
            path: self.path.clone(),
            tx: self.tx,
            status: ReloadStatusHandle::new(ReloadStatus {
                path: self.path,
                started_at: SystemTime::now(),
                last_attempt: None,
                last_outcome: None,
                last_success: None,
                config_hash: String::new(),
                reloads_ok: 0,
                reloads_failed: 0,
                checks: 0,
                last_check: None,
            }),
            watcher,
            watched: BTreeSet::new(),
            watch_failed: BTreeSet::new(),
            refs: referenced_files(&self.initial),
            seen_digest: [0; 32],
            applied_digest: [0; 32],
            poll_interval: self.initial.watch.poll_interval,
            debounce: self.initial.watch.debounce,
        };
        // Watch first, then take the digest of what is on disk: a change after this
        // read produces an event. A change between the caller's load and this read (an
        // edit landing as the proxy starts) shows as a file that is not the config in
        // force: then no digest counts as seen or applied, so the first check (an event
        // or the next poll) reads the file again and applies it. Otherwise the config
        // the caller just loaded is not re-applied.
        task.update_watches();
        let snap = read_snapshot(&task.path);
        if let Ok(cfg) = &snap.config {
            task.refs = referenced_files(cfg);
            task.update_watches();
        }
        let in_force = matches!(&snap.config, Ok(c) if *c == *self.initial);
        if in_force {
            task.seen_digest = snap.digest;
            task.applied_digest = snap.digest;
            task.status.update(|s| s.config_hash = snap.text_hash);
        } else {
            tracing::info!(path = %task.path.display(), "config file changed while the proxy started; applying it at the first check");
        }
        // Make the series exist from the start.
        metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => "ok").increment(0);
        metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => "error").increment(0);
        metrics::gauge!(names::CONFIG_LAST_RELOAD_SUCCESS).set(1.0);

        let status = task.status.clone();
        let handle = tokio::spawn(task.run(ev_rx, self.shutdown));
        Ok((status, handle))
    }
}

/// notify's callback runs on notify's own thread: forward a wake-up into tokio.
fn new_fs_watcher(ev_tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    RecommendedWatcher::new(
        move |res: notify::Result<notify::Event>| match res {
            // Our own reads generate open/close events; reacting to them would loop.
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            // A full channel already holds a pending wake-up, which is all we need.
            Ok(_) => {
                let _ = ev_tx.try_send(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "config file watch error; relying on polling");
                let _ = ev_tx.try_send(());
            }
        },
        notify::Config::default(),
    )
}

struct Task {
    path: PathBuf,
    tx: watch::Sender<Arc<Config>>,
    status: ReloadStatusHandle,
    watcher: Option<RecommendedWatcher>,
    watched: BTreeSet<PathBuf>,
    watch_failed: BTreeSet<PathBuf>,
    /// Files referenced by the last parsed config (valid or not): their directories are
    /// watched and their content is part of the digest.
    refs: Vec<PathBuf>,
    seen_digest: [u8; 32],
    applied_digest: [u8; 32],
    poll_interval: Duration,
    debounce: Duration,
}

impl Task {
    async fn run(mut self, mut events: mpsc::Receiver<()>, shutdown: Option<ShutdownFuture>) {
        let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
        let mut events_open = self.watcher.is_some();
        let mut poll = self.new_poll_timer();
        // Debounce: re-read `debounce` after the last event, but no later than
        // max(10 x debounce, 1s) after the first one, so a directory with constant
        // activity cannot postpone a reload forever.
        let mut pending: Option<(Instant, Instant)> = None;
        tracing::info!(path = %self.path.display(), notify = events_open, "watching config file");
        loop {
            let due = pending.map(|(first, last)| {
                (last + self.debounce).min(first + (self.debounce * 10).max(Duration::from_secs(1)))
            });
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.tx.closed() => break,
                ev = events.recv(), if events_open => match ev {
                    Some(()) => {
                        let now = Instant::now();
                        pending = Some((pending.map_or(now, |(first, _)| first), now));
                    }
                    None => events_open = false,
                },
                _ = sleep_until_opt(due) => {
                    pending = None;
                    self.check().await;
                }
                _ = poll.tick() => self.check().await,
            }
            let want = (self.poll_interval, self.debounce);
            let cfg = self.tx.borrow().watch.clone();
            if (cfg.poll_interval, cfg.debounce) != want {
                self.poll_interval = cfg.poll_interval;
                self.debounce = cfg.debounce;
                poll = self.new_poll_timer();
            }
        }
        tracing::debug!(path = %self.path.display(), "config watcher stopped");
    }

    fn new_poll_timer(&self) -> tokio::time::Interval {
        // A zero interval would spin (and `interval` panics on zero).
        let period = self.poll_interval.max(Duration::from_millis(50));
        let mut poll = tokio::time::interval_at(Instant::now() + period, period);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll
    }

    /// Watches the directories of the config file and of every referenced file.
    fn update_watches(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted: BTreeSet<PathBuf> = std::iter::once(&self.path)
            .chain(self.refs.iter())
            .map(|p| parent_dir(p))
            .collect();
        for dir in self
            .watched
            .difference(&wanted)
            .cloned()
            .collect::<Vec<_>>()
        {
            let _ = watcher.unwatch(&dir);
            self.watched.remove(&dir);
        }
        for dir in wanted {
            if self.watched.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching directory");
                    self.watch_failed.remove(&dir);
                    self.watched.insert(dir);
                }
                Err(e) => {
                    // Retried on every check; warn only once per directory.
                    if self.watch_failed.insert(dir.clone()) {
                        tracing::warn!(dir = %dir.display(), error = %e,
                            "cannot watch directory; changes there are seen by polling only");
                    }
                }
            }
        }
    }

    /// Re-reads everything, and parses/validates/publishes only on a content change.
    async fn check(&mut self) {
        let path = self.path.clone();
        let seen = self.seen_digest;
        // File reads and validation touch the file system (possibly a slow network
        // mount): keep them off the async worker threads.
        let checked = tokio::task::spawn_blocking(move || {
            let snap = read_snapshot(&path);
            let refs = snap.config.as_ref().ok().map(referenced_files);
            // Only a content change is parsed into a verdict.
            let verdict = (snap.digest != seen).then(|| -> anyhow::Result<Config> {
                let cfg = snap.config?;
                cfg.validate()
                    .with_context(|| format!("invalid config file {}", path.display()))?;
                Ok(cfg)
            });
            (snap.digest, snap.text_hash, refs, verdict)
        })
        .await;
        let (digest, text_hash, refs, verdict) = match checked {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "config check task failed");
                return;
            }
        };
        let now = SystemTime::now();
        if let Some(refs) = refs {
            self.refs = refs;
        }
        self.update_watches();

        let Some(result) = verdict else {
            self.status.update(|s| {
                s.checks += 1;
                s.last_check = Some(now);
            });
            return;
        };
        self.seen_digest = digest;

        match result {
            Ok(cfg) => {
                let unchanged = digest == self.applied_digest;
                self.applied_digest = digest;
                if unchanged {
                    // Back to exactly what is in force (e.g. a broken edit reverted):
                    // nothing to publish, but the status recovers.
                    tracing::info!(path = %self.path.display(),
                        "config file is valid again and identical to the config in force");
                } else {
                    tracing::info!(path = %self.path.display(), hash = %text_hash,
                        active_cluster = %cfg.active_cluster, "config reloaded");
                    self.tx.send_replace(Arc::new(cfg));
                }
                metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => "ok").increment(1);
                metrics::gauge!(names::CONFIG_LAST_RELOAD_SUCCESS).set(1.0);
                self.status.update(|s| {
                    s.checks += 1;
                    s.last_check = Some(now);
                    s.last_attempt = Some(now);
                    s.last_outcome = Some(ReloadOutcome::Applied);
                    s.last_success = Some(now);
                    s.config_hash = text_hash;
                    s.reloads_ok += 1;
                });
            }
            Err(e) => {
                // `{:#}` is the whole context chain. Config errors name files and
                // fields, never secret values (`Secret` redacts itself).
                let error = format!("{e:#}");
                tracing::warn!(path = %self.path.display(), error = %error,
                    "config change refused; keeping the last good config");
                metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => "error").increment(1);
                metrics::gauge!(names::CONFIG_LAST_RELOAD_SUCCESS).set(0.0);
                self.status.update(|s| {
                    s.checks += 1;
                    s.last_check = Some(now);
                    s.last_attempt = Some(now);
                    s.last_outcome = Some(ReloadOutcome::Failed { error });
                    s.reloads_failed += 1;
                });
            }
        }
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The directory to watch for a file; `""` (a bare relative name) means the cwd.
fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Files whose content the config depends on: TLS files and `{file: ...}` secrets.
pub fn referenced_files(cfg: &Config) -> Vec<PathBuf> {
    let mut out = BTreeSet::new();
    for c in cfg.clusters.values() {
        if let Some(tls) = &c.tls {
            for f in [&tls.ca_file, &tls.client_cert_file, &tls.client_key_file]
                .into_iter()
                .flatten()
            {
                out.insert(f.clone());
            }
        }
        if let Some(sasl) = &c.sasl {
            for s in [&sasl.username, &sasl.password, &sasl.token]
                .into_iter()
                .flatten()
            {
                if let Secret::File { file } = s {
                    out.insert(file.clone());
                }
            }
        }
    }
    out.into_iter().collect()
}

/// One read of the config file and everything it references.
struct Snapshot {
    /// Over the config text and each referenced file's content (or read error). Never
    /// leaves this module: a hash of a short password could be brute-forced.
    digest: [u8; 32],
    /// Hex SHA-256 of the config text alone ("" if unreadable).
    text_hash: String,
    /// The parsed (not yet validated) config, or why the file could not be read/parsed.
    config: anyhow::Result<Config>,
}

fn read_snapshot(path: &Path) -> Snapshot {
    let mut h = Sha256::new();
    let text = match std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))
    {
        Ok(t) => t,
        Err(e) => {
            // Digest the error so a persistently missing file is reported once.
            h.update(b"unreadable\0");
            h.update(format!("{e:#}").as_bytes());
            return Snapshot {
                digest: h.finalize().into(),
                text_hash: String::new(),
                config: Err(e),
            };
        }
    };
    let text_hash = hex(&Sha256::digest(text.as_bytes()));
    h.update((text.len() as u64).to_le_bytes());
    h.update(text.as_bytes());
    let config = Config::parse(&text)
        .with_context(|| format!("cannot parse config file {}", path.display()));
    if let Ok(cfg) = &config {
        for f in referenced_files(cfg) {
            let p = f.as_os_str().as_encoded_bytes();
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
            match std::fs::read(&f) {
                Ok(content) => {
                    h.update(b"ok");
                    h.update((content.len() as u64).to_le_bytes());
                    h.update(&content);
                }
                Err(e) => {
                    h.update(b"err");
                    h.update(format!("{:?}", e.kind()).as_bytes());
                }
            }
        }
    }
    Snapshot {
        digest: h.finalize().into(),
        text_hash,
        config,
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const WAIT: Duration = Duration::from_secs(10);
    /// Long enough that only file events can trigger a check during a test.
    const NO_POLL: &str = "1h";

    fn yaml(active: &str, poll: &str, north_extra: &str) -> String {
        format!(
            r#"listen: {{address: 127.0.0.1, bootstrap_port: 19092, broker_port_base: 19100}}
active_cluster: {active}
clusters:
  north: {{bootstrap_servers: ["127.0.0.1:1"]{north_extra}}}
  west: {{bootstrap_servers: ["127.0.0.1:2"]}}
watch: {{poll_interval: {poll}, debounce: 50ms}}
"#
        )
    }

    struct Running {
        rx: watch::Receiver<Arc<Config>>,
        status: ReloadStatusHandle,
        task: JoinHandle<()>,
    }

    fn start_with(path: &Path, f: impl FnOnce(ConfigWatcher) -> ConfigWatcher) -> Running {
        let initial = Arc::new(Config::load(path).expect("initial config"));
        let (tx, rx) = watch::channel(initial.clone());
        let (status, task) = f(ConfigWatcher::new(path.to_path_buf(), initial, tx))
            .spawn()
            .unwrap();
        Running { rx, status, task }
    }

    fn start(path: &Path) -> Running {
        start_with(path, |w| w)
    }

    impl Running {
        async fn next_config(&mut self) -> Arc<Config> {
            tokio::time::timeout(WAIT, self.rx.changed())
                .await
                .expect("timed out waiting for a published config")
                .expect("watcher stopped");
            self.rx.borrow_and_update().clone()
        }

        async fn wait_status(&self, pred: impl FnMut(&ReloadStatus) -> bool) -> ReloadStatus {
            let mut sub = self.status.subscribe();
            let s = tokio::time::timeout(WAIT, sub.wait_for(pred))
                .await
                .expect("timed out waiting for the reload status")
                .expect("status sender dropped");
            s.clone()
        }

        /// Waits until a check has run that started after this call.
        async fn two_more_checks(&self) -> ReloadStatus {
            let c0 = self.status.snapshot().checks;
            self.wait_status(|s| s.checks >= c0 + 2).await
        }
    }

    fn rename_over(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    /// Reproduces the kubelet's atomic update of a ConfigMap volume.
    struct KubeletVolume {
        dir: PathBuf,
        current: Option<String>,
        n: u32,
    }

    impl KubeletVolume {
        fn new(dir: &Path, key: &str, text: &str) -> Self {
            let mut v = KubeletVolume {
                dir: dir.to_path_buf(),
                current: None,
                n: 0,
            };
            v.update(key, text);
            std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).unwrap();
            v
        }

        fn update(&mut self, key: &str, text: &str) {
            self.n += 1;
            let ts = format!("..2026_11_22_07_00_0{}.123", self.n);
            fs::create_dir(self.dir.join(&ts)).unwrap();
            fs::write(self.dir.join(&ts).join(key), text).unwrap();
            let tmp = self.dir.join("..data_tmp");
            std::os::unix::fs::symlink(&ts, &tmp).unwrap();
            fs::rename(&tmp, self.dir.join("..data")).unwrap();
            if let Some(old) = self.current.replace(ts) {
                fs::remove_dir_all(self.dir.join(old)).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn kubelet_symlink_swap_is_seen_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut vol = KubeletVolume::new(dir.path(), "config.yaml", &yaml("north", NO_POLL, ""));
        let path = dir.path().join("config.yaml");
        let mut w = start(&path);

        vol.update("config.yaml", &yaml("west", NO_POLL, ""));
        assert_eq!(w.next_config().await.active_cluster, "west");
        // The inode that was first read is gone now; a file watch would be dead.
        vol.update("config.yaml", &yaml("north", NO_POLL, ""));
        assert_eq!(w.next_config().await.active_cluster, "north");

        let s = w.status.snapshot();
        assert_eq!(s.last_outcome, Some(ReloadOutcome::Applied));
        assert_eq!((s.reloads_ok, s.reloads_failed), (2, 0));
        assert_eq!(
            s.config_hash,
            hex(&Sha256::digest(yaml("north", NO_POLL, "").as_bytes()))
        );
        w.task.abort();
    }

    /// An edit that lands after the proxy loaded its config but before the watcher
    /// started (a ConfigMap update as the pod starts) is applied, not taken for the
    /// config in force. No file event comes after the start: the first poll finds it.
    #[tokio::test]
    async fn an_edit_between_the_load_and_the_watch_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, yaml("north", "100ms", "")).unwrap();
        let initial = Arc::new(Config::load(&path).unwrap());
        rename_over(&path, &yaml("west", "100ms", ""));
        let (tx, mut rx) = watch::channel(initial.clone());
        let (status, task) = ConfigWatcher::new(path.clone(), initial, tx)
            .spawn()
            .unwrap();
        tokio::time::timeout(WAIT, rx.changed())
            .await
            .expect("the edit made while starting was never applied")
            .unwrap();
        assert_eq!(rx.borrow_and_update().active_cluster, "west");
        let s = status.snapshot();
        assert_eq!((s.reloads_ok, s.reloads_failed), (1, 0));
        task.abort();
    }

    #[tokio::test]
    async fn in_place_rewrite_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, yaml("north", NO_POLL, "")).unwrap();
        let mut w = start(&path);
        fs::write(&path, yaml("west", NO_POLL, "")).unwrap();
        assert_eq!(w.next_config().await.active_cluster, "west");
        w.task.abort();
    }

    #[tokio::test]
    async fn rename_over_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, yaml("north", NO_POLL, "")).unwrap();
        let mut w = start(&path);
        rename_over(&path, &yaml("west", NO_POLL, ""));
        assert_eq!(w.next_config().await.active_cluster, "west");
        rename_over(&path, &yaml("north", NO_POLL, ""));
        assert_eq!(w.next_config().await.active_cluster, "north");
        w.task.abort();
    }

    #[tokio::test]
    async fn broken_edit_keeps_last_good_config_until_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, yaml("north", NO_POLL, "")).unwrap();
        let mut w = start(&path);

        // Validation error.
        rename_over(&path, &yaml("south", NO_POLL, ""));
        let s = w.wait_status(|s| s.reloads_failed == 1).await;
        match &s.last_outcome {
            Some(ReloadOutcome::Failed { error }) => {
                assert!(error.contains("active_cluster"), "{error}");
                assert!(error.contains("south"), "{error}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(s.last_success.is_none());

        // YAML error.
        rename_over(&path, "listen: [unclosed\n");
        let s = w.wait_status(|s| s.reloads_failed == 2).await;
        match &s.last_outcome {
            Some(ReloadOutcome::Failed { error }) => {
                assert!(error.contains("cannot parse config file"), "{error}")
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(
            !w.rx.has_changed().unwrap(),
            "a broken config was published"
        );
        assert_eq!(w.rx.borrow().active_cluster, "north");
        assert_eq!(s.reloads_ok, 0);

        // Repair.
        rename_over(&path, &yaml("west", NO_POLL, ""));
        assert_eq!(w.next_config().await.active_cluster, "west");
        let s = w.wait_status(|s| s.reloads_ok == 1).await;
        assert_eq!(s.last_outcome, Some(ReloadOutcome::Applied));
        assert!(s.last_success.is_some());
        let json = w.status.to_json();
        assert_eq!(json["last_outcome"]["result"], "applied");
        assert_eq!(json["reloads_failed"], 2);
        w.task.abort();
    }

    #[tokio::test]
    async fn secret_file_change_is_seen() {
        let cfg_dir = tempfile::tempdir().unwrap();
        let secret_dir = tempfile::tempdir().unwrap();
        let pw = secret_dir.path().join("password");
        fs::write(&pw, "hunter2\n").unwrap();
        let sasl = format!(
            ", sasl: {{mechanism: PLAIN, username: alice, password: {{file: {}}}}}",
            pw.display()
        );
        let path = cfg_dir.path().join("config.yaml");
        fs::write(&path, yaml("north", NO_POLL, &sasl)).unwrap();
        let mut w = start(&path);
        let password = |c: &Config| {
            c.clusters["north"]
                .sasl
                .as_ref()
                .unwrap()
                .password
                .as_ref()
                .unwrap()
                .resolve()
        };

        // Only the secret changes; the config file is untouched.
        rename_over(&pw, "correct-horse\n");
        let c = w.next_config().await;
        assert_eq!(password(&c).unwrap(), "correct-horse");

        // The secret disappears: refused, then its return is picked up.
        fs::remove_file(&pw).unwrap();
        let s = w.wait_status(|s| s.reloads_failed == 1).await;
        match &s.last_outcome {
            Some(ReloadOutcome::Failed { error }) => {
                assert!(error.contains("clusters.north.sasl.password"), "{error}");
                assert!(!error.contains("correct-horse"), "{error}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        fs::write(&pw, "battery-staple\n").unwrap();
        let c = w.next_config().await;
        assert_eq!(password(&c).unwrap(), "battery-staple");
        w.task.abort();
    }

    #[tokio::test]
    async fn touch_or_identical_rewrite_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let text = yaml("north", "200ms", "");
        fs::write(&path, &text).unwrap();
        let w = start(&path);

        let f = fs::File::options().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        drop(f);
        w.two_more_checks().await;
        fs::write(&path, &text).unwrap();
        rename_over(&path, &text);
        let s = w.two_more_checks().await;

        assert!(
            !w.rx.has_changed().unwrap(),
            "unchanged content was published"
        );
        assert_eq!((s.reloads_ok, s.reloads_failed), (0, 0));
        assert!(s.last_attempt.is_none());
        w.task.abort();
    }

    #[tokio::test]
    async fn polling_fallback_without_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, yaml("north", "200ms", "")).unwrap();
        let mut w = start_with(&path, |w| w.without_notify());
        rename_over(&path, &yaml("west", "200ms", ""));
        assert_eq!(w.next_config().await.active_cluster, "west");
        w.task.abort();
    }

    #[tokio::test]
    async fn stops_when_receivers_dropped_or_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, yaml("north", NO_POLL, "")).unwrap();

        let w = start(&path);
        drop(w.rx);
        tokio::time::timeout(WAIT, w.task)
            .await
            .expect("watcher did not stop when its receivers were dropped")
            .unwrap();

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let w = start_with(&path, |w| {
            w.with_shutdown(async move {
                let _ = stop_rx.await;
            })
        });
        stop_tx.send(()).unwrap();
        tokio::time::timeout(WAIT, w.task)
            .await
            .expect("watcher did not stop on shutdown")
            .unwrap();
    }

    #[test]
    fn referenced_files_lists_secret_and_tls_files() {
        let text = yaml(
            "north",
            NO_POLL,
            ", tls: {ca_file: /s/ca.pem}, sasl: {mechanism: PLAIN, username: {file: /s/user}, password: inline}",
        );
        let cfg = Config::parse(&text).unwrap();
        assert_eq!(
            referenced_files(&cfg),
            vec![PathBuf::from("/s/ca.pem"), PathBuf::from("/s/user")]
        );
        assert_eq!(parent_dir(Path::new("pw")), PathBuf::from("."));
    }
}
