//! The WASI 0.2 sandbox every guest runs in: `wasmtime-wasi` and
//! `wasmtime-wasi-http` linked beside `job` and `gpu`, closed.
//!
//! What a guest gets:
//! - clocks (wall and monotonic) and random (secure and insecure);
//! - stdout and stderr, which go to the job's bounded log ([`guest_log`]);
//!   an empty, closed stdin;
//! - an empty environment and argument list, no preopened directories (so
//!   every path lookup fails: nothing to resolve it against);
//! - `wasi:sockets`, linked so toolchains that import it load, with TCP, UDP
//!   and name lookup denied (`access-denied` / `permanent-resolver-failure`
//!   on every call);
//! - `wasi:http/outgoing-handler`, linked so JavaScript components load,
//!   refusing every request with `HTTP-request-denied`;
//! - `wasi:cli/exit` (and `exit-with-code`): the job ends with its code
//!   (see the executor).
//!
//! Blocking waits (`wasi:io/poll`'s `poll` and `pollable.block`: a guest
//! sleeping on a clock) are the one way a guest could sit in a host call;
//! they are linked here in front of `wasmtime-wasi`'s own so the job's
//! cancel flag and deadline end them too, checked every epoch tick.
//!
//! The WASI context is built at the guest's first WASI call, so a guest
//! that makes none (the WAT examples) pays nothing for it.
//!
//! [`guest_log`]: crate::guest_log

use crate::guest_log::{SharedLog, Source};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The `wasi:io` version whose `poll` is linked here (the one
/// `wasmtime-wasi` provides; imports of any 0.2.x resolve to it).
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// Why a blocking WASI wait ended the job (the executor classifies it like
/// the epoch callback's interruptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WaitInterrupted {
    #[error("job cancelled during a blocking WASI wait")]
    Cancelled,
    #[error("job deadline reached during a blocking WASI wait")]
    Deadline,
}

/// What the sandbox needs of a job's store besides its WASI views: where
/// the job's blocking waits must end.
pub(crate) trait WaitBounds {
    /// The job's cancel flag and its deadline.
    fn wait_bounds(&self) -> (Arc<AtomicBool>, Instant);
}

/// Links WASI 0.2 (`exit-with-code` included: stable since 0.2.12),
/// `wasi:http` and the deadline-bound `poll` into `linker`.
pub(crate) fn add_to_linker<T>(linker: &mut Linker<T>, epoch_tick: Duration) -> wasmtime::Result<()>
where
    T: WasiView + WasiHttpView + WaitBounds + 'static,
{
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    poll.func_wrap(
        "poll",
        move |mut cx: StoreContextMut<'_, T>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let (cancel, deadline) = cx.data().wait_bounds();
            let table = cx.data_mut().ctx().table;
            let ready = bounded(
                wasmtime_wasi::p2::bindings::io::poll::Host::poll(table, pollables),
                &cancel,
                deadline,
                epoch_tick,
            )??;
            Ok((ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        move |mut cx: StoreContextMut<'_, T>, (pollable,): (Resource<DynPollable>,)| {
            let (cancel, deadline) = cx.data().wait_bounds();
            let table = cx.data_mut().ctx().table;
            bounded(
                wasmtime_wasi::p2::bindings::io::poll::HostPollable::block(table, pollable),
                &cancel,
                deadline,
                epoch_tick,
            )??;
            Ok(())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs `wait` until it finishes, the job is cancelled or its deadline
/// passes, whichever is first; checks every `tick`.
fn bounded<T>(
    wait: impl Future<Output = T>,
    cancel: &AtomicBool,
    deadline: Instant,
    tick: Duration,
) -> Result<T, wasmtime::Error> {
    wasmtime_wasi::runtime::in_tokio(async {
        tokio::pin!(wait);
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(wasmtime::Error::new(WaitInterrupted::Cancelled));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(wasmtime::Error::new(WaitInterrupted::Deadline));
            }
            let nap = tick.min(deadline - now);
            if let Ok(done) = tokio::time::timeout(nap, &mut wait).await {
                return Ok(done);
            }
        }
    })
}

/// A closed WASI context whose stdout and stderr feed `log`.
pub(crate) fn closed_context(log: &SharedLog) -> WasiCtx {
    WasiCtx::builder()
        .stdout(LogStream {
            log: log.clone(),
            stream: Source::Stdout,
        })
        .stderr(LogStream {
            log: log.clone(),
            stream: Source::Stderr,
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// The WASI state of one job: built at its first WASI call.
pub(crate) struct Sandbox {
    wasi: Option<WasiCtx>,
    http: WasiHttpCtx,
    hooks: RefuseOutgoing,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("wasi_used", &self.wasi.is_some())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    pub(crate) fn new() -> Self {
        Self {
            wasi: None,
            http: WasiHttpCtx::new(),
            hooks: RefuseOutgoing,
        }
    }
}

impl Sandbox {
    /// The WASI view of a job whose resources live in `table` and whose
    /// stdout and stderr go to `log` (the context is built on first use).
    pub(crate) fn wasi<'a>(
        &'a mut self,
        table: &'a mut ResourceTable,
        log: &SharedLog,
    ) -> WasiCtxView<'a> {
        let ctx = self.wasi.get_or_insert_with(|| closed_context(log));
        WasiCtxView { ctx, table }
    }

    /// The `wasi:http` view of a job whose resources live in `table`.
    pub(crate) fn http<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table,
            ctx: &mut self.http,
        }
    }
}

/// `wasi:http` hooks that refuse every outgoing request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefuseOutgoing;

impl WasiHttpHooks for RefuseOutgoing {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        tracing::debug!(uri = %request.uri(), "guest's outgoing HTTP request refused");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// A guest's stdout or stderr: every byte goes to its job's log, which
/// takes what its budget allows and drops the rest. Always ready, never
/// full: a guest that writes too much is not stopped by it, only muted.
#[derive(Debug, Clone)]
struct LogStream {
    log: SharedLog,
    stream: Source,
}

/// Bytes a guest may write to stdout or stderr in one call.
const WRITE_PERMIT: usize = 64 << 10;

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.log.write(self.stream, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_at_its_result_the_cancel_flag_or_the_deadline() {
        let tick = Duration::from_millis(5);
        let never = Instant::now() + Duration::from_secs(60);
        let no = AtomicBool::new(false);
        assert_eq!(bounded(async { 7 }, &no, never, tick).unwrap(), 7);

        let forever = std::future::pending::<()>();
        let soon = Instant::now() + Duration::from_millis(30);
        let e = bounded(forever, &no, soon, tick).unwrap_err();
        assert_eq!(
            e.downcast_ref::<WaitInterrupted>(),
            Some(&WaitInterrupted::Deadline)
        );
        assert!(Instant::now() >= soon);

        let yes = AtomicBool::new(true);
        let e = bounded(std::future::pending::<()>(), &yes, never, tick).unwrap_err();
        assert_eq!(
            e.downcast_ref::<WaitInterrupted>(),
            Some(&WaitInterrupted::Cancelled)
        );
    }
}
