//! Command-line definition (clap derive). Filter flags are read back from the
//! `ArgMatches` by `filters`, which needs their order for `--not`.
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::format::{ColorChoice, OutputFormat, TimeFormat};
use crate::values as p;

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (also when stdout is closed early, e.g. `| head`)
  1  the server answered with an error or the stream broke (RPC error), also
     when it ends a stream because it shuts down (Unavailable: ... is shutting down)
  2  usage error: bad flag, bad value, unreadable TLS file
  3  cannot connect to the server (unreachable, refused, TLS handshake, timeout),
     or no answer within --request-timeout";

/// Observe flows of flowd / the flowd relay (Hubble-compatible).
///
/// Filters work like `hubble observe`: repeating a flag ORs its values,
/// different flags AND, `--not` sends the next filter to the blacklist.
/// Either-side flags (--namespace, --pod, --ip, --label, --service,
/// --workload, --port, --fqdn) match the source OR the destination.
#[derive(Parser, Debug)]
#[command(name = "observe", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Server status: flows in the buffer, flows seen, uptime, nodes.
    Status,
    /// List nodes or namespaces known to the server.
    List {
        #[command(subcommand)]
        what: ListCommand,
    },
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum ListCommand {
    /// Nodes behind the relay (a flowd answers with itself).
    Nodes,
    /// Namespaces that had flows recently.
    Namespaces,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Connection")]
pub struct ConnArgs {
    /// Address of the relay or a flowd: host:port, or http://, https://,
    /// tls:// URLs (the latter two enable TLS).
    #[arg(
        long,
        global = true,
        env = "OBSERVE_SERVER",
        default_value = "localhost:4245"
    )]
    pub server: String,
    /// Use TLS (trusts the system CAs unless --tls-ca-cert-files is given).
    #[arg(long, global = true)]
    pub tls: bool,
    /// PEM files with the CA certificates to trust, comma-separated or
    /// repeated (implies --tls).
    #[arg(long, global = true, value_delimiter = ',', value_name = "FILE")]
    pub tls_ca_cert_files: Vec<PathBuf>,
    /// PEM client certificate for mTLS (implies --tls; needs --tls-client-key-file).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "tls_client_key_file"
    )]
    pub tls_client_cert_file: Option<PathBuf>,
    /// PEM client key for mTLS (needs --tls-client-cert-file).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "tls_client_cert_file"
    )]
    pub tls_client_key_file: Option<PathBuf>,
    /// Server name to verify in the server certificate (default: the host of --server).
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Timeout for connecting, for each answer of status/list, for opening a
    /// flow stream, and (without --follow) for each next message of it (e.g. 5s, 1m).
    #[arg(long, global = true, value_name = "DURATION", default_value = "12s", value_parser = positive_duration)]
    pub request_timeout: Duration,
}

/// A duration of more than zero (a zero timeout would fail every call).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than 0 (expected e.g. 5s, 1m)".into()),
        Err(e) => Err(format!("{e} (expected e.g. 5s, 1m)")),
    }
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Selection")]
pub struct SelectArgs {
    /// Get the last N flows of the buffer (default 20 unless following or
    /// --since/--until is given). Against the relay: N per node.
    #[arg(long, value_name = "N", conflicts_with_all = ["first", "all"])]
    pub last: Option<u64>,
    /// Get the first N flows of the buffer. Against the relay: N per node.
    #[arg(long, value_name = "N", conflicts_with_all = ["all", "follow"])]
    pub first: Option<u64>,
    /// Get all flows of the buffer.
    #[arg(long)]
    pub all: bool,
    /// Keep printing new flows.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Flows since a time: a duration ago (5m, 1h30m) or an RFC 3339
    /// timestamp (2024-05-01T10:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = p::time_spec)]
    pub since: Option<p::TimeSpec>,
    /// Flows until a time (same syntax as --since).
    #[arg(long, value_name = "TIME", value_parser = p::time_spec, conflicts_with = "follow")]
    pub until: Option<p::TimeSpec>,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Filters")]
pub struct FilterArgs {
    /// Negate the next filter: it goes to the blacklist (e.g. --not --verdict FORWARDED).
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true")]
    pub not: Vec<bool>,
    /// Flow UUID.
    #[arg(long, value_name = "UUID", value_parser = p::non_empty)]
    pub uuid: Vec<String>,
    /// Source OR destination IP address or CIDR.
    #[arg(long, value_name = "IP|CIDR", value_parser = p::ip_or_cidr)]
    pub ip: Vec<String>,
    /// Source IP address or CIDR.
    #[arg(long, value_name = "IP|CIDR", value_parser = p::ip_or_cidr)]
    pub from_ip: Vec<String>,
    /// Destination IP address or CIDR.
    #[arg(long, value_name = "IP|CIDR", value_parser = p::ip_or_cidr)]
    pub to_ip: Vec<String>,
    /// Source OR destination DNS name (FQDN), `*` wildcards allowed.
    #[arg(long, value_name = "NAME", value_parser = p::non_empty)]
    pub fqdn: Vec<String>,
    /// Source DNS name (FQDN).
    #[arg(long, value_name = "NAME", value_parser = p::non_empty)]
    pub from_fqdn: Vec<String>,
    /// Destination DNS name (FQDN).
    #[arg(long, value_name = "NAME", value_parser = p::non_empty)]
    pub to_fqdn: Vec<String>,
    /// Source OR destination pod: [namespace/]name-prefix (namespace from -n
    /// when not given).
    #[arg(long, value_name = "[NS/]POD", value_parser = p::pod)]
    pub pod: Vec<String>,
    /// Source pod: [namespace/]name-prefix.
    #[arg(long, value_name = "[NS/]POD", value_parser = p::pod)]
    pub from_pod: Vec<String>,
    /// Destination pod: [namespace/]name-prefix.
    #[arg(long, value_name = "[NS/]POD", value_parser = p::pod)]
    pub to_pod: Vec<String>,
    /// Source OR destination namespace; also qualifies --pod/--from-pod/--to-pod
    /// and service names given without a namespace.
    #[arg(short = 'n', long, value_name = "NS", value_parser = p::namespace)]
    pub namespace: Vec<String>,
    /// Source namespace.
    #[arg(long, value_name = "NS", value_parser = p::namespace)]
    pub from_namespace: Vec<String>,
    /// Destination namespace.
    #[arg(long, value_name = "NS", value_parser = p::namespace)]
    pub to_namespace: Vec<String>,
    /// Flows of any Kubernetes namespace (source OR destination is a pod).
    #[arg(short = 'A', long, num_args = 0, default_missing_value = "true", action = ArgAction::Append)]
    pub all_namespaces: Vec<String>,
    /// Flows from any Kubernetes namespace (the source is a pod).
    #[arg(long, num_args = 0, default_missing_value = "true", action = ArgAction::Append)]
    pub from_all_namespaces: Vec<String>,
    /// Flows to any Kubernetes namespace (the destination is a pod).
    #[arg(long, num_args = 0, default_missing_value = "true", action = ArgAction::Append)]
    pub to_all_namespaces: Vec<String>,
    /// Source OR destination label selector (e.g. app=cart, k8s:app in (a,b)).
    #[arg(short = 'l', long, value_name = "SELECTOR", value_parser = p::non_empty)]
    pub label: Vec<String>,
    /// Source label selector.
    #[arg(long, value_name = "SELECTOR", value_parser = p::non_empty)]
    pub from_label: Vec<String>,
    /// Destination label selector.
    #[arg(long, value_name = "SELECTOR", value_parser = p::non_empty)]
    pub to_label: Vec<String>,
    /// Source OR destination service: [namespace/]name.
    #[arg(long, value_name = "[NS/]SVC", value_parser = p::pod)]
    pub service: Vec<String>,
    /// Source service: [namespace/]name.
    #[arg(long, value_name = "[NS/]SVC", value_parser = p::pod)]
    pub from_service: Vec<String>,
    /// Destination service: [namespace/]name.
    #[arg(long, value_name = "[NS/]SVC", value_parser = p::pod)]
    pub to_service: Vec<String>,
    /// Source OR destination workload: [kind/]name (e.g. Deployment/cart).
    #[arg(long, value_name = "[KIND/]NAME", value_parser = p::workload)]
    pub workload: Vec<String>,
    /// Source workload: [kind/]name.
    #[arg(long, value_name = "[KIND/]NAME", value_parser = p::workload)]
    pub from_workload: Vec<String>,
    /// Destination workload: [kind/]name.
    #[arg(long, value_name = "[KIND/]NAME", value_parser = p::workload)]
    pub to_workload: Vec<String>,
    /// Source OR destination port (0-65535).
    #[arg(long, value_name = "PORT", value_parser = p::port)]
    pub port: Vec<String>,
    /// Source port (0-65535).
    #[arg(long, value_name = "PORT", value_parser = p::port)]
    pub from_port: Vec<String>,
    /// Destination port (0-65535).
    #[arg(long, value_name = "PORT", value_parser = p::port)]
    pub to_port: Vec<String>,
    /// L4 or L7 protocol: tcp, udp, icmp, icmpv4, icmpv6, sctp, http, dns, kafka;
    /// grpc (gRPC calls), http2 (HTTP/2 requests, gRPC included).
    #[arg(long, value_name = "PROTO", value_parser = p::protocol)]
    pub protocol: Vec<String>,
    /// IP version: 4 or 6.
    #[arg(long, value_name = "4|6", value_parser = p::ip_version)]
    pub ip_version: Vec<String>,
    /// Verdict: FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED.
    #[arg(long, value_name = "VERDICT", value_parser = p::verdict)]
    pub verdict: Vec<String>,
    /// Event type: drop, debug, capture, trace, policy-verdict, recorder,
    /// trace-sock, l7, agent, or a number; optional :subtype (trace:to-endpoint).
    #[arg(short = 't', long = "type", value_name = "TYPE[:SUB]", value_parser = p::event_type)]
    pub r#type: Vec<String>,
    /// HTTP status: 404, prefix 5+ / 40+, or range 400-599.
    #[arg(long, value_name = "CODE", value_parser = p::http_status)]
    pub http_status: Vec<String>,
    /// HTTP method (GET, POST, ...).
    #[arg(long, value_name = "METHOD", value_parser = p::http_method)]
    pub http_method: Vec<String>,
    /// Regular expression on the HTTP URL path.
    #[arg(long, value_name = "REGEX", value_parser = p::regex)]
    pub http_path: Vec<String>,
    /// Regular expression on the DNS query name.
    #[arg(long, value_name = "REGEX", value_parser = p::regex)]
    pub dns_query: Vec<String>,
    /// TCP flags that must all be set, comma-separated: SYN,ACK (FIN SYN RST
    /// PSH ACK URG ECE CWR NS).
    #[arg(long, value_name = "FLAGS", value_parser = p::tcp_flags)]
    pub tcp_flags: Vec<String>,
    /// Node name pattern: node-1, k8s*, cluster/, cluster/node-*.
    #[arg(long, value_name = "PATTERN", value_parser = p::non_empty)]
    pub node_name: Vec<String>,
    /// Label selector on the labels of the node that observed the flow
    /// (e.g. kubernetes.io/hostname=node-a).
    #[arg(long, value_name = "SELECTOR", value_parser = p::non_empty)]
    pub node_label: Vec<String>,
    /// Source OR destination cluster name.
    #[arg(long, value_name = "NAME", value_parser = p::non_empty)]
    pub cluster: Vec<String>,
    /// Source cluster name.
    #[arg(long, value_name = "NAME", value_parser = p::non_empty)]
    pub from_cluster: Vec<String>,
    /// Destination cluster name.
    #[arg(long, value_name = "NAME", value_parser = p::non_empty)]
    pub to_cluster: Vec<String>,
    /// Interface that observed the flow, by name (e.g. lxc1a2b3c4d5e6f).
    #[arg(long, value_name = "NAME", value_parser = p::non_empty)]
    pub interface: Vec<String>,
    /// Regular expression on the whole HTTP URL (e.g. "http://.*/cart/\\d+").
    #[arg(long, value_name = "REGEX", value_parser = p::regex)]
    pub http_url: Vec<String>,
    /// HTTP header name:value (only headers flowd captures, see
    /// flowd-http-headers-allow).
    #[arg(long, value_name = "NAME:VALUE", value_parser = p::http_header)]
    pub http_header: Vec<String>,
    /// gRPC status of the call's response: a code (5), a name (NOT_FOUND) or a
    /// range of codes (1-16: every failure).
    #[arg(long, value_name = "CODE|NAME|RANGE", value_parser = p::grpc_status)]
    pub grpc_status: Vec<String>,
    /// gRPC service, fully qualified (e.g. shop.inventory.v1.Inventory).
    #[arg(long, value_name = "SERVICE", value_parser = p::grpc_service)]
    pub grpc_service: Vec<String>,
    /// gRPC method (e.g. Reserve).
    #[arg(long, value_name = "METHOD", value_parser = p::grpc_method)]
    pub grpc_method: Vec<String>,
    /// IP trace ID (IP option tracing; a number above 0).
    #[arg(long, value_name = "ID", value_parser = p::ip_trace_id)]
    pub ip_trace_id: Vec<String>,
    /// Only encrypted flows (WireGuard/IPsec).
    #[arg(long, num_args = 0, default_missing_value = "true", action = ArgAction::Append)]
    pub encrypted: Vec<String>,
    /// Only unencrypted flows.
    #[arg(long, num_args = 0, default_missing_value = "true", action = ArgAction::Append)]
    pub unencrypted: Vec<String>,
    /// CEL expression over the flow `_flow` (e.g. "_flow.verdict == Verdict.DROPPED").
    #[arg(long, value_name = "EXPR", value_parser = p::non_empty)]
    pub cel_expression: Vec<String>,
    /// Traffic direction: ingress or egress.
    #[arg(long, value_name = "DIR", value_parser = p::traffic_direction)]
    pub traffic_direction: Vec<String>,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Compact)]
    pub output: OutputFormat,
    /// Colors in compact and dict output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Print the name of the node that observed each flow.
    #[arg(long)]
    pub print_node_name: bool,
    /// Time format (Go names, as in hubble).
    #[arg(long, value_enum, default_value_t = TimeFormat::StampMilli, ignore_case = true)]
    pub time_format: TimeFormat,
}
