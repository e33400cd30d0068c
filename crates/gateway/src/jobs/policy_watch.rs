//! The live policy: the policy file is read again when it changes and on `SIGHUP`.
//!
//! The file's directory is watched, not the file itself, so a replacement by rename (an editor's
//! save, a Kubernetes ConfigMap's `..data` swap) is seen like an edit in place. Events are
//! debounced for [`DEBOUNCE`]; a file event whose content is the policy already in force is
//! ignored, a `SIGHUP` always reloads. A valid policy applies to requests that start afterwards
//! ([`App::apply_policy`]); an invalid one is refused with one log line naming the key, and the
//! last good policy keeps serving.

use crate::app::App;
use crate::config::Policy;
use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long to wait after a file event for the writes that follow it.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trigger {
    File,
    Hangup,
}

/// Starts watching `path` and listening for `SIGHUP`, then reloads on either until the process
/// ends. Fails only when the watch or the signal handler cannot be set up.
pub fn start(app: Arc<App>, path: PathBuf) -> std::io::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().map(ToOwned::to_owned);
    let file_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let ours = event.paths.iter().any(|p| {
            let name = p.file_name();
            name == file_name.as_deref() || name.is_some_and(|n| n == "..data")
        });
        if ours {
            let _ = file_tx.send(Trigger::File);
        }
    })
    .map_err(std::io::Error::other)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(std::io::Error::other)?;
    #[cfg(unix)]
    {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                if tx.send(Trigger::Hangup).is_err() {
                    break;
                }
            }
        });
    }
    tokio::spawn(run(app, path, rx, watcher));
    Ok(())
}

async fn run(
    app: Arc<App>,
    path: PathBuf,
    mut triggers: mpsc::UnboundedReceiver<Trigger>,
    _watcher: notify::RecommendedWatcher,
) {
    let mut in_force = digest(&path);
    while let Some(first) = triggers.recv().await {
        let mut trigger = first;
        tokio::time::sleep(DEBOUNCE).await;
        while let Ok(more) = triggers.try_recv() {
            if more == Trigger::Hangup {
                trigger = Trigger::Hangup;
            }
        }
        let now = digest(&path);
        if trigger == Trigger::File && now.is_some() && now == in_force {
            continue;
        }
        if reload(&app, &path, trigger, now).await {
            in_force = now;
        }
    }
}

/// Loads and applies the policy (whose content hash is `sha256`); answers whether it is now in
/// force. Logs one line either way.
async fn reload(app: &App, path: &Path, trigger: Trigger, sha256: Option<[u8; 32]>) -> bool {
    let shown = path.display().to_string();
    let outcome = match Policy::load(&shown) {
        Ok(policy) => {
            for warning in policy.warnings() {
                tracing::warn!("policy warning: {warning}");
            }
            app.apply_policy(policy).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(needs_restart) => {
            let sha256 = sha256.map(|d| hex::encode(&d[..6])).unwrap_or_default();
            tracing::info!(path = ?shown, trigger = ?trigger, sha256, "policy reloaded");
            for key in needs_restart {
                tracing::warn!(key, "policy: this change applies only after a restart");
            }
            true
        }
        Err(error) => {
            tracing::warn!(
                path = ?shown,
                trigger = ?trigger,
                "policy refused, the last good policy keeps serving: {error}"
            );
            false
        }
    }
}

/// The file's content hash, to tell a real change from a touch.
fn digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}
