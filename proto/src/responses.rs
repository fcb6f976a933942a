//! Constructors for the GetFlows responses both servers send (flowd on
//! :4244, the relay on :4245), so the two build them the same way.
use std::time::SystemTime;

use crate::Timestamp;
use crate::flow::{Flow, LostEvent, LostEventSource};
use crate::observer::GetFlowsResponse;
use crate::observer::get_flows_response::ResponseTypes;
use crate::pbjson_types::Int32Value;
use crate::relay::{NodeState, NodeStatusEvent};

impl Timestamp {
    /// The wall clock now.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }
}

impl LostEvent {
    /// `n` events lost at `source` (on `cpu`, when the source knows it).
    pub fn new(source: LostEventSource, n: u64, cpu: Option<i32>) -> Self {
        Self {
            source: source as i32,
            num_events_lost: n,
            cpu: cpu.map(|value| Int32Value { value }),
            // When the events were lost is not known at any of flowd's sources.
            first: None,
            last: None,
        }
    }
}

impl GetFlowsResponse {
    /// A flow, stamped with the flow's own time.
    pub fn from_flow(flow: Flow, node_name: String) -> Self {
        Self {
            time: flow.time,
            node_name,
            response_types: Some(ResponseTypes::Flow(flow)),
        }
    }

    /// A loss notice observed at `time`.
    pub fn from_lost(lost: LostEvent, node_name: String, time: Timestamp) -> Self {
        Self {
            time: Some(time),
            node_name,
            response_types: Some(ResponseTypes::LostEvents(lost)),
        }
    }

    /// A relay notice that nodes changed state, stamped now.
    pub fn node_status(state: NodeState, node_names: Vec<String>, message: String) -> Self {
        Self {
            time: Some(Timestamp::now()),
            node_name: String::new(),
            response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
                state_change: state as i32,
                node_names,
                message,
            })),
        }
    }
}
