//! One node's part of a fanned-out GetFlows ([`crate::fanout`]): the call to
//! the node, its responses forwarded as [`Event`]s (each holding a permit of
//! the node's sort-buffer share, so a node that runs ahead waits), and how
//! the stream ended: finished, unavailable (the node is reconnected) or an
//! error answer (a NODE_ERROR notice or the request's refusal).
use std::sync::Arc;
use std::time::Duration;

use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::MAX_MESSAGE;

/// How a node's stream ended.
#[derive(Debug)]
pub(crate) enum NodeEnd {
    /// The node sent everything it had (or the fan-out is gone).
    Finished,
    /// Transport-level failure: the node is reported unavailable and reconnected.
    Unavailable(String),
    /// The node answered with an error (bad filter, overload, ...): its
    /// code and the message for a NODE_ERROR notice.
    Error(Code, String),
}

/// A node's error answer ([`NodeEnd::Error`]) or a failure of the node
/// itself ([`NodeEnd::Unavailable`]).
fn classify(s: &Status) -> NodeEnd {
    match s.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unauthenticated => NodeEnd::Error(s.code(), s.message().to_string()),
        _ => NodeEnd::Unavailable(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// What a node stream tells its fan-out; `slot` is the node's place in it
/// and `generation` the connection the stream used.
pub(crate) enum Event {
    /// The node accepted the request.
    Connected { slot: usize, generation: u64 },
    /// A response, holding one permit of the node's sort-buffer share
    /// until it is sent on.
    Item {
        slot: usize,
        resp: Box<GetFlowsResponse>,
        permit: OwnedSemaphorePermit,
    },
    /// The stream ended.
    Done {
        slot: usize,
        generation: u64,
        end: NodeEnd,
    },
}

/// One node stream's settings.
pub(crate) struct StreamCtx {
    /// The node's name, given to responses that carry none.
    pub(crate) name: String,
    pub(crate) slot: usize,
    pub(crate) generation: u64,
    /// A follow stream never ends by itself and has no idle timeout.
    pub(crate) follow: bool,
    /// How long a non-follow stream may send nothing.
    pub(crate) idle_timeout: Duration,
    /// How long the node may take to accept the call.
    pub(crate) rpc_timeout: Duration,
    /// The node's sort-buffer share: one permit per queued response.
    pub(crate) sem: Arc<Semaphore>,
    /// Where the fan-out listens.
    pub(crate) tx: mpsc::UnboundedSender<Event>,
}

/// Runs `req` against the node behind `channel` until the stream ends,
/// then reports how it ended ([`Event::Done`]).
pub(crate) async fn run(ctx: StreamCtx, channel: Channel, req: GetFlowsRequest) {
    let end = forward(&ctx, channel, req).await;
    let _ = ctx.tx.send(Event::Done {
        slot: ctx.slot,
        generation: ctx.generation,
        end,
    });
}

/// Forwards the node's responses until its stream ends.
async fn forward(ctx: &StreamCtx, channel: Channel, req: GetFlowsRequest) -> NodeEnd {
    let mut client = ObserverClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let mut stream = match tokio::time::timeout(ctx.rpc_timeout, client.get_flows(req)).await {
        Err(_) => {
            return NodeEnd::Unavailable(format!(
                "GetFlows not answered within {:?}",
                ctx.rpc_timeout
            ));
        }
        Ok(Err(s)) => return classify(&s),
        Ok(Ok(r)) => r.into_inner(),
    };
    if ctx
        .tx
        .send(Event::Connected {
            slot: ctx.slot,
            generation: ctx.generation,
        })
        .is_err()
    {
        return NodeEnd::Finished;
    }
    loop {
        let msg = if ctx.follow {
            stream.message().await
        } else {
            match tokio::time::timeout(ctx.idle_timeout, stream.message()).await {
                Ok(m) => m,
                Err(_) => {
                    return NodeEnd::Error(
                        Code::DeadlineExceeded,
                        format!(
                            "nothing received for {:?}; node abandoned for this request",
                            ctx.idle_timeout
                        ),
                    );
                }
            }
        };
        match msg {
            Ok(Some(mut resp)) => {
                if resp.node_name.is_empty() {
                    resp.node_name.clone_from(&ctx.name);
                }
                // Bounded per node: waits while the node is ahead of the others.
                let Ok(permit) = ctx.sem.clone().acquire_owned().await else {
                    return NodeEnd::Finished;
                };
                let ev = Event::Item {
                    slot: ctx.slot,
                    resp: Box::new(resp),
                    permit,
                };
                if ctx.tx.send(ev).is_err() {
                    return NodeEnd::Finished;
                }
            }
            Ok(None) if ctx.follow => {
                return NodeEnd::Unavailable("the node ended the follow stream".into());
            }
            Ok(None) => return NodeEnd::Finished,
            Err(s) => return classify(&s),
        }
    }
}
