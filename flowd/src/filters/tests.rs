use super::*;
use flowd_proto::flow::{
    CiliumEventType, Endpoint, Http, Ip, Layer4, Layer7, Service, Tcp, TcpFlags, TraceContext,
    TraceParent, Udp, Workload,
};

fn ep(
    ns: &str,
    pod: &str,
    labels: &[&str],
    workload: Option<(&str, &str)>,
    identity: u32,
) -> Endpoint {
    Endpoint {
        namespace: ns.into(),
        pod_name: pod.into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        workloads: workload
            .map(|(name, kind)| {
                vec![Workload {
                    name: name.into(),
                    kind: kind.into(),
                }]
            })
            .unwrap_or_default(),
        identity,
        ..Default::default()
    }
}

/// frontend (10.0.1.5:40000) → cart (10.0.2.7:8080), TCP SYN|ACK, egress.
fn tcp_flow() -> Flow {
    Flow {
        uuid: "u-1".into(),
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "10.0.1.5".into(),
            destination: "10.0.2.7".into(),
            ip_version: IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(L4::Tcp(Tcp {
                source_port: 40000,
                destination_port: 8080,
                flags: Some(TcpFlags {
                    syn: true,
                    ack: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(ep(
            "ecommerce",
            "frontend-7d4b9-x2x",
            &["k8s:app=frontend", "k8s:tier=web"],
            Some(("frontend", "Deployment")),
            1001,
        )),
        destination: Some(ep(
            "ecommerce",
            "cart-5f6c-abc",
            &["k8s:app=cart", "k8s:tier=api"],
            Some(("cart", "Deployment")),
            1002,
        )),
        destination_service: Some(Service {
            name: "cart".into(),
            namespace: "ecommerce".into(),
        }),
        destination_names: vec!["cart.ecommerce.svc.cluster.local".into()],
        node_name: "node-1".into(),
        traffic_direction: TrafficDirection::Egress as i32,
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        trace_observation_point: flow::TraceObservationPoint::ToEndpoint as i32,
        is_reply: Some(false.into()),
        r#type: flow::FlowType::L3L4 as i32,
        ..Default::default()
    }
}

fn http_flow(code: u32, method: &str, url: &str) -> Flow {
    let mut f = tcp_flow();
    f.r#type = flow::FlowType::L7 as i32;
    f.event_type = Some(CiliumEventType {
        r#type: 129,
        sub_type: 0,
    });
    f.l7 = Some(Layer7 {
        r#type: if code == 0 {
            flow::L7FlowType::Request
        } else {
            flow::L7FlowType::Response
        } as i32,
        record: Some(L7::Http(Http {
            code,
            method: method.into(),
            url: url.into(),
            protocol: "HTTP/1.1".into(),
            headers: vec![],
            url_truncated: false,
            ..Default::default()
        })),
        ..Default::default()
    });
    f
}

fn dns_flow(query: &str) -> Flow {
    let mut f = tcp_flow();
    f.l4 = Some(Layer4 {
        protocol: Some(L4::Udp(Udp {
            source_port: 53000,
            destination_port: 53,
        })),
    });
    f.l7 = Some(Layer7 {
        r#type: flow::L7FlowType::Request as i32,
        record: Some(L7::Dns(flow::Dns {
            query: query.into(),
            qtypes: vec!["A".into()],
            ..Default::default()
        })),
        ..Default::default()
    });
    f
}

fn icmp6_flow() -> Flow {
    let mut f = tcp_flow();
    f.ip = Some(Ip {
        source: "fd00::1".into(),
        destination: "fd00::2".into(),
        ip_version: IpVersion::IPv6 as i32,
        ..Default::default()
    });
    f.l4 = Some(Layer4 {
        protocol: Some(L4::IcmPv6(flow::IcmPv6 {
            r#type: 128,
            code: 0,
        })),
    });
    f
}

fn compile(ff: FlowFilter) -> CompiledFilter {
    CompiledFilter::new(&ff).unwrap_or_else(|e| panic!("{e}"))
}

fn err(ff: FlowFilter) -> FilterError {
    CompiledFilter::new(&ff).expect_err("filter should be rejected")
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn empty_filter_matches_everything() {
    let c = compile(FlowFilter::default());
    assert!(c.matches(&tcp_flow()));
    assert!(c.matches(&Flow::default()));
}

#[test]
fn ip_exact_and_cidr() {
    let f = tcp_flow();
    let m = |src: &[&str], dst: &[&str]| {
        compile(FlowFilter {
            source_ip: s(src),
            destination_ip: s(dst),
            ..Default::default()
        })
        .matches(&f)
    };
    assert!(m(&["10.0.1.5"], &[]));
    assert!(!m(&["10.0.1.6"], &[]));
    assert!(m(&["10.0.1.0/24"], &[]));
    assert!(m(&["10.0.0.0/8", "192.168.0.1"], &["10.0.2.7"]));
    assert!(!m(&["10.0.1.0/24"], &["10.0.1.0/24"]));
    assert!(!m(&["fd00::/8"], &[]));
    assert!(
        compile(FlowFilter {
            source_ip: s(&["fd00::1"]),
            ..Default::default()
        })
        .matches(&icmp6_flow())
    );
    assert!(
        compile(FlowFilter {
            destination_ip: s(&["fd00::/64"]),
            ..Default::default()
        })
        .matches(&icmp6_flow())
    );
    // No IP on the flow: no match.
    assert!(
        !compile(FlowFilter {
            source_ip: s(&["0.0.0.0/0"]),
            ..Default::default()
        })
        .matches(&Flow::default())
    );
}

#[test]
fn ip_errors_name_field_and_value() {
    let e = err(FlowFilter {
        source_ip: s(&["10.0.0.300"]),
        ..Default::default()
    });
    assert_eq!(e.field, "source_ip");
    assert_eq!(e.value, "10.0.0.300");
    assert_eq!(e.reason, "invalid IP address");
    let e = err(FlowFilter {
        destination_ip: s(&["10.0.0.0/40"]),
        ..Default::default()
    });
    assert_eq!(e.field, "destination_ip");
    assert_eq!(e.value, "10.0.0.0/40");
    assert!(e.reason.starts_with("invalid CIDR"), "{}", e.reason);
}

#[test]
fn pod_namespace_prefix() {
    let f = tcp_flow();
    let src = |p: &[&str]| {
        compile(FlowFilter {
            source_pod: s(p),
            ..Default::default()
        })
        .matches(&f)
    };
    assert!(src(&["ecommerce/"]));
    assert!(src(&["ecommerce/frontend"]));
    assert!(src(&["ecommerce/frontend-7d4b9-x2x"]));
    assert!(!src(&["ecommerce/cart"]));
    assert!(!src(&["kube-system/"]));
    assert!(!src(&["Ecommerce/"]));
    // Hubble: a bare name is in the namespace "default".
    assert!(!src(&["frontend"]));
    assert!(src(&["kube-system/", "ecommerce/front"]));
    let dst = compile(FlowFilter {
        destination_pod: s(&["ecommerce/cart"]),
        ..Default::default()
    });
    assert!(dst.matches(&f));
    let mut bare = f.clone();
    bare.source = Some(ep("", "frontend-1", &[], None, 0));
    assert!(
        src(&["ecommerce/"])
            && !compile(FlowFilter {
                source_pod: s(&["ecommerce/"]),
                ..Default::default()
            })
            .matches(&bare)
    );
    assert!(
        !compile(FlowFilter {
            source_pod: s(&["frontend"]),
            ..Default::default()
        })
        .matches(&bare)
    );
    let mut in_default = f.clone();
    in_default.source = Some(ep("default", "frontend-1", &[], None, 0));
    assert!(
        compile(FlowFilter {
            source_pod: s(&["frontend"]),
            ..Default::default()
        })
        .matches(&in_default)
    );
    // `/prefix` and `/` (hubble observe --all-namespaces): any namespace;
    // an endpoint with neither namespace nor pod never matches.
    for all in ["/", "/front"] {
        assert!(src(&[all]), "{all}");
        assert!(
            compile(FlowFilter {
                source_pod: s(&[all]),
                ..Default::default()
            })
            .matches(&bare),
            "{all}"
        );
    }
    assert!(!src(&["/cart"]));
    let mut world = f.clone();
    world.source = Some(ep("", "", &["reserved:world"], None, 2));
    assert!(
        !compile(FlowFilter {
            source_pod: s(&["/"]),
            ..Default::default()
        })
        .matches(&world)
    );
    // No source endpoint at all.
    let mut none = f.clone();
    none.source = None;
    assert!(
        !compile(FlowFilter {
            source_pod: s(&["ecommerce/"]),
            ..Default::default()
        })
        .matches(&none)
    );
}

#[test]
fn pod_and_service_errors() {
    for bad in ["", "a/b/c", "//"] {
        let e = err(FlowFilter {
            source_pod: s(&[bad]),
            ..Default::default()
        });
        assert_eq!((e.field.as_str(), e.value.as_str()), ("source_pod", bad));
    }
    let e = err(FlowFilter {
        destination_service: s(&["a/b/c"]),
        ..Default::default()
    });
    assert_eq!(e.field, "destination_service");
    assert_eq!(e.reason, "must be [namespace/][<name-prefix>] (one /)");
}

#[test]
fn service() {
    let f = tcp_flow();
    let m = |src: &[&str], dst: &[&str]| {
        compile(FlowFilter {
            source_service: s(src),
            destination_service: s(dst),
            ..Default::default()
        })
        .matches(&f)
    };
    assert!(m(&[], &["ecommerce/cart"]));
    assert!(m(&[], &["ecommerce/"]));
    assert!(m(&[], &["ecommerce/ca"]));
    assert!(!m(&[], &["ecommerce/payment"]));
    assert!(!m(&["ecommerce/"], &[]));
}

#[test]
fn workload() {
    let f = tcp_flow();
    let m = |w: Workload| {
        compile(FlowFilter {
            source_workload: vec![w],
            ..Default::default()
        })
        .matches(&f)
    };
    let w = |n: &str, k: &str| Workload {
        name: n.into(),
        kind: k.into(),
    };
    assert!(m(w("frontend", "Deployment")));
    assert!(m(w("frontend", "")));
    assert!(m(w("", "Deployment")));
    assert!(!m(w("frontend", "StatefulSet")));
    assert!(!m(w("cart", "")));
    assert!(
        compile(FlowFilter {
            destination_workload: vec![w("cart", ""), w("x", "")],
            ..Default::default()
        })
        .matches(&f)
    );
}

#[test]
fn labels() {
    let f = tcp_flow();
    let m = |src: &[&str], dst: &[&str]| {
        compile(FlowFilter {
            source_label: s(src),
            destination_label: s(dst),
            ..Default::default()
        })
        .matches(&f)
    };
    assert!(m(&["app=frontend"], &[]));
    assert!(m(&["k8s:app=frontend"], &[]));
    assert!(m(&["k8s:app in (frontend, admin)"], &[]));
    assert!(m(&["app=nope", "tier=web"], &[]));
    assert!(!m(&["app=frontend,tier=api"], &[]));
    assert!(m(&["!canary"], &["app=cart"]));
    assert!(!m(&["app=frontend"], &["app=frontend"]));
    let e = err(FlowFilter {
        source_label: s(&["app in (a"]),
        ..Default::default()
    });
    assert_eq!(e.field, "source_label");
    assert_eq!(e.value, "app in (a");
}

#[test]
fn verdict_drop_reason_and_kernel_reason() {
    let mut f = tcp_flow();
    let verdict = |v: &[Verdict], f: &Flow| {
        compile(FlowFilter {
            verdict: v.iter().map(|x| *x as i32).collect(),
            ..Default::default()
        })
        .matches(f)
    };
    assert!(verdict(&[Verdict::Forwarded], &f));
    assert!(!verdict(&[Verdict::Dropped], &f));
    f.verdict = Verdict::Dropped as i32;
    f.drop_reason_desc = DropReason::PolicyDenied as i32;
    f.kernel_drop_reason = "NETFILTER_DROP".into();
    assert!(verdict(&[Verdict::Forwarded, Verdict::Dropped], &f));
    assert!(
        compile(FlowFilter {
            drop_reason_desc: vec![DropReason::PolicyDenied as i32],
            ..Default::default()
        })
        .matches(&f)
    );
    assert!(
        !compile(FlowFilter {
            drop_reason_desc: vec![DropReason::TtlExceeded as i32],
            ..Default::default()
        })
        .matches(&f)
    );
    let kr = |n: &[&str], f: &Flow| {
        compile(FlowFilter {
            kernel_drop_reason: s(n),
            ..Default::default()
        })
        .matches(f)
    };
    assert!(kr(&["netfilter_drop"], &f));
    assert!(!kr(&["NO_SOCKET"], &f));
    assert!(!kr(&["NETFILTER_DROP"], &tcp_flow()));
    let e = err(FlowFilter {
        verdict: vec![42],
        ..Default::default()
    });
    assert_eq!((e.field.as_str(), e.value.as_str()), ("verdict", "42"));
}

#[test]
fn protocols() {
    let p = |names: &[&str], f: &Flow| {
        compile(FlowFilter {
            protocol: s(names),
            ..Default::default()
        })
        .matches(f)
    };
    assert!(p(&["tcp"], &tcp_flow()));
    assert!(p(&["TCP"], &tcp_flow()));
    assert!(!p(&["udp"], &tcp_flow()));
    assert!(p(&["udp"], &dns_flow("a.")));
    assert!(p(&["dns"], &dns_flow("a.")));
    assert!(!p(&["http"], &dns_flow("a.")));
    assert!(p(&["http"], &http_flow(200, "GET", "/")));
    // An HTTP flow also carries its TCP layer.
    assert!(p(&["tcp"], &http_flow(200, "GET", "/")));
    assert!(p(&["icmp"], &icmp6_flow()));
    assert!(p(&["icmpv6"], &icmp6_flow()));
    assert!(!p(&["icmpv4"], &icmp6_flow()));
    assert!(p(&["sctp", "icmpv4", "icmpv6"], &icmp6_flow()));
    let e = err(FlowFilter {
        protocol: s(&["tcp", "quic"]),
        ..Default::default()
    });
    assert_eq!((e.field.as_str(), e.value.as_str()), ("protocol", "quic"));
}

#[test]
fn ports() {
    let f = tcp_flow();
    let m = |src: &[&str], dst: &[&str], f: &Flow| {
        compile(FlowFilter {
            source_port: s(src),
            destination_port: s(dst),
            ..Default::default()
        })
        .matches(f)
    };
    assert!(m(&[], &["8080"], &f));
    assert!(m(&["40000"], &["80", "8080"], &f));
    assert!(!m(&[], &["80"], &f));
    assert!(!m(&["8080"], &[], &f));
    assert!(m(&[], &["53"], &dns_flow("a.")));
    // ICMP has no ports.
    assert!(!m(&[], &["0"], &icmp6_flow()));
    for bad in ["65536", "-1", "+80", "http", ""] {
        let e = err(FlowFilter {
            destination_port: s(&[bad]),
            ..Default::default()
        });
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("destination_port", bad)
        );
    }
}

#[test]
fn http_status_codes() {
    let st = |codes: &[&str], code: u32| {
        compile(FlowFilter {
            http_status_code: s(codes),
            ..Default::default()
        })
        .matches(&http_flow(code, "GET", "/cart"))
    };
    assert!(st(&["404"], 404));
    assert!(!st(&["404"], 403));
    assert!(st(&["4+"], 400));
    assert!(st(&["4+"], 499));
    assert!(!st(&["4+"], 500));
    assert!(st(&["40+"], 404));
    assert!(!st(&["40+"], 410));
    assert!(st(&["5+"], 503));
    assert!(st(&["400-599"], 400));
    assert!(st(&["400-599"], 599));
    assert!(st(&["400-599"], 503));
    assert!(!st(&["400-599"], 302));
    assert!(st(&["302", "5+"], 302));
    // A request (code 0) never matches a status filter.
    assert!(!st(&["1+", "2+", "3+", "4+", "5+"], 0));
    assert!(
        !compile(FlowFilter {
            http_status_code: s(&["2+"]),
            ..Default::default()
        })
        .matches(&tcp_flow())
    );
    for bad in [
        "4xx", "600", "6+", "099", "4++", "400-", "500-400", "400-600", "40", "+", " 404",
    ] {
        let e = err(FlowFilter {
            http_status_code: s(&[bad]),
            ..Default::default()
        });
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("http_status_code", bad),
            "{bad}"
        );
    }
    let e = err(FlowFilter {
        http_status_code: s(&["500-400"]),
        ..Default::default()
    });
    assert_eq!(e.reason, "range start is above its end");
}

#[test]
fn http_method_and_path() {
    let f = http_flow(0, "GET", "/api/v1/cart?id=7");
    let m = |ff: FlowFilter, f: &Flow| compile(ff).matches(f);
    assert!(m(
        FlowFilter {
            http_method: s(&["get"]),
            ..Default::default()
        },
        &f
    ));
    assert!(!m(
        FlowFilter {
            http_method: s(&["POST"]),
            ..Default::default()
        },
        &f
    ));
    let path = |re: &[&str], f: &Flow| {
        m(
            FlowFilter {
                http_path: s(re),
                ..Default::default()
            },
            f,
        )
    };
    assert!(path(&["^/api/v1/cart$"], &f));
    assert!(path(&["cart"], &f));
    // The regex sees the path only, not the query.
    assert!(!path(&["id=7"], &f));
    assert!(path(&["^/x$", "^/api/.*"], &f));
    assert!(path(
        &["^/p$"],
        &http_flow(0, "GET", "http://example.com/p?q=1")
    ));
    assert!(!path(&["."], &http_flow(0, "GET", "not a url")));
    assert!(!path(&["."], &tcp_flow()));
    let e = err(FlowFilter {
        http_path: s(&["^/ok$", "(unclosed"]),
        ..Default::default()
    });
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("http_path", "(unclosed")
    );
    assert!(e.reason.starts_with("invalid regex"));
    let e = err(FlowFilter {
        http_method: s(&["GET /"]),
        ..Default::default()
    });
    assert_eq!(e.field, "http_method");
}

#[test]
fn url_paths() {
    assert_eq!(url_path("/a/b?c#d"), Some("/a/b"));
    assert_eq!(url_path("/"), Some("/"));
    assert_eq!(url_path("http://h:80/x/y?z"), Some("/x/y"));
    assert_eq!(url_path("https://h"), Some(""));
    assert_eq!(url_path("*"), Some("*"));
    assert_eq!(url_path("cart"), None);
    assert_eq!(url_path("1http://h/x"), None);
}

#[test]
fn http_filters_require_l7_event_type() {
    let e = err(FlowFilter {
        http_status_code: s(&["404"]),
        event_type: vec![EventTypeFilter {
            r#type: 4,
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(e.field, "http_status_code");
    assert!(
        compile(FlowFilter {
            http_status_code: s(&["404"]),
            event_type: vec![EventTypeFilter {
                r#type: 129,
                ..Default::default()
            }],
            ..Default::default()
        })
        .matches(&http_flow(404, "GET", "/"))
    );
}

#[test]
fn dns_query() {
    let q = |re: &[&str], f: &Flow| {
        compile(FlowFilter {
            dns_query: s(re),
            ..Default::default()
        })
        .matches(f)
    };
    let f = dns_flow("inventory.ecommerce.svc.cluster.local.");
    assert!(q(&["inventory"], &f));
    assert!(q(&[r"\.ecommerce\.svc"], &f));
    assert!(q(&["^inventory.*local\\.$"], &f));
    assert!(!q(&["^payment"], &f));
    assert!(!q(&["."], &tcp_flow()));
    let e = err(FlowFilter {
        dns_query: s(&["a[b"]),
        ..Default::default()
    });
    assert_eq!((e.field.as_str(), e.value.as_str()), ("dns_query", "a[b"));
}

#[test]
fn tcp_flags_any_entry_all_its_flags() {
    let t = |flags: Vec<TcpFlags>, f: &Flow| {
        compile(FlowFilter {
            tcp_flags: flags,
            ..Default::default()
        })
        .matches(f)
    };
    let syn = TcpFlags {
        syn: true,
        ..Default::default()
    };
    let fin = TcpFlags {
        fin: true,
        ..Default::default()
    };
    let syn_ack = TcpFlags {
        syn: true,
        ack: true,
        ..Default::default()
    };
    let syn_rst = TcpFlags {
        syn: true,
        rst: true,
        ..Default::default()
    };
    let f = tcp_flow(); // SYN|ACK
    assert!(t(vec![syn], &f));
    assert!(t(vec![syn_ack], &f));
    assert!(!t(vec![fin], &f));
    assert!(!t(vec![syn_rst], &f));
    assert!(t(vec![fin, syn_ack], &f));
    assert!(!t(vec![syn], &dns_flow("a.")));
}

#[test]
fn node_name() {
    let n = |p: &[&str], f: &Flow| {
        compile(FlowFilter {
            node_name: s(p),
            ..Default::default()
        })
        .matches(f)
    };
    let f = tcp_flow();
    assert!(n(&["node-1"], &f));
    assert!(n(&["node-*"], &f));
    assert!(n(&["default/"], &f));
    assert!(!n(&["prod/"], &f));
    assert!(!n(&["node-2"], &f));
    let e = err(FlowFilter {
        node_name: s(&["a/b/c"]),
        ..Default::default()
    });
    assert_eq!((e.field.as_str(), e.value.as_str()), ("node_name", "a/b/c"));
}

#[test]
fn direction_event_type_reply_version_identity_uuid_trace() {
    let mut f = tcp_flow();
    let m = |ff: FlowFilter, f: &Flow| compile(ff).matches(f);
    assert!(m(
        FlowFilter {
            traffic_direction: vec![TrafficDirection::Egress as i32],
            ..Default::default()
        },
        &f
    ));
    assert!(!m(
        FlowFilter {
            traffic_direction: vec![TrafficDirection::Ingress as i32],
            ..Default::default()
        },
        &f
    ));
    let et = |t: i32, sub: Option<i32>| FlowFilter {
        event_type: vec![EventTypeFilter {
            r#type: t,
            match_sub_type: sub.is_some(),
            sub_type: sub.unwrap_or(0),
        }],
        ..Default::default()
    };
    assert!(m(et(4, None), &f));
    assert!(m(et(4, Some(0)), &f));
    assert!(!m(et(4, Some(3)), &f));
    assert!(!m(et(1, None), &f));
    assert!(m(et(0, None), &f));
    assert!(!m(et(0, None), &Flow::default()));
    // trace:from-endpoint (5) selects the FROM_ENDPOINT trace flows only.
    let mut from = tcp_flow();
    from.trace_observation_point = flow::TraceObservationPoint::FromEndpoint as i32;
    from.event_type = Some(CiliumEventType {
        r#type: 4,
        sub_type: 5,
    });
    assert!(m(et(4, Some(5)), &from) && !m(et(4, Some(0)), &from));
    assert!(!m(et(4, Some(5)), &f));
    // A trace flow at an unknown point has sub type 0 but is no TO_ENDPOINT.
    let mut unknown = tcp_flow();
    unknown.trace_observation_point = 0;
    assert!(m(et(4, None), &unknown) && !m(et(4, Some(0)), &unknown));

    let reply = |r: bool| FlowFilter {
        reply: vec![r],
        ..Default::default()
    };
    assert!(m(reply(false), &f));
    assert!(!m(reply(true), &f));
    f.is_reply = None;
    assert!(!m(reply(false), &f));
    f.verdict = Verdict::Dropped as i32;
    assert!(m(reply(false), &f));
    f.is_reply = Some(true.into());
    assert!(m(reply(true), &f));

    let f = tcp_flow();
    let v = |x: IpVersion| FlowFilter {
        ip_version: vec![x as i32],
        ..Default::default()
    };
    assert!(m(v(IpVersion::IPv4), &f));
    assert!(!m(v(IpVersion::IPv6), &f));
    assert!(m(v(IpVersion::IPv6), &icmp6_flow()));

    assert!(m(
        FlowFilter {
            source_identity: vec![7, 1001],
            destination_identity: vec![1002],
            ..Default::default()
        },
        &f
    ));
    assert!(!m(
        FlowFilter {
            destination_identity: vec![1001],
            ..Default::default()
        },
        &f
    ));
    assert!(m(
        FlowFilter {
            uuid: s(&["u-0", "u-1"]),
            ..Default::default()
        },
        &f
    ));
    assert!(!m(
        FlowFilter {
            uuid: s(&["u-2"]),
            ..Default::default()
        },
        &f
    ));
    let mut traced = f.clone();
    traced.trace_context = Some(TraceContext {
        parent: Some(TraceParent {
            trace_id: "abc".into(),
        }),
    });
    let tid = FlowFilter {
        trace_id: s(&["abc"]),
        ..Default::default()
    };
    assert!(m(tid.clone(), &traced));
    assert!(!m(tid, &f));
}

#[test]
fn fqdn() {
    let f = tcp_flow();
    let m = |src: &[&str], dst: &[&str]| {
        compile(FlowFilter {
            source_fqdn: s(src),
            destination_fqdn: s(dst),
            ..Default::default()
        })
        .matches(&f)
    };
    assert!(m(&[], &["*.svc.cluster.local"]));
    assert!(m(&[], &["cart.ecommerce.svc.cluster.local."]));
    assert!(!m(&[], &["*.example.com"]));
    assert!(!m(&["*"], &[]));
    let e = err(FlowFilter {
        source_fqdn: s(&["bad name"]),
        ..Default::default()
    });
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("source_fqdn", "bad name")
    );
}

#[test]
fn and_within_filter() {
    let f = tcp_flow();
    let ff = FlowFilter {
        source_pod: s(&["ecommerce/frontend"]),
        destination_port: s(&["8080"]),
        protocol: s(&["tcp"]),
        verdict: vec![Verdict::Forwarded as i32],
        ..Default::default()
    };
    assert!(compile(ff.clone()).matches(&f));
    let mut wrong_port = ff.clone();
    wrong_port.destination_port = s(&["80"]);
    assert!(!compile(wrong_port).matches(&f));
}

#[test]
fn whitelist_or_blacklist_excludes() {
    let flows = [
        tcp_flow(),
        http_flow(200, "GET", "/ok"),
        http_flow(404, "GET", "/missing"),
        http_flow(503, "POST", "/pay"),
        dns_flow("inventory.ecommerce.svc.cluster.local."),
        icmp6_flow(),
    ];
    let selected = |m: &FlowMatcher| -> Vec<usize> {
        flows
            .iter()
            .enumerate()
            .filter(|(_, f)| m.matches(f))
            .map(|(i, _)| i)
            .collect()
    };
    let all = FlowMatcher::new(&[], &[]).unwrap();
    assert!(all.is_match_all());
    assert_eq!(selected(&all), vec![0, 1, 2, 3, 4, 5]);

    // OR across whitelist filters.
    let wl = [
        FlowFilter {
            http_status_code: s(&["4+"]),
            ..Default::default()
        },
        FlowFilter {
            protocol: s(&["dns"]),
            ..Default::default()
        },
    ];
    assert_eq!(selected(&FlowMatcher::new(&wl, &[]).unwrap()), vec![2, 4]);

    // Blacklist alone excludes.
    let bl = [FlowFilter {
        protocol: s(&["http"]),
        ..Default::default()
    }];
    assert_eq!(
        selected(&FlowMatcher::new(&[], &bl).unwrap()),
        vec![0, 4, 5]
    );

    // whitelist - blacklist.
    let wl = [FlowFilter {
        http_status_code: s(&["400-599"]),
        ..Default::default()
    }];
    let bl = [FlowFilter {
        http_method: s(&["POST"]),
        ..Default::default()
    }];
    assert_eq!(selected(&FlowMatcher::new(&wl, &bl).unwrap()), vec![2]);
}

#[test]
fn matcher_errors_locate_the_filter() {
    let good = FlowFilter::default();
    let bad = FlowFilter {
        http_status_code: s(&["4xx"]),
        ..Default::default()
    };
    let e = FlowMatcher::new(&[good.clone(), bad.clone()], &[]).unwrap_err();
    assert_eq!(e.field, "whitelist[1].http_status_code");
    assert_eq!(e.value, "4xx");
    assert_eq!(
        e.to_string(),
        "invalid whitelist[1].http_status_code filter \"4xx\": expected a status code (404), a prefix (4+, 40+) or a range (400-599) within 100-599"
    );
    let e = FlowMatcher::new(&[], &[bad]).unwrap_err();
    assert_eq!(e.field, "blacklist[0].http_status_code");
}

#[test]
fn snat_addresses_are_refused_by_name() {
    use flowd_proto::flow::flow_filter::Experimental;
    let e = err(FlowFilter {
        source_ip_xlated: s(&["10.0.0.1"]),
        ..Default::default()
    });
    assert_eq!(e.field, "source_ip_xlated");
    assert!(e.to_string().contains("SNAT"), "{e}");
    // An empty Experimental message selects nothing and is no filter.
    compile(FlowFilter {
        experimental: Some(Experimental::default()),
        ..Default::default()
    });
    let e = err(FlowFilter {
        experimental: Some(Experimental {
            cel_expression: s(&["_flow.nope == 1"]),
        }),
        ..Default::default()
    });
    assert_eq!(e.field, "experimental.cel_expression");
    assert!(e.to_string().contains("undefined field 'nope'"), "{e}");
}

#[test]
fn interface_index_and_name_as_hubble_compares_them() {
    use flowd_proto::flow::NetworkInterface;
    let mut f = tcp_flow();
    f.interface = Some(NetworkInterface {
        index: 7,
        name: "lxc1".into(),
    });
    let m = |index: u32, name: &str| {
        compile(FlowFilter {
            interface: vec![NetworkInterface {
                index,
                name: name.into(),
            }],
            ..Default::default()
        })
        .matches(&f)
    };
    assert!(m(0, "lxc1"));
    assert!(m(7, ""));
    assert!(m(7, "lxc1"));
    assert!(!m(8, "lxc1"));
    assert!(!m(7, "lxc2"));
    assert!(!m(0, "lxc2"));
    // No interface on the flow: nothing matches.
    assert!(
        !compile(FlowFilter {
            interface: vec![NetworkInterface::default()],
            ..Default::default()
        })
        .matches(&tcp_flow())
    );
}

#[test]
fn http_url_and_headers() {
    use flowd_proto::flow::HttpHeader;
    let mut f = http_flow(0, "GET", "http://cart.shop/items/12");
    if let Some(L7::Http(h)) = f.l7.as_mut().and_then(|l| l.record.as_mut()) {
        h.headers = vec![HttpHeader {
            key: "content-type".into(),
            value: "application/json".into(),
        }];
    }
    let url = |re: &str| {
        compile(FlowFilter {
            http_url: s(&[re]),
            ..Default::default()
        })
        .matches(&f)
    };
    assert!(url(r"^http://cart\.shop/items/\d+$"));
    assert!(url("items"), "unanchored, as Go's MatchString");
    assert!(!url("^/items"));
    assert!(
        !compile(FlowFilter {
            http_url: s(&["."]),
            ..Default::default()
        })
        .matches(&tcp_flow())
    );
    assert_eq!(
        err(FlowFilter {
            http_url: s(&["("]),
            ..Default::default()
        })
        .field,
        "http_url"
    );
    let header = |k: &str, v: &str| {
        compile(FlowFilter {
            http_header: vec![HttpHeader {
                key: k.into(),
                value: v.into(),
            }],
            ..Default::default()
        })
        .matches(&f)
    };
    assert!(header("content-type", "application/json"));
    assert!(
        header("Content-Type", "application/json"),
        "names ignore case"
    );
    assert!(!header("content-type", "Application/JSON"), "values do not");
    assert!(!header("accept", "application/json"));
    let e = err(FlowFilter {
        http_header: vec![HttpHeader::default()],
        ..Default::default()
    });
    assert_eq!(e.field, "http_header");
    // As the other HTTP filters: refused with a non-L7 event type.
    let e = err(FlowFilter {
        http_url: s(&["x"]),
        event_type: vec![EventTypeFilter {
            r#type: 4,
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(e.field, "http_url");
}

#[test]
fn node_labels_cluster_names_trace_ids_encryption() {
    use flowd_proto::flow::IpTraceId;
    let mut f = tcp_flow();
    f.node_labels = s(&[
        "kubernetes.io/hostname=node-1",
        "topology.kubernetes.io/zone=a",
    ]);
    if let Some(src) = f.source.as_mut() {
        src.cluster_name = "east".into();
    }
    let m = |ff: FlowFilter| compile(ff).matches(&f);
    assert!(m(FlowFilter {
        node_labels: s(&["kubernetes.io/hostname=node-1"]),
        ..Default::default()
    }));
    assert!(m(FlowFilter {
        node_labels: s(&["topology.kubernetes.io/zone in (a,b), !gpu"]),
        ..Default::default()
    }));
    assert!(!m(FlowFilter {
        node_labels: s(&["kubernetes.io/hostname=node-2"]),
        ..Default::default()
    }));
    assert_eq!(
        err(FlowFilter {
            node_labels: s(&["a in ("]),
            ..Default::default()
        })
        .field,
        "node_labels"
    );
    assert!(m(FlowFilter {
        source_cluster_name: s(&["west", "east"]),
        ..Default::default()
    }));
    assert!(!m(FlowFilter {
        destination_cluster_name: s(&["east"]),
        ..Default::default()
    }));
    assert_eq!(
        err(FlowFilter {
            destination_cluster_name: s(&[""]),
            ..Default::default()
        })
        .field,
        "destination_cluster_name"
    );
    // No trace ID reads as 0, as in Hubble.
    let ids = |v: &[u64], f: &Flow| {
        compile(FlowFilter {
            ip_trace_id: v.to_vec(),
            ..Default::default()
        })
        .matches(f)
    };
    assert!(ids(&[0], &f) && !ids(&[5], &f));
    let mut traced = f.clone();
    traced.ip_trace_id = Some(IpTraceId {
        trace_id: 5,
        ip_option_type: 136,
    });
    assert!(ids(&[4, 5], &traced) && !ids(&[0], &traced));
    let enc = |v: bool, f: &Flow| {
        compile(FlowFilter {
            encrypted: vec![v],
            ..Default::default()
        })
        .matches(f)
    };
    assert!(enc(false, &f) && !enc(true, &f));
    if let Some(ip) = traced.ip.as_mut() {
        ip.encrypted = true;
    }
    assert!(enc(true, &traced) && !enc(false, &traced));
}

const GRPC_URL: &str = "http://inventory.shop:50051/shop.inventory.v1.Inventory/Reserve";

/// An HTTP/2 record of a gRPC call to shop.inventory.v1.Inventory/Reserve:
/// a REQUEST (no status) or a RESPONSE with `status` (None: the stream
/// ended without a grpc-status).
fn grpc_flow(response: bool, status: Option<u32>) -> Flow {
    let mut f = http_flow(if response { 200 } else { 0 }, "POST", GRPC_URL);
    if let Some(L7::Http(h)) = f.l7.as_mut().and_then(|l| l.record.as_mut()) {
        h.protocol = "HTTP/2".into();
        h.grpc = Some(flow::Grpc {
            service: "shop.inventory.v1.Inventory".into(),
            method: "Reserve".into(),
            status_code: status,
            status_name: status
                .and_then(names::grpc_status_name)
                .unwrap_or_default()
                .into(),
            ..Default::default()
        });
    }
    f
}

/// A plain HTTP/2 request/response (no gRPC).
fn h2_flow(code: u32) -> Flow {
    let mut f = http_flow(code, "GET", "http://web.shop/index.html");
    if let Some(L7::Http(h)) = f.l7.as_mut().and_then(|l| l.record.as_mut()) {
        h.protocol = "HTTP/2".into();
    }
    f
}

fn grpc_status_matches(values: &[&str], f: &Flow) -> bool {
    compile(FlowFilter {
        grpc_status: s(values),
        ..Default::default()
    })
    .matches(f)
}

#[test]
fn grpc_status_codes_names_and_ranges() {
    let resp = |c: u32| grpc_flow(true, Some(c));
    let m = grpc_status_matches;
    assert!(m(&["5"], &resp(5)));
    assert!(!m(&["5"], &resp(4)));
    assert!(m(&["NOT_FOUND"], &resp(5)));
    assert!(!m(&["NOT_FOUND"], &resp(0)));
    // Names in any case, and go-grpc-prometheus' spelling (its grpc_code
    // label values), so a label copied from a dashboard works.
    assert!(m(&["not_found"], &resp(5)));
    assert!(m(&["NotFound"], &resp(5)));
    assert!(m(&["Canceled"], &resp(1)));
    assert!(m(&["CANCELLED"], &resp(1)));
    assert!(m(&["0"], &resp(0)));
    assert!(m(&["OK"], &resp(0)));
    // Every failure: 1-16, both ends included; OK is not in it.
    assert!(m(&["1-16"], &resp(1)));
    assert!(m(&["1-16"], &resp(16)));
    assert!(!m(&["1-16"], &resp(0)));
    assert!(!m(&["1-16"], &resp(17)));
    assert!(m(&["5-5"], &resp(5)));
    // Values OR.
    assert!(m(&["NOT_FOUND", "14"], &resp(14)));
    assert!(!m(&["NOT_FOUND", "14"], &resp(13)));
    // Codes above 16 (sent by some servers) are codes like the others.
    assert!(m(&["42"], &resp(42)));
    assert!(m(&["17-100"], &resp(42)));
    // A REQUEST record has no status: it is not status 0.
    assert!(!m(&["0-4294967295"], &grpc_flow(false, None)));
    assert!(!m(&["OK"], &grpc_flow(false, None)));
    // Neither has a call that ended without a grpc-status (reset).
    let mut reset = grpc_flow(true, None);
    if let Some(L7::Http(h)) = reset.l7.as_mut().and_then(|l| l.record.as_mut())
        && let Some(g) = h.grpc.as_mut()
    {
        g.reset = "CANCEL".into();
    }
    assert!(!m(&["0-4294967295"], &reset));
    // Flows without a gRPC call never match, whatever their HTTP status.
    assert!(!m(&["0-4294967295"], &http_flow(200, "GET", "/")));
    assert!(!m(&["0-4294967295"], &h2_flow(200)));
    assert!(!m(&["0-4294967295"], &tcp_flow()));
}

#[test]
fn grpc_status_name_and_code_select_the_same_records() {
    let by_code = compile(FlowFilter {
        grpc_status: s(&["5"]),
        ..Default::default()
    });
    let by_name = compile(FlowFilter {
        grpc_status: s(&["NOT_FOUND"]),
        ..Default::default()
    });
    let mut flows: Vec<Flow> = (0..=20).map(|c| grpc_flow(true, Some(c))).collect();
    flows.push(grpc_flow(false, None));
    flows.push(grpc_flow(true, None));
    let sel = |c: &CompiledFilter| -> Vec<usize> {
        flows
            .iter()
            .enumerate()
            .filter(|(_, f)| c.matches(f))
            .map(|(i, _)| i)
            .collect()
    };
    assert_eq!(sel(&by_code), vec![5]);
    assert_eq!(sel(&by_name), vec![5]);
}

#[test]
fn invalid_grpc_status_values_are_refused_naming_them() {
    for bad in [
        "",
        "NOTFOUND2",
        "NOT FOUND",
        "-1",
        "+5",
        "5-",
        "-5",
        "1.5",
        " 5",
        "4294967296",
        "NOT_FOUND-INTERNAL",
        "1-2-3",
        "5xx",
    ] {
        let e = err(FlowFilter {
            grpc_status: s(&["OK", bad]),
            ..Default::default()
        });
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("grpc_status", bad),
            "{bad}"
        );
    }
    let e = err(FlowFilter {
        grpc_status: s(&["16-1"]),
        ..Default::default()
    });
    assert_eq!(e.reason, "range start is above its end");
    let e = err(FlowFilter {
        grpc_status: s(&["NOT_FOUND-INTERNAL"]),
        ..Default::default()
    });
    assert_eq!(e.reason, "a range is two status codes, e.g. 1-16");
    let e = FlowMatcher::new(
        &[FlowFilter {
            grpc_status: s(&["NOTFOUND2"]),
            ..Default::default()
        }],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid whitelist[0].grpc_status filter \"NOTFOUND2\": expected a status code (5), a status name (NOT_FOUND; OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED) or a range of codes (1-16)"
    );
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn grpc_service_and_method_exact() {
    let m = |service: &[&str], method: &[&str], f: &Flow| {
        compile(FlowFilter {
            grpc_service: s(service),
            grpc_method: s(method),
            ..Default::default()
        })
        .matches(f)
    };
    let req = grpc_flow(false, None);
    let resp = grpc_flow(true, Some(5));
    for f in [&req, &resp] {
        assert!(m(&["shop.inventory.v1.Inventory"], &[], f));
        assert!(m(&[], &["Reserve"], f));
        assert!(m(&["shop.inventory.v1.Inventory"], &["Reserve"], f));
        assert!(m(&["other.Svc", "shop.inventory.v1.Inventory"], &[], f));
        assert!(m(&[], &["Release", "Reserve"], f));
        // Exact and case-sensitive (protobuf names are): no prefix, no regex.
        assert!(!m(&["shop.inventory.v1"], &[], f));
        assert!(!m(&["Inventory"], &[], f));
        assert!(!m(&["shop.inventory.v1.inventory"], &[], f));
        assert!(!m(&[], &["reserve"], f));
        assert!(!m(&[], &["Res.*"], f));
        // AND across the two fields.
        assert!(!m(&["shop.inventory.v1.Inventory"], &["Release"], f));
    }
    // A partial record whose path flowd could not decode matches no name.
    let mut partial = grpc_flow(true, Some(0));
    if let Some(L7::Http(h)) = partial.l7.as_mut().and_then(|l| l.record.as_mut()) {
        h.partial = true;
        h.url.clear();
        let g = h.grpc.as_mut().unwrap();
        g.service.clear();
        g.method.clear();
    }
    assert!(!m(&["shop.inventory.v1.Inventory"], &[], &partial));
    assert!(!m(&[], &["Reserve"], &partial));
    // No gRPC call, no match: not even a URL with the same path.
    let plain = http_flow(200, "POST", GRPC_URL);
    assert!(!m(&["shop.inventory.v1.Inventory"], &[], &plain));
    assert!(!m(&[], &["Reserve"], &h2_flow(200)));
    assert!(!m(&[], &["Reserve"], &tcp_flow()));
}

#[test]
fn invalid_grpc_names_are_refused() {
    for bad in [
        "",
        "/shop.inventory.v1.Inventory",
        "shop.inventory.v1.Inventory/Reserve",
        "shop inventory",
    ] {
        let e = err(FlowFilter {
            grpc_service: s(&[bad]),
            ..Default::default()
        });
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("grpc_service", bad),
            "{bad}"
        );
        assert!(e.reason.contains("shop.inventory.v1.Inventory"), "{e}");
    }
    for bad in ["", "/Reserve", "Inventory/Reserve", "Re serve"] {
        let e = err(FlowFilter {
            grpc_method: s(&["Reserve", bad]),
            ..Default::default()
        });
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("grpc_method", bad),
            "{bad}"
        );
        assert!(e.reason.contains("such as Reserve"), "{e}");
    }
}

#[test]
fn protocols_grpc_and_http2() {
    let p = |names: &[&str], f: &Flow| {
        compile(FlowFilter {
            protocol: s(names),
            ..Default::default()
        })
        .matches(f)
    };
    let grpc_req = grpc_flow(false, None);
    let grpc_resp = grpc_flow(true, Some(14));
    let h2 = h2_flow(200);
    let h1 = http_flow(200, "GET", "/");
    for f in [&grpc_req, &grpc_resp] {
        assert!(p(&["grpc"], f));
        assert!(p(&["GRPC"], f));
        assert!(p(&["http2"], f));
        // Hubble's `http` is every HTTP record, HTTP/2 and gRPC included.
        assert!(p(&["http"], f));
        assert!(p(&["tcp"], f));
        assert!(!p(&["dns"], f));
    }
    assert!(!p(&["grpc"], &h2));
    assert!(p(&["http2"], &h2));
    assert!(p(&["HTTP2"], &h2));
    assert!(p(&["http"], &h2));
    assert!(!p(&["grpc"], &h1));
    assert!(!p(&["http2"], &h1));
    assert!(p(&["grpc", "http"], &h1));
    assert!(!p(&["grpc", "http2"], &tcp_flow()));
    assert!(!p(&["grpc", "http2"], &dns_flow("a.")));
    let e = err(FlowFilter {
        protocol: s(&["grpc", "h2"]),
        ..Default::default()
    });
    assert_eq!((e.field.as_str(), e.value.as_str()), ("protocol", "h2"));
    assert_eq!(
        e.reason,
        "unknown protocol (expected one of tcp, udp, icmp, icmpv4, icmpv6, sctp, vrrp, igmp, dns, http, kafka, grpc, http2)"
    );
}

#[test]
fn http_path_and_url_match_the_grpc_path() {
    let m = |ff: FlowFilter, f: &Flow| compile(ff).matches(f);
    for f in [grpc_flow(false, None), grpc_flow(true, Some(0))] {
        assert!(m(
            FlowFilter {
                http_path: s(&[r"^/shop\.inventory\.v1\.Inventory/Reserve$"]),
                ..Default::default()
            },
            &f
        ));
        assert!(m(
            FlowFilter {
                http_path: s(&["/Reserve$"]),
                ..Default::default()
            },
            &f
        ));
        // The authority is not part of the path.
        assert!(!m(
            FlowFilter {
                http_path: s(&["inventory\\.shop"]),
                ..Default::default()
            },
            &f
        ));
        assert!(m(
            FlowFilter {
                http_url: s(&[r"^http://inventory\.shop:50051/shop\.inventory\.v1\.Inventory/"]),
                ..Default::default()
            },
            &f
        ));
        assert!(m(
            FlowFilter {
                http_method: s(&["POST"]),
                ..Default::default()
            },
            &f
        ));
    }
    // The path of a gRPC URL whose authority was not decoded.
    assert_eq!(
        url_path("http:///shop.inventory.v1.Inventory/Reserve"),
        Some("/shop.inventory.v1.Inventory/Reserve")
    );
}

#[test]
fn grpc_filters_require_l7_event_type_and_combine() {
    for ff in [
        FlowFilter {
            grpc_status: s(&["5"]),
            ..Default::default()
        },
        FlowFilter {
            grpc_service: s(&["a.B"]),
            ..Default::default()
        },
        FlowFilter {
            grpc_method: s(&["C"]),
            ..Default::default()
        },
    ] {
        let e = err(FlowFilter {
            event_type: vec![EventTypeFilter {
                r#type: 4,
                ..Default::default()
            }],
            ..ff.clone()
        });
        assert!(e.field.starts_with("grpc_"), "{e}");
        assert!(e.reason.contains("L7 events"), "{e}");
        compile(FlowFilter {
            event_type: vec![EventTypeFilter {
                r#type: 129,
                ..Default::default()
            }],
            ..ff
        });
    }
    // `--protocol grpc --not --grpc-status OK`: the failing calls and the
    // requests (which have no status yet).
    let wl = [FlowFilter {
        protocol: s(&["grpc"]),
        ..Default::default()
    }];
    let bl = [FlowFilter {
        grpc_status: s(&["OK"]),
        ..Default::default()
    }];
    let matcher = FlowMatcher::new(&wl, &bl).unwrap();
    let flows = [
        grpc_flow(false, None),
        grpc_flow(true, Some(0)),
        grpc_flow(true, Some(5)),
        grpc_flow(true, None),
        h2_flow(200),
        tcp_flow(),
    ];
    let selected: Vec<usize> = flows
        .iter()
        .enumerate()
        .filter(|(_, f)| matcher.matches(f))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(selected, vec![0, 2, 3]);
}
