//! The tonic anchor of `spillway bench dispatch`: a gRPC unary echo of raw
//! bytes (a pass-through codec, no protobuf) over HTTP/2 on loopback TCP,
//! without TLS, `TCP_NODELAY` on both sides.

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};

/// Bytes in, bytes out: the message is the payload itself.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The unary method: answers with the request's bytes.
struct Echo;

impl tonic::server::UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future = std::future::Ready<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        std::future::ready(Ok(Response::new(request.into_inner())))
    }
}

/// The HTTP service routing every request to [`Echo`].
#[derive(Debug, Clone, Copy)]
struct EchoService;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for EchoService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec);
            Ok(grpc.unary(Echo, request).await)
        })
    }
}

const PATH: &str = "/spillway.bench.Echo/Echo";

/// A tonic server on loopback and a connected client.
pub(super) struct TonicPair {
    client: tonic::client::Grpc<tonic::transport::Channel>,
    server: tokio::task::JoinHandle<()>,
}

impl TonicPair {
    pub(super) async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
            s.and_then(|s| {
                s.set_nodelay(true)?;
                Ok(s)
            })
        });
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(EchoService, incoming)
                .await;
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(Self {
            client: tonic::client::Grpc::new(channel),
            server,
        })
    }

    /// One unary echo of `bytes`.
    pub(super) async fn round_trip(&mut self, bytes: &Bytes) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.client.ready().await?;
        let answer = self
            .client
            .unary(
                Request::new(bytes.clone()),
                PathAndQuery::from_static(PATH),
                RawCodec,
            )
            .await?;
        anyhow::ensure!(answer.get_ref().len() == bytes.len(), "short echo");
        Ok(started.elapsed())
    }
}

impl Drop for TonicPair {
    fn drop(&mut self) {
        self.server.abort();
    }
}
