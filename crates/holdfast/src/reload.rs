//! Routes-file reloading: on change (inotify, through `notify`) and on SIGHUP.
//!
//! The folder holding the file is watched, not the file, so editors that save by renaming a new
//! file over the old one are seen too. Change events land in a one-slot queue: a reload already
//! pending covers any event that arrives meanwhile (overflow policy: drop the event). A file with
//! an error is logged with its line and the old table stays in force; connections are never
//! touched, because a request reads the table once when it is routed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::app::App;

/// Quiet period after a change event before the file is read, so a burst of writes is one reload.
const SETTLE: Duration = Duration::from_millis(200);

/// Starts watching the routes file and SIGHUP. Keep the returned watcher alive while serving.
pub fn spawn(app: Arc<App>) -> Option<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = app.routes.path().and_then(|path| watch(path, tx.clone()));
    #[cfg(unix)]
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; routes reload only on file change");
                return;
            };
            while hup.recv().await.is_some() {
                let _ = tx.try_send(());
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            match app.routes.reload() {
                Ok(n) => {
                    tracing::info!(routes = n, "routes reloaded");
                    let sig_key = &app.config.grip.sig_key;
                    if let Some(w) = app.routes.current().default_sig_key_warning(sig_key) {
                        tracing::warn!("{w}");
                    }
                }
                Err(e) => {
                    tracing::error!("routes file rejected, previous routes stay in force: {e}")
                }
            }
        }
    });
    watcher
}

fn watch(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let name = path.file_name()?.to_os_string();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            if event.kind.is_access() {
                return;
            }
            if event.paths.iter().any(|p| p.file_name() == Some(&name)) {
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the routes file; reload with SIGHUP"))
    .ok()?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(
            |e| tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the routes folder"),
        )
        .ok()?;
    Some(watcher)
}
