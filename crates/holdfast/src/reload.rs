//! Routes-file reloading: on change (inotify, through `notify`) and on SIGHUP; the TLS
//! certificates' likewise ([`spawn_certs`]): the `--tls-certs` folder, the `--tls-cert` and
//! `--tls-key` files, and the publish listener's.
//!
//! The folder holding the file is watched, not the file, so editors that save by renaming a new
//! file over the old one are seen too. Change events land in a one-slot queue: a reload already
//! pending covers any event that arrives meanwhile (overflow policy: drop the event). A file with
//! an error is logged with its line and the old table stays in force; connections are never
//! touched, because a request reads the table once when it is routed. A certificate file that
//! cannot be used is logged naming the file and the certificate it would replace stays in
//! force; open TLS connections keep the session they have, and new handshakes see the new
//! files. The folder of a certificate or key file is watched whole, not only the file's name,
//! so a replacement made by swapping a symlink (certbot's `live/`, a Kubernetes secret) is seen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::app::App;
use crate::tls::pair::{PairFiles, Reloaded};
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

/// Starts watching the TLS certificates, when there are any — the folder of `certs`, its
/// `--tls-cert`/`--tls-key` pair, the publish listener's pair — and SIGHUP, with one
/// settle-then-reload loop for all of them. Keep the returned watchers alive while serving.
pub fn spawn_certs(
    certs: Option<Arc<Certificates>>,
    publish: Option<Arc<PairFiles>>,
) -> Vec<notify::RecommendedWatcher> {
    let dir = certs
        .as_ref()
        .and_then(|c| c.dir())
        .map(|d| d.path().to_path_buf());
    let has_single = certs.as_ref().is_some_and(|c| c.single().is_some());
    if dir.is_none() && !has_single && publish.is_none() {
        return Vec::new();
    }
    let (tx, rx) = mpsc::channel::<()>(1);
    let mut folders: Vec<PathBuf> = dir.into_iter().collect();
    let pairs = certs.as_ref().and_then(|c| c.single()).into_iter();
    for file in pairs.chain(publish.as_deref()).flat_map(PairFiles::paths) {
        let folder = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !folders.contains(&folder) {
            folders.push(folder);
        }
    }
    let watchers = (folders.iter())
        .filter_map(|f| watch_dir(f, "a TLS certificate folder", |_| true, tx.clone()))
        .collect();
    on_sighup(tx, "TLS certificates");
    debounced(rx, move || {
        if let Some(dir) = certs.as_ref().and_then(|c| c.dir()) {
            reload_dir(dir);
        }
        if let Some(pair) = certs.as_ref().and_then(|c| c.single()) {
            reload_pair(pair, "client listeners");
        }
        if let Some(pair) = &publish {
            reload_pair(pair, "publish listener");
        }
    });
    watchers
}

fn reload_dir(dir: &crate::tls::dir::CertDir) {
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
}

fn reload_pair(pair: &PairFiles, listener: &str) {
    let [cert, key] = pair.paths();
    match pair.reload() {
        Ok(Reloaded::Changed) => tracing::info!(
            cert = %cert.display(),
            key = %key.display(),
            "TLS certificate of the {listener} reloaded"
        ),
        Ok(Reloaded::Unchanged) => {}
        Err(e) => tracing::error!(
            "certificate of the {listener} rejected, the previous one stays in force: {e}"
        ),
    }
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
