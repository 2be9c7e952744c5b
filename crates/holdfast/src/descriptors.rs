//! The file-descriptor budget shared by client and origin sockets.
//!
//! A process may hold only so many open files. Client connections, origin connections (pooled,
//! in flight, or a relayed WebSocket's upstream) all take one descriptor each, and when they run
//! out the kernel refuses *every* new socket — including the publish API's. So Holdfast splits
//! the open-file limit three ways: the publish API's connections get a share of their own
//! (`limits.max_publish_connections`), the reserve (`limits.reserved_descriptors`) is left for
//! the cluster's Redis connections and files opened at run time, uncounted, and client and
//! origin sockets share the rest, the budget (or `limits.descriptors` when set).
//!
//! When the budget is spent, a new client waits in the accept backlog until a socket closes, and
//! a new origin connection fails at once with [`Exhausted`] (the client gets `503`), so the
//! connections already open and the publish API keep working. When the publish share is spent,
//! a new publish connection waits in its listener's backlog, and the clients are not touched.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;

/// Below this many descriptors left after the reserve, half the limit is used instead.
const MIN_BUDGET: u64 = 64;

/// The shared budget, and the publish API's share. Cloning shares them.
#[derive(Clone, Debug)]
pub struct Descriptors {
    permits: Arc<Semaphore>,
    total: usize,
    publish: Arc<Semaphore>,
    publish_total: usize,
}

/// No descriptor is left in the budget for an origin connection.
#[derive(Debug, thiserror::Error)]
#[error(
    "no file descriptor free for an origin connection: all {0} of the budget are in use \
     (limits.descriptors, or the open-file limit minus limits.reserved_descriptors)"
)]
pub struct Exhausted(pub usize);

/// One descriptor taken from the budget; given back when dropped.
#[derive(Debug)]
pub struct Held {
    _permit: OwnedSemaphorePermit,
}

impl Descriptors {
    /// A budget of `limits.descriptors`, or, when that is 0, of the process's open-file limit
    /// minus `limits.reserved_descriptors` and the publish API's share,
    /// `limits.max_publish_connections`.
    pub fn from_limits(limits: &LimitsConfig) -> Descriptors {
        let publish_total = limits.max_publish_connections;
        let total = if limits.descriptors > 0 {
            limits.descriptors
        } else {
            let kept = limits.reserved_descriptors.saturating_add(publish_total);
            derived(open_file_limit(), kept as u64)
        };
        Descriptors {
            permits: Arc::new(Semaphore::new(total)),
            total,
            publish: Arc::new(Semaphore::new(publish_total)),
            publish_total,
        }
    }

    /// The size of the budget.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Descriptors counted as open now.
    pub fn in_use(&self) -> usize {
        self.total - self.permits.available_permits()
    }

    /// Waits for a descriptor (for a client connection about to be accepted).
    pub async fn acquire(&self) -> Held {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("descriptor semaphore is never closed");
        Held { _permit: permit }
    }

    /// Waits for a descriptor of the publish API's share (for a publish connection about to be
    /// accepted).
    pub async fn acquire_publish(&self) -> Held {
        let permit = self
            .publish
            .clone()
            .acquire_owned()
            .await
            .expect("descriptor semaphore is never closed");
        Held { _permit: permit }
    }

    /// The size of the publish API's share.
    pub fn publish_total(&self) -> usize {
        self.publish_total
    }

    /// Publish API connections open now.
    pub fn publish_in_use(&self) -> usize {
        self.publish_total - self.publish.available_permits()
    }

    /// Takes a descriptor if one is free (for an origin connection).
    pub fn try_acquire(&self) -> Result<Held, Exhausted> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map(|p| Held { _permit: p })
            .map_err(|_| Exhausted(self.total))
    }
}

/// The budget left of the open-file `limit` once `kept` (the reserve and the publish share) is
/// set aside.
fn derived(limit: Option<u64>, kept: u64) -> usize {
    let Some(limit) = limit else {
        // No limit at all: only the connection cap applies.
        return usize::MAX >> 4;
    };
    let budget = match limit.checked_sub(kept) {
        Some(b) if b >= MIN_BUDGET => b,
        _ => {
            tracing::warn!(
                limit,
                kept,
                "limits.reserved_descriptors and limits.max_publish_connections leave too few \
                 of the open-file limit for clients and origins; using half of it"
            );
            limit / 2
        }
    };
    usize::try_from(budget).unwrap_or(usize::MAX >> 4)
}

/// Raises the soft open-file limit to the hard one, as servers do at startup, and returns the
/// limit now in force (`None`: unlimited or unknown).
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let now = getrlimit(Resource::Nofile);
        if now.current != now.maximum {
            let raised = Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!(error = %e, "could not raise the open-file limit");
            }
        }
    }
    open_file_limit()
}

/// The soft open-file limit (`None`: unlimited or unknown).
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Whether `e`, or an error it wraps, is [`Exhausted`].
pub fn is_exhausted(e: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<Exhausted>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A connector that takes a descriptor from the budget for every connection it opens; the
/// connection gives it back when it closes.
#[derive(Clone, Debug)]
pub struct Budgeted<C> {
    inner: C,
    budget: Descriptors,
}

impl<C> Budgeted<C> {
    /// Wraps `inner`.
    pub fn new(inner: C, budget: Descriptors) -> Budgeted<C> {
        Budgeted { inner, budget }
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl<C> tower_service::Service<Uri> for Budgeted<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = BudgetedConn<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self.budget.try_acquire() {
            Ok(held) => {
                let connecting = self.inner.call(uri);
                Box::pin(async move {
                    let io = connecting.await.map_err(Into::into)?;
                    Ok(BudgetedConn { io, _held: held })
                })
            }
            Err(e) => Box::pin(std::future::ready(Err(e.into()))),
        }
    }
}

/// A connection holding its descriptor from the budget.
#[derive(Debug)]
pub struct BudgetedConn<T> {
    io: T,
    _held: Held,
}

impl<T: Connection> Connection for BudgetedConn<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: Read + Unpin> Read for BudgetedConn<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for BudgetedConn<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn derived_budget_keeps_the_reserve() {
        assert_eq!(derived(Some(20_000), 512), 19_488);
        assert_eq!(derived(Some(1024), 2000), 512);
        assert_eq!(derived(Some(600), 512), 88);
        assert_eq!(derived(Some(560), 512), 280);
        // The default reserve and publish share out of a common hard limit.
        assert_eq!(derived(Some(65_536), 512 + 1024), 64_000);
    }

    #[test]
    fn the_publish_share_is_apart_from_the_budget() {
        let limits = LimitsConfig {
            descriptors: 1,
            max_publish_connections: 2,
            ..LimitsConfig::default()
        };
        let d = Descriptors::from_limits(&limits);
        let _client = d.try_acquire().expect("the budget's one");
        assert!(d.try_acquire().is_err());
        // A full budget leaves the publish share as it was, and the other way round.
        let a = d
            .acquire_publish()
            .now_or_never()
            .expect("a publish descriptor");
        let _b = d.acquire_publish().now_or_never().expect("a second one");
        assert_eq!(d.publish_in_use(), 2);
        assert!(d.acquire_publish().now_or_never().is_none(), "share spent");
        assert_eq!(d.in_use(), 1);
        drop(a);
        assert_eq!(d.publish_in_use(), 1);
        assert!(d.acquire_publish().now_or_never().is_some());
    }

    #[test]
    fn explicit_budget_is_counted_and_given_back() {
        let limits = LimitsConfig {
            descriptors: 2,
            ..LimitsConfig::default()
        };
        let d = Descriptors::from_limits(&limits);
        assert_eq!(d.total(), 2);
        let a = d.try_acquire().expect("first");
        let _b = d.try_acquire().expect("second");
        let e = d.try_acquire().expect_err("budget spent");
        assert_eq!(d.in_use(), 2);
        let boxed: BoxError = e.into();
        assert!(is_exhausted(&*boxed));
        assert!(boxed.to_string().contains("limits.descriptors"));
        drop(a);
        assert_eq!(d.in_use(), 1);
        assert!(d.try_acquire().is_ok());
    }
}
