//! The services' gRPC side: inventory serves `shop.inventory.v1.Inventory`
//! by the rules and counts every call; order-service calls it over one
//! HTTP/2 connection per call.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
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
        .connect()
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
