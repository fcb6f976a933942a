use super::*;
use flowd_proto::flow::{Endpoint, HttpHeader, Ip, Layer4, Layer7, Tcp, Udp, Verdict};

fn filter(expr: &str) -> CelFilter {
    CelFilter::compile(&[expr.to_string()]).unwrap_or_else(|(e, r)| panic!("{e}: {r}"))
}

fn refused(expr: &str) -> String {
    match CelFilter::compile(&[expr.to_string()]) {
        Ok(_) => panic!("{expr:?} compiled"),
        Err((e, reason)) => {
            assert_eq!(e, expr);
            assert!(!reason.contains('\n'), "not one line: {reason}");
            reason
        }
    }
}

fn tcp(dport: u32) -> Flow {
    Flow {
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(L4::Tcp(Tcp {
                source_port: 40000,
                destination_port: dport,
                flags: None,
            })),
        }),
        source: Some(Endpoint {
            namespace: "shop".into(),
            labels: vec!["k8s:app=frontend".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn udp() -> Flow {
    Flow {
        verdict: Verdict::Dropped as i32,
        l4: Some(Layer4 {
            protocol: Some(L4::Udp(Udp {
                source_port: 5353,
                destination_port: 53,
            })),
        }),
        ..Default::default()
    }
}

#[test]
fn hubble_examples() {
    let f = filter("_flow.verdict == Verdict.FORWARDED || _flow.verdict == Verdict.TRANSLATED");
    assert!(f.matches(&tcp(80)));
    assert!(!f.matches(&udp()));
    let f = filter("_flow.IP.source == '1.1.1.1' || _flow.IP.destination == '10.0.0.2'");
    assert!(f.matches(&tcp(80)));
    assert!(!f.matches(&udp()));
    let f = filter("has(_flow.l4.TCP)");
    assert!(f.matches(&tcp(80)));
    assert!(!f.matches(&udp()));
    let f = filter(
        "has(_flow.l4.TCP) && (_flow.l4.TCP.destination_port == uint(80) || _flow.l4.TCP.destination_port == uint(443))",
    );
    assert!(f.matches(&tcp(443)));
    assert!(!f.matches(&tcp(8080)));
    assert!(!f.matches(&udp()));
}

#[test]
fn unset_messages_read_as_defaults_and_presence_is_protobufs() {
    // The UDP flow's TCP is the default message: port 0, no error.
    assert!(filter("_flow.l4.TCP.destination_port == 0u").matches(&udp()));
    assert!(filter("!(_flow.l4.TCP.destination_port == 80u)").matches(&udp()));
    assert!(filter("_flow.source.namespace == ''").matches(&udp()));
    // has(): set message, non-zero scalar, non-empty string or list.
    assert!(!filter("has(_flow.source)").matches(&udp()));
    assert!(filter("has(_flow.source)").matches(&tcp(80)));
    assert!(!filter("has(_flow.node_name)").matches(&tcp(80)));
    assert!(filter("has(_flow.verdict)").matches(&tcp(80)));
    assert!(filter("has(_flow.source.labels)").matches(&tcp(80)));
    assert!(!filter("has(_flow.source.workloads)").matches(&tcp(80)));
    // Wrappers: null when unset.
    assert!(filter("_flow.is_reply == null").matches(&udp()));
    let mut reply = udp();
    reply.is_reply = Some(true.into());
    assert!(filter("_flow.is_reply == true").matches(&reply));
}

#[test]
fn enum_names_lists_and_macros() {
    assert!(filter("_flow.verdict == flow.Verdict.DROPPED").matches(&udp()));
    assert!(filter("_flow.verdict != Verdict.DROPPED").matches(&tcp(1)));
    assert!(filter("'k8s:app=frontend' in _flow.source.labels").matches(&tcp(1)));
    assert!(filter("_flow.source.labels.exists(l, l.startsWith('k8s:app='))").matches(&tcp(1)));
    assert!(filter("size(_flow.source.labels) == 1").matches(&tcp(1)));
    assert!(filter("_flow.IP.destination.matches('^10\\\\.0\\\\.')").matches(&tcp(1)));
    let mut h = tcp(80);
    h.l7 = Some(Layer7 {
        record: Some(L7::Http(flow::Http {
            headers: vec![HttpHeader {
                key: "x-request-id".into(),
                value: "abc".into(),
            }],
            ..Default::default()
        })),
        ..Default::default()
    });
    let f = filter("_flow.l7.http.headers.exists(h, h.key == 'x-request-id' && h.value == 'abc')");
    assert!(f.matches(&h));
    assert!(!f.matches(&tcp(80)));
    // Any expression of the list may match.
    let f = CelFilter::compile(&[
        "_flow.verdict == Verdict.DROPPED".into(),
        "has(_flow.l4.TCP)".into(),
    ])
    .unwrap();
    assert!(f.matches(&udp()) && f.matches(&tcp(1)));
}

#[test]
fn run_time_errors_do_not_match() {
    let f = filter("1u / (_flow.l4.TCP.destination_port - 80u) == 1u");
    assert!(!f.matches(&tcp(80)));
    assert!(f.matches(&tcp(81)));
}

#[test]
fn bad_expressions_are_refused_in_one_line() {
    assert!(refused("").contains("empty expression"));
    refused("something-invalid (");
    assert!(refused("_flow").contains("got 'flow.Flow', wanted 'bool' result type"));
    assert!(refused("_flow.verdict").contains("got 'int', wanted 'bool'"));
    assert!(refused("_flow.sourc.namespace == 'x'").contains("undefined field 'sourc'"));
    assert!(refused("flow.verdict == 1").contains("undeclared reference to 'flow.verdict'"));
    assert!(refused("Verdict.NOPE == 1").contains("undeclared reference"));
    assert!(refused("_flow.time == null").contains("google.protobuf.Timestamp"));
    assert!(refused("_flow.node_name.matches('(')").contains("invalid regex"));
    assert!(refused("_flow.node_name.foo == 1").contains("does not support field selection"));
}

/// Every field of every message a flow holds is readable (or refused by
/// name when its type is not available): the views cover the descriptor.
#[test]
fn every_flow_field_is_readable() {
    fn walk(m: &MessageDescriptor, path: &str, depth: usize, out: &mut Vec<(String, bool)>) {
        for f in m.fields() {
            let p = format!("{path}.{}", f.name());
            let available = field_ty(&f).is_ok();
            out.push((p.clone(), available));
            if let (Kind::Message(sub), false, true) = (f.kind(), f.is_list(), available)
                && depth < 4
                && !sub.full_name().starts_with("google.protobuf.")
            {
                walk(&sub, &p, depth + 1, out);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&schema().unwrap().flow, FLOW_VAR, 0, &mut paths);
    assert!(paths.len() > 100, "{}", paths.len());
    let flows = [Flow::default(), tcp(80), udp()];
    for (p, available) in paths {
        let expr = format!("has({p})");
        match CelFilter::compile(std::slice::from_ref(&expr)) {
            Ok(f) => {
                assert!(available, "{p} compiled but its type is not available");
                for flow in &flows {
                    let vars = Vars(flow);
                    let mut ctx = Context::with_env(ENV.clone());
                    ctx.set_variable_resolver(&vars);
                    let v = cel::Value::resolve_val(&f.exprs[0], &ctx)
                        .unwrap_or_else(|e| panic!("{expr}: {e}"));
                    assert!(v.downcast_ref::<CelBool>().is_some(), "{expr}");
                    // Reading the field must not fail (a list forces it).
                    let read = format!("size([{p}]) == 1");
                    let g = CelFilter::compile(std::slice::from_ref(&read)).unwrap();
                    let v = cel::Value::resolve_val(&g.exprs[0], &ctx)
                        .unwrap_or_else(|e| panic!("{read}: {e}"));
                    assert_eq!(v.downcast_ref::<CelBool>().map(|b| *b.inner()), Some(true));
                }
            }
            Err((_, reason)) => {
                assert!(!available, "{p}: {reason}");
                assert!(reason.contains("not available"), "{p}: {reason}");
            }
        }
    }
}
