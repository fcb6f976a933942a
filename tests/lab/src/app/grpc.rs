//! The services' gRPC side: inventory serves `shop.inventory.v1.Inventory`
//! by the rules and counts every call; order-service calls it over one
//! HTTP/2 connection per call.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt as _;
use tonic::transport::{Endpoint, Server, Uri};
use tonic::{Code, Status, Streaming};

use super::rules::answer_grpc;
use super::{Ctx, client_ip, lock};
use crate::Error;
use crate::grpc::pb::inventory_client::InventoryClient;
use crate::grpc::pb::inventory_server::{Inventory, InventoryServer};
use crate::grpc::pb::{
    ReserveReply, ReserveRequest, RestockItem, RestockSummary, StockEvent, SyncMessage,
    WatchRequest,
};
use crate::grpc::{SERVICE, is_transport};

/// The Inventory service as the lab's inventory pod serves it.
struct ShopInventory {
    ctx: Arc<Ctx>,
}

type Boxed<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

impl ShopInventory {
    /// Answers a call by the rules and counts it; `Err` is the status of a
    /// call that did not end OK.
    fn answer<T>(
        &self,
        req: &tonic::Request<T>,
        method: &str,
        quantity: u64,
    ) -> Result<(), Status> {
        let source = req
            .remote_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), client_ip);
        let (code, message) = answer_grpc(self.ctx.cfg.kind, SERVICE, method, quantity);
        *lock(&self.ctx)
            .grpc_inbound
            .entry((source, SERVICE.to_string(), method.to_string(), code as u32))
            .or_default() += 1;
        match code {
            Code::Ok => Ok(()),
            _ => Err(Status::new(code, message)),
        }
    }
}

#[tonic::async_trait]
impl Inventory for ShopInventory {
    async fn reserve(
        &self,
        req: tonic::Request<ReserveRequest>,
    ) -> Result<tonic::Response<ReserveReply>, Status> {
        let quantity = req.get_ref().quantity;
        self.answer(&req, "Reserve", quantity)?;
        let r = req.into_inner();
        Ok(tonic::Response::new(ReserveReply {
            reservation: format!("res-{}-{quantity}", r.sku),
            payload: Vec::new(),
        }))
    }

    type WatchStream = Boxed<StockEvent>;

    async fn watch(
        &self,
        req: tonic::Request<WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        self.answer(&req, "Watch", 0)?;
        Ok(tonic::Response::new(Box::pin(tokio_stream::empty())))
    }

    async fn restock(
        &self,
        req: tonic::Request<Streaming<RestockItem>>,
    ) -> Result<tonic::Response<RestockSummary>, Status> {
        self.answer(&req, "Restock", 0)?;
        Ok(tonic::Response::new(RestockSummary::default()))
    }

    type SyncStream = Boxed<SyncMessage>;

    async fn sync(
        &self,
        req: tonic::Request<Streaming<SyncMessage>>,
    ) -> Result<tonic::Response<Self::SyncStream>, Status> {
        self.answer(&req, "Sync", 0)?;
        Ok(tonic::Response::new(Box::pin(tokio_stream::empty())))
    }
}

/// Serves the Inventory service on `listener` until the future is dropped.
pub(super) async fn serve(listener: TcpListener, ctx: Arc<Ctx>) -> Result<(), Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        // As on the HTTP port: no Nagle stalls on small frames.
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    Server::builder()
        .add_service(InventoryServer::new(ShopInventory { ctx }))
        .serve_with_incoming(incoming)
        .await
        .map_err(|e| Error::Lab(format!("gRPC server: {e}")))
}

/// One unary call of `method` (`Reserve`) to `addr` over a connection of its
/// own (`:authority` is `host:port`, as an HTTP client's Host); the status
/// code the server ended it with, and how long the call took from sending
/// the request to reading its status (the connection already open). A call
/// the server never answered (connection failed) is an error.
pub(super) async fn call_once(
    addr: SocketAddr,
    host: &str,
    method: &str,
    quantity: u64,
) -> Result<(Code, Duration), Error> {
    let fail = |reason: String| Error::Grpc {
        target: format!("{host} ({addr}) {SERVICE}/{method}"),
        reason,
    };
    let origin: Uri = format!("http://{host}:{}", addr.port())
        .parse()
        .map_err(|e| fail(format!("authority: {e}")))?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| fail(e.to_string()))?
        .origin(origin)
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect_with_connector(Dial(addr))
        .await
        .map_err(|e| fail(format!("connect: {e}")))?;
    let mut client = InventoryClient::new(channel);
    let start = std::time::Instant::now();
    let result = match method {
        "Reserve" => client
            .reserve(ReserveRequest {
                sku: "sku-1".into(),
                behaviour: None,
                payload: Vec::new(),
                quantity,
            })
            .await
            .map(|_| ()),
        other => return Err(fail(format!("the lab makes no {other} calls"))),
    };
    let took = start.elapsed();
    match result {
        Ok(()) => Ok((Code::Ok, took)),
        Err(s) if is_transport(&s) => Err(fail(s.to_string())),
        Err(s) => Ok((s.code(), took)),
    }
}

/// Opens the call's TCP connection (tonic's connector).
#[derive(Clone, Copy)]
struct Dial(SocketAddr);

impl tonic::codegen::Service<Uri> for Dial {
    type Response = TokioIo<Lingering>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(TokioIo::new(Lingering(Some(s))))
        })
    }
}

/// A client connection that closes the way an HTTP/1.1 `Connection: close`
/// exchange does, FIN each way and nothing after it: when the HTTP/2 client
/// lets go of it, it sends its FIN and keeps reading until the server's. A
/// socket closed at once would answer the server's last frames (its GOAWAY)
/// with a reset, and the kernel would drop them: flows that depend on
/// timing, in a lab whose counts must be exact.
struct Lingering(Option<TcpStream>);

impl Lingering {
    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.0
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut s) = self.0.take() else { return };
        // Outside a runtime the socket just closes.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            // A second shutdown after hyper's is a harmless error.
            let _ = s.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        });
    }
}
