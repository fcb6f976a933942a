//! `experimental.cel_expression`: Hubble's CEL filters. The variable `_flow`
//! is the flow (a `flow.Flow`); enum values are named as in cel-go's `flow`
//! container (`Verdict.DROPPED`, `flow.TrafficDirection.EGRESS`). A filter
//! holds one or more expressions and matches when any is true.
//!
//! Compiled once per request: the `cel` crate parses, then this module checks
//! and rewrites the tree against the Flow descriptor, as cel-go's checker
//! would refuse it: an unknown field or identifier, a result that is not
//! boolean, an invalid regex literal. Enum constants become integer literals
//! and `has(x.f)` on a message becomes a protobuf presence test (set, non-zero,
//! non-empty), which the crate's own `has` (field exists) is not.
//!
//! Evaluation reads the flow through borrowed views: a field is converted
//! when the expression touches it, strings are borrowed, nothing of the flow
//! is copied or re-encoded. An unset message field reads as its default
//! message, as in protobuf. An expression that fails at run time (e.g. a
//! division by zero) does not match, as in Hubble.
//!
//! Not available (refused when named): `google.protobuf.Timestamp` and `Any`
//! fields (`time`, `stats.first_seen`, `extensions`): flowd builds the
//! interpreter without its time zone database.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, OnceLock};

use cel::common::ast::{Expr, LiteralValue};
use cel::common::traits::Indexer;
use cel::common::types::{CelBool, CelInt, CelList, CelNull, CelString, CelUInt, Type};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, IdedExpr};
use flowd_proto::flow::{self, Flow, layer4::Protocol as L4, layer7::Record as L7};
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

/// Hubble's name for the flow ("flow" is the proto package).
const FLOW_VAR: &str = "_flow";
/// Field names starting with this are presence tests (`has()`), see [`View`].
const PRESENCE: char = '\u{0}';

/// Compiled CEL expressions of one FlowFilter (ORed).
#[derive(Clone)]
pub struct CelFilter {
    exprs: Arc<Vec<IdedExpr>>,
}

impl fmt::Debug for CelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CelFilter({} expressions)", self.exprs.len())
    }
}

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

impl CelFilter {
    /// Compiles every expression; on error, the expression and the reason
    /// (one line).
    pub fn compile(sources: &[String]) -> Result<Self, (String, String)> {
        let schema = schema().map_err(|e| (String::new(), e.clone()))?;
        let mut exprs = Vec::with_capacity(sources.len());
        for src in sources {
            let fail = |reason: String| (src.clone(), one_line(&reason));
            if src.trim().is_empty() {
                return Err(fail("empty expression".into()));
            }
            let mut e = ENV.parser().parse(src).map_err(|e| fail(e.to_string()))?;
            let ty = Checker { schema }
                .check(&mut e, &mut Vec::new())
                .map_err(fail)?;
            if !matches!(ty, Ty::Bool | Ty::Dyn) {
                return Err(fail(format!("got '{ty}', wanted 'bool' result type")));
            }
            exprs.push(e);
        }
        Ok(Self {
            exprs: Arc::new(exprs),
        })
    }

    /// True if any expression evaluates to true on `flow`.
    pub fn matches(&self, flow: &Flow) -> bool {
        let vars = Vars(flow);
        let mut ctx = Context::with_env(ENV.clone());
        ctx.set_variable_resolver(&vars);
        self.exprs.iter().any(|e| {
            cel::Value::resolve_val(e, &ctx)
                .ok()
                .and_then(|v| v.downcast_ref::<CelBool>().map(|b| *b.inner()))
                .unwrap_or(false)
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------
// Checking and rewriting against the descriptors.

struct Schema {
    flow: MessageDescriptor,
    /// `flow.Verdict.DROPPED` → 2, for every enum of the flow package.
    enum_values: HashMap<String, i64>,
}

fn schema() -> Result<&'static Schema, &'static String> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let pool = DescriptorPool::decode(flowd_proto::FILE_DESCRIPTOR_SET)
                .map_err(|e| format!("flow descriptors: {e}"))?;
            let flow = pool
                .get_message_by_name("flow.Flow")
                .ok_or("flow.Flow missing from the descriptors")?;
            let mut enum_values = HashMap::new();
            for e in pool.all_enums() {
                if e.package_name() != "flow" {
                    continue;
                }
                for v in e.values() {
                    enum_values.insert(
                        format!("{}.{}", e.full_name(), v.name()),
                        i64::from(v.number()),
                    );
                }
            }
            Ok(Schema { flow, enum_values })
        })
        .as_ref()
}

/// Static types, as far as the checker follows them.
#[derive(Clone, Debug, PartialEq)]
enum Ty {
    /// Unknown until run time (map values, mixed branches, wrappers).
    Dyn,
    Bool,
    Int,
    Uint,
    Double,
    Str,
    Bytes,
    Null,
    List(Box<Ty>),
    Map,
    Msg(MessageDescriptor),
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Dyn => f.write_str("dyn"),
            Ty::Bool => f.write_str("bool"),
            Ty::Int => f.write_str("int"),
            Ty::Uint => f.write_str("uint"),
            Ty::Double => f.write_str("double"),
            Ty::Str => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Null => f.write_str("null_type"),
            Ty::List(t) => write!(f, "list({t})"),
            Ty::Map => f.write_str("map"),
            Ty::Msg(m) => f.write_str(m.full_name()),
        }
    }
}

/// The CEL type of a field, or why it cannot be used.
fn field_ty(field: &prost_reflect::FieldDescriptor) -> Result<Ty, String> {
    let scalar = match field.kind() {
        Kind::Double | Kind::Float => Ty::Double,
        Kind::Int32 | Kind::Int64 | Kind::Sint32 | Kind::Sint64 | Kind::Sfixed32 => Ty::Int,
        Kind::Sfixed64 | Kind::Enum(_) => Ty::Int,
        Kind::Uint32 | Kind::Uint64 | Kind::Fixed32 | Kind::Fixed64 => Ty::Uint,
        Kind::Bool => Ty::Bool,
        Kind::String => Ty::Str,
        Kind::Bytes => Ty::Bytes,
        Kind::Message(m) => match m.full_name() {
            // Wrappers read as their value or null.
            "google.protobuf.BoolValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value" => Ty::Dyn,
            n if n.starts_with("google.protobuf.") => {
                return Err(format!(
                    "field '{}' ({n}) is not available in flowd's CEL filters",
                    field.name()
                ));
            }
            _ => Ty::Msg(m),
        },
    };
    Ok(if field.is_map() {
        Ty::Map
    } else if field.is_list() {
        Ty::List(Box::new(scalar))
    } else {
        scalar
    })
}

/// `a.b.c` as segments, root first; None unless the expression is an
/// identifier with plain field selections.
fn qualified_name(e: &IdedExpr) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut cur = e;
    loop {
        match &cur.expr {
            Expr::Ident(n) => {
                out.push(n.as_str());
                out.reverse();
                return Some(out);
            }
            Expr::Select(s) if !s.test => {
                out.push(s.field.as_str());
                cur = &s.operand;
            }
            _ => return None,
        }
    }
}

struct Checker {
    schema: &'static Schema,
}

impl Checker {
    fn enum_constant(&self, segments: &[&str]) -> Option<i64> {
        let name = segments.join(".");
        let v = &self.schema.enum_values;
        v.get(&format!("flow.{name}"))
            .or_else(|| v.get(&name))
            .copied()
    }

    fn check(&self, e: &mut IdedExpr, scope: &mut Vec<(String, Ty)>) -> Result<Ty, String> {
        let in_scope = |scope: &[(String, Ty)], name: &str| {
            scope
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
        };
        // Names not rooted at a variable: enum constants (folded) or errors.
        if let Some(seg) = qualified_name(e)
            && seg[0] != FLOW_VAR
            && in_scope(scope, seg[0]).is_none()
        {
            if let Some(n) = self.enum_constant(&seg) {
                e.expr = Expr::Literal(LiteralValue::Int(CelInt::from(n)));
                return Ok(Ty::Int);
            }
            return Err(format!(
                "undeclared reference to '{}' (in container 'flow')",
                seg.join(".")
            ));
        }
        match &mut e.expr {
            Expr::Ident(name) => {
                if name == FLOW_VAR {
                    return Ok(Ty::Msg(self.schema.flow.clone()));
                }
                Ok(in_scope(scope, name).unwrap_or(Ty::Dyn))
            }
            Expr::Literal(l) => Ok(match l {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::Str,
                LiteralValue::UInt(_) => Ty::Uint,
            }),
            Expr::Select(sel) => {
                let operand = self.check(&mut sel.operand, scope)?;
                match operand {
                    Ty::Msg(m) => {
                        let field = m
                            .get_field_by_name(&sel.field)
                            .ok_or_else(|| format!("undefined field '{}'", sel.field))?;
                        let ty = field_ty(&field)?;
                        if sel.test {
                            sel.test = false;
                            sel.field = format!("{PRESENCE}{}", sel.field);
                            Ok(Ty::Bool)
                        } else {
                            Ok(ty)
                        }
                    }
                    Ty::Dyn | Ty::Map => Ok(if sel.test { Ty::Bool } else { Ty::Dyn }),
                    other => Err(format!(
                        "type '{other}' does not support field selection ('{}')",
                        sel.field
                    )),
                }
            }
            Expr::Call(call) => {
                let target = match &mut call.target {
                    Some(t) => Some(self.check(t, scope)?),
                    None => None,
                };
                let mut args = Vec::with_capacity(call.args.len());
                for a in &mut call.args {
                    args.push(self.check(a, scope)?);
                }
                if call.func_name == "matches" {
                    let pattern = call.args.last().and_then(|a| match &a.expr {
                        Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_string()),
                        _ => None,
                    });
                    if let Some(p) = pattern {
                        regex::Regex::new(&p)
                            .map_err(|e| format!("invalid regex '{p}' in matches(): {e}"))?;
                    }
                }
                Ok(call_ty(&call.func_name, target.as_ref(), &args))
            }
            Expr::Comprehension(c) => {
                let range = self.check(&mut c.iter_range, scope)?;
                let accu = self.check(&mut c.accu_init, scope)?;
                let elem = match range {
                    Ty::List(t) => *t,
                    _ => Ty::Dyn,
                };
                let depth = scope.len();
                scope.push((c.accu_var.clone(), accu));
                scope.push((c.iter_var.clone(), elem));
                if let Some(v2) = &c.iter_var2 {
                    scope.push((v2.clone(), Ty::Dyn));
                }
                let res = (|| {
                    self.check(&mut c.loop_cond, scope)?;
                    self.check(&mut c.loop_step, scope)?;
                    self.check(&mut c.result, scope)
                })();
                scope.truncate(depth);
                res
            }
            Expr::List(list) => {
                let mut elem = None;
                for el in &mut list.elements {
                    let t = self.check(el, scope)?;
                    elem = match elem {
                        None => Some(t),
                        Some(prev) if prev == t => Some(prev),
                        Some(_) => Some(Ty::Dyn),
                    };
                }
                Ok(Ty::List(Box::new(elem.unwrap_or(Ty::Dyn))))
            }
            Expr::Map(map) => {
                for entry in &mut map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(m) = &mut entry.expr {
                        self.check(&mut m.key, scope)?;
                        self.check(&mut m.value, scope)?;
                    }
                }
                Ok(Ty::Map)
            }
            Expr::Struct(s) => Err(format!(
                "constructing messages ({}{{…}}) is not supported in flowd's CEL filters",
                s.type_name
            )),
            Expr::Unspecified => Err("incomplete expression".into()),
        }
    }
}

fn call_ty(func: &str, target: Option<&Ty>, args: &[Ty]) -> Ty {
    match func {
        "_==_"
        | "_!=_"
        | "_<_"
        | "_<=_"
        | "_>_"
        | "_>=_"
        | "_&&_"
        | "_||_"
        | "!_"
        | "@in"
        | "@not_strictly_false"
        | "contains"
        | "startsWith"
        | "endsWith"
        | "matches"
        | "bool" => Ty::Bool,
        "size" | "int" => Ty::Int,
        "uint" => Ty::Uint,
        "double" => Ty::Double,
        "string" => Ty::Str,
        "bytes" => Ty::Bytes,
        "_?_:_" if args.len() == 3 && args[1] == args[2] => args[1].clone(),
        "_+_" | "_-_" | "_*_" | "_/_" | "_%_" if args.len() == 2 && args[0] == args[1] => {
            args[0].clone()
        }
        "-_" if args.len() == 1 => args[0].clone(),
        "_[_]" => match (target, args.first()) {
            (None, Some(Ty::List(t))) => (**t).clone(),
            _ => Ty::Dyn,
        },
        _ => Ty::Dyn,
    }
}

// ---------------------------------------------------------------------------
// Run time: borrowed views of the flow's messages.

struct Vars<'a>(&'a Flow);

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        (variable == FLOW_VAR).then(|| CowVal::owned(View(self.0)))
    }
}

/// A field of a message, before it becomes a CEL value.
enum Field<'a> {
    Str(&'a str),
    Uint(u64),
    /// A proto3 `optional` integer: present when set, even to 0.
    OptUint(Option<u64>),
    Int(i64),
    Bool(bool),
    Strs(&'a [String]),
    /// A wrapper (`google.protobuf.BoolValue`, …): its value or null.
    Wrapper(Option<Box<dyn Val + 'a>>),
    Msg(bool, Box<dyn Val + 'a>),
    Msgs(bool, Box<dyn Val + 'a>),
}

impl<'a> Field<'a> {
    /// Protobuf presence: set (messages), non-zero, non-empty.
    fn present(&self) -> bool {
        match self {
            Field::Str(s) => !s.is_empty(),
            Field::Uint(v) => *v != 0,
            Field::OptUint(v) => v.is_some(),
            Field::Int(v) => *v != 0,
            Field::Bool(v) => *v,
            Field::Strs(v) => !v.is_empty(),
            Field::Wrapper(v) => v.is_some(),
            Field::Msg(p, _) | Field::Msgs(p, _) => *p,
        }
    }

    fn into_val(self) -> Box<dyn Val + 'a> {
        match self {
            Field::Str(s) => Box::new(CelString::from(s)),
            Field::Uint(v) => Box::new(CelUInt::from(v)),
            Field::OptUint(v) => Box::new(CelUInt::from(v.unwrap_or(0))),
            Field::Int(v) => Box::new(CelInt::from(v)),
            Field::Bool(v) => Box::new(CelBool::from(v)),
            Field::Strs(v) => Box::new(CelList::from(
                v.iter()
                    .map(|s| Box::new(CelString::from(s.as_str())) as Box<dyn Val + 'a>)
                    .collect::<Vec<_>>(),
            )),
            Field::Wrapper(v) => v.unwrap_or_else(|| Box::new(CelNull)),
            Field::Msg(_, v) | Field::Msgs(_, v) => v,
        }
    }
}

/// A Flow message (or one it contains) that CEL can read.
trait Message: fmt::Debug + Default + Send + Sync + 'static {
    fn cel_type() -> &'static Type;
    /// The default instance, what an unset field of this type reads as.
    fn default_ref() -> &'static Self;
    /// Field `name` (proto field name), None if there is none.
    fn field(&self, name: &str) -> Option<Field<'_>>;
}

/// A borrowed message as a CEL value: `.f` reads field `f`, `.\0f` (written
/// by the checker for `has(x.f)`) its presence.
#[derive(Debug)]
struct View<'a, M>(&'a M);

impl<'a, M: Message> Val for View<'a, M> {
    fn get_type(&self) -> &Type {
        M::cel_type()
    }

    fn cel_type() -> &'static Type
    where
        Self: Sized,
    {
        M::cel_type()
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(View(self.0))
    }
}

impl<'a, M: Message> Indexer for View<'a, M> {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let Some(name) = idx.downcast_ref::<CelString>().map(|s| s.inner()) else {
            return Err(ExecutionError::no_such_key("field"));
        };
        match name.strip_prefix(PRESENCE) {
            Some(f) => self
                .0
                .field(f)
                .map(|v| CowVal::owned(CelBool::from(v.present())))
                .ok_or_else(|| ExecutionError::no_such_key(f)),
            None => self
                .0
                .field(name)
                .map(|v| CowVal::from(v.into_val()))
                .ok_or_else(|| ExecutionError::no_such_key(name)),
        }
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

fn msg<M: Message>(m: Option<&M>) -> Field<'_> {
    Field::Msg(m.is_some(), Box::new(View(m.unwrap_or(M::default_ref()))))
}

fn msgs<M: Message>(v: &[M]) -> Field<'_> {
    Field::Msgs(
        !v.is_empty(),
        Box::new(CelList::from(
            v.iter()
                .map(|m| Box::new(View(m)) as Box<dyn Val + '_>)
                .collect::<Vec<_>>(),
        )),
    )
}

fn bool_value(v: Option<&flowd_proto::pbjson_types::BoolValue>) -> Field<'_> {
    Field::Wrapper(v.map(|b| Box::new(CelBool::from(b.value)) as Box<dyn Val>))
}

/// Declares a message's CEL fields: `"proto_name" => |m| field expression`.
macro_rules! message {
    ($ty:ty, $name:literal, |$m:ident| { $($field:literal => $value:expr,)* }) => {
        // Deprecated fields (`Flow.reply`, `Summary`, …) are still API.
        #[allow(deprecated)]
        impl Message for $ty {
            fn cel_type() -> &'static Type {
                static T: Type = Type::new_struct_type($name);
                &T
            }
            fn default_ref() -> &'static Self {
                static D: OnceLock<$ty> = OnceLock::new();
                D.get_or_init(Default::default)
            }
            fn field(&self, name: &str) -> Option<Field<'_>> {
                let $m = self;
                Some(match name {
                    $($field => $value,)*
                    _ => return None,
                })
            }
        }
    };
}

fn u(v: impl Into<u64>) -> Field<'static> {
    Field::Uint(v.into())
}
fn i(v: impl Into<i64>) -> Field<'static> {
    Field::Int(v.into())
}
fn s(v: &str) -> Field<'_> {
    Field::Str(v)
}

message!(Flow, "flow.Flow", |m| {
    "uuid" => s(&m.uuid),
    "emitter" => msg(m.emitter.as_ref()),
    "verdict" => i(m.verdict),
    "drop_reason" => u(m.drop_reason),
    "auth_type" => i(m.auth_type),
    "ethernet" => msg(m.ethernet.as_ref()),
    "IP" => msg(m.ip.as_ref()),
    "l4" => msg(m.l4.as_ref()),
    "tunnel" => msg(m.tunnel.as_ref()),
    "source" => msg(m.source.as_ref()),
    "destination" => msg(m.destination.as_ref()),
    "Type" => i(m.r#type),
    "node_name" => s(&m.node_name),
    "node_labels" => Field::Strs(&m.node_labels),
    "source_names" => Field::Strs(&m.source_names),
    "destination_names" => Field::Strs(&m.destination_names),
    "l7" => msg(m.l7.as_ref()),
    "reply" => Field::Bool(m.reply),
    "event_type" => msg(m.event_type.as_ref()),
    "source_service" => msg(m.source_service.as_ref()),
    "destination_service" => msg(m.destination_service.as_ref()),
    "traffic_direction" => i(m.traffic_direction),
    "policy_match_type" => u(m.policy_match_type),
    "trace_observation_point" => i(m.trace_observation_point),
    "trace_reason" => i(m.trace_reason),
    "file" => msg(m.file.as_ref()),
    "ip_trace_id" => msg(m.ip_trace_id.as_ref()),
    "drop_reason_desc" => i(m.drop_reason_desc),
    "is_reply" => bool_value(m.is_reply.as_ref()),
    "debug_capture_point" => i(m.debug_capture_point),
    "interface" => msg(m.interface.as_ref()),
    "proxy_port" => u(m.proxy_port),
    "trace_context" => msg(m.trace_context.as_ref()),
    "sock_xlate_point" => i(m.sock_xlate_point),
    "socket_cookie" => u(m.socket_cookie),
    "cgroup_id" => u(m.cgroup_id),
    "Summary" => s(&m.summary),
    "egress_allowed_by" => msgs(&m.egress_allowed_by),
    "ingress_allowed_by" => msgs(&m.ingress_allowed_by),
    "egress_denied_by" => msgs(&m.egress_denied_by),
    "ingress_denied_by" => msgs(&m.ingress_denied_by),
    "policy_log" => Field::Strs(&m.policy_log),
    "aggregate" => msg(m.aggregate.as_ref()),
    "kernel_drop_reason" => s(&m.kernel_drop_reason),
    "kernel_drop_reason_code" => u(m.kernel_drop_reason_code),
    "stats" => msg(m.stats.as_ref()),
    "drop_count" => u(m.drop_count),
});

message!(flow::FlowStats, "flow.FlowStats", |m| {
    "packets" => u(m.packets),
    "bytes" => u(m.bytes),
    "tcp_flags_seen" => msg(m.tcp_flags_seen.as_ref()),
});

message!(flow::Emitter, "flow.Emitter", |m| {
    "name" => s(&m.name),
    "version" => s(&m.version),
});

message!(flow::FileInfo, "flow.FileInfo", |m| {
    "name" => s(&m.name),
    "line" => u(m.line),
});

fn l4<M: Message>(m: &flow::Layer4, pick: fn(&L4) -> Option<&M>) -> Field<'_> {
    msg(m.protocol.as_ref().and_then(pick))
}

message!(flow::Layer4, "flow.Layer4", |m| {
    "TCP" => l4(m, |p| match p { L4::Tcp(x) => Some(x), _ => None }),
    "UDP" => l4(m, |p| match p { L4::Udp(x) => Some(x), _ => None }),
    "ICMPv4" => l4(m, |p| match p { L4::IcmPv4(x) => Some(x), _ => None }),
    "ICMPv6" => l4(m, |p| match p { L4::IcmPv6(x) => Some(x), _ => None }),
    "SCTP" => l4(m, |p| match p { L4::Sctp(x) => Some(x), _ => None }),
    "VRRP" => l4(m, |p| match p { L4::Vrrp(x) => Some(x), _ => None }),
    "IGMP" => l4(m, |p| match p { L4::Igmp(x) => Some(x), _ => None }),
});

fn l7<M: Message>(m: &flow::Layer7, pick: fn(&L7) -> Option<&M>) -> Field<'_> {
    msg(m.record.as_ref().and_then(pick))
}

message!(flow::Layer7, "flow.Layer7", |m| {
    "type" => i(m.r#type),
    "latency_ns" => u(m.latency_ns),
    "dns" => l7(m, |r| match r { L7::Dns(x) => Some(x), _ => None }),
    "http" => l7(m, |r| match r { L7::Http(x) => Some(x), _ => None }),
    "kafka" => l7(m, |r| match r { L7::Kafka(x) => Some(x), _ => None }),
    "exchange_id" => u(m.exchange_id),
    "unpaired" => Field::Bool(m.unpaired),
});

message!(flow::TraceContext, "flow.TraceContext", |m| {
    "parent" => msg(m.parent.as_ref()),
});

message!(flow::TraceParent, "flow.TraceParent", |m| {
    "trace_id" => s(&m.trace_id),
});

message!(flow::Endpoint, "flow.Endpoint", |m| {
    "ID" => u(m.id),
    "identity" => u(m.identity),
    "cluster_name" => s(&m.cluster_name),
    "namespace" => s(&m.namespace),
    "labels" => Field::Strs(&m.labels),
    "pod_name" => s(&m.pod_name),
    "workloads" => msgs(&m.workloads),
});

message!(flow::Workload, "flow.Workload", |m| {
    "name" => s(&m.name),
    "kind" => s(&m.kind),
});

message!(flow::Tcp, "flow.TCP", |m| {
    "source_port" => u(m.source_port),
    "destination_port" => u(m.destination_port),
    "flags" => msg(m.flags.as_ref()),
});

message!(flow::Ip, "flow.IP", |m| {
    "source" => s(&m.source),
    "source_xlated" => s(&m.source_xlated),
    "destination" => s(&m.destination),
    "ipVersion" => i(m.ip_version),
    "encrypted" => Field::Bool(m.encrypted),
});

message!(flow::Ethernet, "flow.Ethernet", |m| {
    "source" => s(&m.source),
    "destination" => s(&m.destination),
});

message!(flow::TcpFlags, "flow.TCPFlags", |m| {
    "FIN" => Field::Bool(m.fin),
    "SYN" => Field::Bool(m.syn),
    "RST" => Field::Bool(m.rst),
    "PSH" => Field::Bool(m.psh),
    "ACK" => Field::Bool(m.ack),
    "URG" => Field::Bool(m.urg),
    "ECE" => Field::Bool(m.ece),
    "CWR" => Field::Bool(m.cwr),
    "NS" => Field::Bool(m.ns),
});

message!(flow::Udp, "flow.UDP", |m| {
    "source_port" => u(m.source_port),
    "destination_port" => u(m.destination_port),
});

message!(flow::Sctp, "flow.SCTP", |m| {
    "source_port" => u(m.source_port),
    "destination_port" => u(m.destination_port),
});

message!(flow::IcmPv4, "flow.ICMPv4", |m| {
    "type" => u(m.r#type),
    "code" => u(m.code),
});

message!(flow::IcmPv6, "flow.ICMPv6", |m| {
    "type" => u(m.r#type),
    "code" => u(m.code),
});

message!(flow::Vrrp, "flow.VRRP", |m| {
    "type" => u(m.r#type),
    "vrid" => u(m.vrid),
    "priority" => u(m.priority),
});

message!(flow::Igmp, "flow.IGMP", |m| {
    "type" => u(m.r#type),
    "group_address" => s(&m.group_address),
});

message!(flow::Tunnel, "flow.Tunnel", |m| {
    "protocol" => i(m.protocol),
    "IP" => msg(m.ip.as_ref()),
    "l4" => msg(m.l4.as_ref()),
    "vni" => u(m.vni),
});

message!(flow::Policy, "flow.Policy", |m| {
    "name" => s(&m.name),
    "namespace" => s(&m.namespace),
    "labels" => Field::Strs(&m.labels),
    "revision" => u(m.revision),
    "kind" => s(&m.kind),
});

message!(flow::CiliumEventType, "flow.CiliumEventType", |m| {
    "type" => i(m.r#type),
    "sub_type" => i(m.sub_type),
});

message!(flow::Dns, "flow.DNS", |m| {
    "query" => s(&m.query),
    "ips" => Field::Strs(&m.ips),
    "ttl" => u(m.ttl),
    "cnames" => Field::Strs(&m.cnames),
    "observation_source" => s(&m.observation_source),
    "rcode" => u(m.rcode),
    "qtypes" => Field::Strs(&m.qtypes),
    "rrtypes" => Field::Strs(&m.rrtypes),
});

message!(flow::HttpHeader, "flow.HTTPHeader", |m| {
    "key" => s(&m.key),
    "value" => s(&m.value),
});

message!(flow::Http, "flow.HTTP", |m| {
    "code" => u(m.code),
    "method" => s(&m.method),
    "url" => s(&m.url),
    "protocol" => s(&m.protocol),
    "headers" => msgs(&m.headers),
    "url_truncated" => Field::Bool(m.url_truncated),
    "grpc" => msg(m.grpc.as_ref()),
    "partial" => Field::Bool(m.partial),
});

message!(flow::Grpc, "flow.GRPC", |m| {
    "service" => s(&m.service),
    "method" => s(&m.method),
    "status_code" => Field::OptUint(m.status_code.map(u64::from)),
    "status_name" => s(&m.status_name),
    "message" => s(&m.message),
    "type" => i(m.r#type),
    "request_messages" => u(m.request_messages),
    "response_messages" => u(m.response_messages),
    "messages_exact" => Field::Bool(m.messages_exact),
    "request_bytes" => u(m.request_bytes),
    "response_bytes" => u(m.response_bytes),
    "reset" => s(&m.reset),
});

message!(flow::Kafka, "flow.Kafka", |m| {
    "error_code" => i(m.error_code),
    "api_version" => i(m.api_version),
    "api_key" => s(&m.api_key),
    "correlation_id" => i(m.correlation_id),
    "topic" => s(&m.topic),
});

message!(flow::Service, "flow.Service", |m| {
    "name" => s(&m.name),
    "namespace" => s(&m.namespace),
});

message!(flow::IpTraceId, "flow.IPTraceID", |m| {
    "trace_id" => u(m.trace_id),
    "ip_option_type" => u(m.ip_option_type),
});

message!(flow::NetworkInterface, "flow.NetworkInterface", |m| {
    "index" => u(m.index),
    "name" => s(&m.name),
});

message!(flow::Aggregate, "flow.Aggregate", |m| {
    "ingress_flow_count" => u(m.ingress_flow_count),
    "egress_flow_count" => u(m.egress_flow_count),
    "unknown_direction_flow_count" => u(m.unknown_direction_flow_count),
});

#[cfg(test)]
mod tests;
