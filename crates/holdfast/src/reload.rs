//! Routes-file reloading: on change (inotify, through `notify`) and on SIGHUP; the TLS
//! certificate folder's likewise ([`spawn_certs`]).
//!
//! The folder holding the file is watched, not the file, so editors that save by renaming a new
//! file over the old one are seen too. Change events land in a one-slot queue: a reload already
//! pending covers any event that arrives meanwhile (overflow policy: drop the event). A file with
//! an error is logged with its line and the old table stays in force; connections are never
//! touched, because a request reads the table once when it is routed. A certificate file that
//! cannot be used is logged naming the file and its name keeps the certificate it had; open
//! TLS connections keep the session they have, and new handshakes see the new folder.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::app::App;
use crate::tls::Certificates;

/// Quiet period after a change event before the file is read, so a burst of writes is one reload.
const SETTLE: Duration = Duration::from_millis(200);

/// Starts watching the routes file and SIGHUP. Keep the returned watcher alive while serving.
pub fn spawn(app: Arc<App>) -> Option<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let watcher = app.routes.path().and_then(|path| watch(path, tx.clone()));
    on_sighup(tx, "routes");
    debounced(rx, move || match app.routes.reload() {
        Ok(n) => {
            tracing::info!(routes = n, "routes reloaded");
            let sig_key = &app.config.grip.sig_key;
            if let Some(w) = app.routes.current().default_sig_key_warning(sig_key) {
                tracing::warn!("{w}");
            }
        }
        Err(e) => tracing::error!("routes file rejected, previous routes stay in force: {e}"),
    });
    watcher
}

/// Starts watching the TLS certificate folder, when there is one, and SIGHUP. Keep the
/// returned watcher alive while serving.
pub fn spawn_certs(certs: Arc<Certificates>) -> Option<notify::RecommendedWatcher> {
    let dir = certs.dir()?.path().to_path_buf();
    let (tx, rx) = mpsc::channel::<()>(1);
    let watcher = watch_dir(&dir, "the TLS certificate folder", |_| true, tx.clone());
    on_sighup(tx, "TLS certificates");
    debounced(rx, move || {
        let Some(dir) = certs.dir() else { return };
        match dir.reload() {
            Ok(rejected) => {
                for e in &rejected {
                    tracing::error!("certificate rejected, the previous one stays in force: {e}");
                }
                tracing::info!(
                    certificates = dir.len(),
                    rejected = rejected.len(),
                    "TLS certificates reloaded"
                );
            }
            Err(e) => tracing::error!(
                "TLS certificate folder not read, the previous certificates stay in force: {e}"
            ),
        }
    });
    watcher
}

/// Queues a reload on `tx` at every SIGHUP (a full queue means one is pending already).
fn on_sighup(tx: mpsc::Sender<()>, what: &'static str) {
    // Installed now, before the server logs that it is listening, not later in a task: until
    // it is, a SIGHUP would end the process (its default action).
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; {what} reload only on file change");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = tx.try_send(());
            }
        });
    }
    #[cfg(not(unix))]
    drop((tx, what));
}

/// Runs `reload` once per burst of queued events: after [`SETTLE`], with the events that
/// arrived meanwhile dropped. Ends when every sender is gone.
fn debounced(mut rx: mpsc::Receiver<()>, mut reload: impl FnMut() + Send + 'static) {
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            reload();
        }
    });
}

fn watch(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let name = path.file_name()?.to_os_string();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    watch_dir(
        &dir,
        "the routes file",
        move |p| p.file_name() == Some(&name),
        tx,
    )
}

/// Watches `dir`, sending to `tx` on every change to a file `wanted` picks; `what` names it in
/// the warning when it cannot be watched.
fn watch_dir(
    dir: &Path,
    what: &str,
    wanted: impl Fn(&Path) -> bool + Send + 'static,
    tx: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            if event.kind.is_access() {
                return;
            }
            if event.paths.iter().any(|p| wanted(p)) {
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch {what}; reload with SIGHUP"))
    .ok()?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!(error = %e, dir = %dir.display(), "cannot watch {what}"))
        .ok()?;
    Some(watcher)
}
