//! The rules of the lab's services: what each server calls for a request and
//! how it answers. The servers follow them ([`super`]) and the traffic
//! generator predicts every exchange of a mix from them
//! ([`crate::traffic`]), so the two cannot disagree.
//!
//! HTTP/1.1 on the app port:
//!
//! | server          | request                        | calls                                             | answer |
//! |-----------------|--------------------------------|---------------------------------------------------|--------|
//! | frontend        | `GET /`                        | –                                                 | 200 |
//! | frontend        | `GET /products`                | inventory `GET /items`                            | 200 if it got 200, else 502 |
//! | frontend        | `GET /cart/{id}`               | order-service `GET /carts/{id}`                   | passed through |
//! | frontend        | `POST /checkout/{amount}`      | order-service `POST /orders/{amount}`             | passed through |
//! | order-service   | `GET /carts/{id}`              | –                                                 | 404 if id is `404`, else 200 |
//! | order-service   | `POST /orders/{amount}`        | inventory gRPC `Reserve` (quantity = amount); if OK, payment-service `POST /charge/{amount}` | 201 if both OK; 400 if Reserve said INVALID_ARGUMENT, 409 if RESOURCE_EXHAUSTED; 402 if payment 402; else 503 |
//! | payment-service | `POST /charge/{amount}`        | if amount % 7 == 0: none; else world `POST /v1/authorize/{amount}` | 503 if amount % 7 == 0; 200/402 as the world said; else 503 |
//! | inventory       | `GET /items`                   | –                                                 | 200 |
//! | world           | `GET /`                        | –                                                 | 200 |
//! | world           | `POST /v1/authorize/{amount}`  | –                                                 | 402 if amount % 5 == 0, else 200 |
//!
//! Anything else answers 404.
//!
//! gRPC on the gRPC port (inventory only): `shop.inventory.v1.Inventory/Reserve`
//! ends INVALID_ARGUMENT for quantity 0, RESOURCE_EXHAUSTED for a quantity
//! that is a multiple of 13, else OK; the service's other methods end
//! UNIMPLEMENTED.

use tonic::Code;

use crate::grpc::SERVICE;
use crate::spec::Role;

/// Which program a server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Pod(Role),
    World,
}

/// What a downstream call asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// An HTTP/1.1 request to the callee's app port.
    Http { method: &'static str, path: String },
    /// A unary gRPC call of [`SERVICE`] to the callee's gRPC port.
    Grpc { method: &'static str, quantity: u64 },
}

/// A downstream call a server makes while handling a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Service name in the caller's namespace, or `None` for the outside world.
    pub service: Option<&'static str>,
    pub request: Request,
}

/// How a downstream call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The HTTP status the callee answered.
    Http(u16),
    /// The gRPC status the call ended with.
    Grpc(Code),
    /// No answer: the name did not resolve or the connection failed.
    Failed,
}

impl Reply {
    fn ok(self) -> bool {
        match self {
            Reply::Http(s) => (200..300).contains(&s),
            Reply::Grpc(c) => c == Code::Ok,
            Reply::Failed => false,
        }
    }
}

/// How the answer follows from the downstream replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Fixed(u16),
    /// The last call's status (502 if it failed).
    Pass,
    /// 200 if the call got 200, else 502.
    Products,
    /// Reserve, then charge only if the reservation held: 201 if both went
    /// through; 400 / 409 if Reserve ended INVALID_ARGUMENT /
    /// RESOURCE_EXHAUSTED; 402 if the charge got 402; else 503.
    Order,
    /// 200 or 402 as the world said; else 503.
    Authorize,
}

fn amount(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// The HTTP rules table above, as a function: the calls `kind` makes for a
/// request, in order, and how it answers.
pub fn plan(kind: Kind, method: &str, path: &str) -> (Vec<Call>, Finish) {
    let http = |service: Option<&'static str>, method: &'static str, path: String| Call {
        service,
        request: Request::Http { method, path },
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (kind, method, segs.as_slice()) {
        (Kind::Pod(Role::Frontend), "GET", [""]) => (vec![], Finish::Fixed(200)),
        (Kind::Pod(Role::Frontend), "GET", ["products"]) => (
            vec![http(Some("inventory"), "GET", "/items".into())],
            Finish::Products,
        ),
        (Kind::Pod(Role::Frontend), "GET", ["cart", id]) => (
            vec![http(Some("order-service"), "GET", format!("/carts/{id}"))],
            Finish::Pass,
        ),
        (Kind::Pod(Role::Frontend), "POST", ["checkout", a]) if amount(a).is_some() => (
            vec![http(Some("order-service"), "POST", format!("/orders/{a}"))],
            Finish::Pass,
        ),
        (Kind::Pod(Role::OrderService), "GET", ["carts", id]) => {
            (vec![], Finish::Fixed(if *id == "404" { 404 } else { 200 }))
        }
        (Kind::Pod(Role::OrderService), "POST", ["orders", a]) => match amount(a) {
            Some(quantity) => (
                vec![
                    Call {
                        service: Some("inventory"),
                        request: Request::Grpc {
                            method: "Reserve",
                            quantity,
                        },
                    },
                    http(Some("payment-service"), "POST", format!("/charge/{a}")),
                ],
                Finish::Order,
            ),
            None => (vec![], Finish::Fixed(404)),
        },
        (Kind::Pod(Role::PaymentService), "POST", ["charge", a]) => match amount(a) {
            Some(n) if n % 7 == 0 => (vec![], Finish::Fixed(503)),
            Some(_) => (
                vec![http(None, "POST", format!("/v1/authorize/{a}"))],
                Finish::Authorize,
            ),
            None => (vec![], Finish::Fixed(404)),
        },
        (Kind::Pod(Role::Inventory), "GET", ["items"]) => (vec![], Finish::Fixed(200)),
        (Kind::World, "GET", [""]) => (vec![], Finish::Fixed(200)),
        (Kind::World, "POST", ["v1", "authorize", a]) => match amount(a) {
            Some(n) if n % 5 == 0 => (vec![], Finish::Fixed(402)),
            Some(_) => (vec![], Finish::Fixed(200)),
            None => (vec![], Finish::Fixed(404)),
        },
        _ => (vec![], Finish::Fixed(404)),
    }
}

/// Whether the next planned call is made, given the replies so far: an
/// order charges only after its stock was reserved.
pub fn proceeds(f: Finish, replies: &[Reply]) -> bool {
    match f {
        Finish::Order => replies.iter().all(|r| r.ok()),
        _ => true,
    }
}

/// The answer given the downstream replies.
pub fn finish(f: Finish, replies: &[Reply]) -> u16 {
    let last = replies.last().copied().unwrap_or(Reply::Failed);
    match f {
        Finish::Fixed(s) => s,
        Finish::Pass => match last {
            Reply::Http(s) => s,
            _ => 502,
        },
        Finish::Products => {
            if last == Reply::Http(200) {
                200
            } else {
                502
            }
        }
        Finish::Order => match replies {
            [reserve, charge] if reserve.ok() && charge.ok() => 201,
            [Reply::Grpc(Code::InvalidArgument), ..] => 400,
            [Reply::Grpc(Code::ResourceExhausted), ..] => 409,
            [_, Reply::Http(402)] => 402,
            _ => 503,
        },
        Finish::Authorize => match last {
            Reply::Http(s @ (200 | 402)) => s,
            _ => 503,
        },
    }
}

/// How a gRPC call to `kind` ends: its status code and message.
pub fn answer_grpc(kind: Kind, service: &str, method: &str, quantity: u64) -> (Code, String) {
    match (kind, service, method) {
        (Kind::Pod(Role::Inventory), SERVICE, "Reserve") => {
            if quantity == 0 {
                (Code::InvalidArgument, "quantity must be at least 1".into())
            } else if quantity.is_multiple_of(13) {
                (
                    Code::ResourceExhausted,
                    format!("not enough stock for {quantity} units"),
                )
            } else {
                (Code::Ok, String::new())
            }
        }
        _ => (
            Code::Unimplemented,
            format!("{service}/{method} is not served here"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_charges_only_what_inventory_reserved() {
        let order = Kind::Pod(Role::OrderService);
        let (calls, fin) = plan(order, "POST", "/orders/13");
        assert_eq!(calls.len(), 2);
        let inventory = Kind::Pod(Role::Inventory);
        let (code, _) = answer_grpc(inventory, SERVICE, "Reserve", 13);
        assert_eq!(code, Code::ResourceExhausted);
        let replies = [Reply::Grpc(code)];
        assert!(!proceeds(fin, &replies), "no charge without stock");
        assert_eq!(finish(fin, &replies), 409);
        assert_eq!(
            finish(fin, &[Reply::Grpc(Code::InvalidArgument)]),
            400,
            "quantity 0"
        );
        assert!(proceeds(fin, &[Reply::Grpc(Code::Ok)]));
        assert_eq!(finish(fin, &[Reply::Grpc(Code::Ok), Reply::Http(200)]), 201);
        assert_eq!(finish(fin, &[Reply::Grpc(Code::Ok), Reply::Http(402)]), 402);
        assert_eq!(finish(fin, &[Reply::Grpc(Code::Ok), Reply::Http(503)]), 503);
        assert_eq!(finish(fin, &[Reply::Failed]), 503, "inventory unreachable");
        assert_eq!(
            answer_grpc(inventory, SERVICE, "Reserve", 0).0,
            Code::InvalidArgument
        );
        assert_eq!(answer_grpc(inventory, SERVICE, "Reserve", 12).0, Code::Ok);
        assert_eq!(
            answer_grpc(inventory, SERVICE, "Watch", 1).0,
            Code::Unimplemented
        );
    }
}
