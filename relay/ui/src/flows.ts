// The flows view: a live table over /api/flows. The URL's query is
// `observe`'s flags (namespace=…&http-status=400-599), so a view is a link
// and means what the same observe command means.
//
// At thousands of flows per second the page keeps the newest MAX_ROWS
// flows, parses each chunk as it arrives, and renders at most every
// RENDER_MS, adding only the rows that are new and trimming the oldest (a
// burst of more than BURST_ROWS shows as the newest BURST_ROWS); pausing
// stops rendering (flows still count) until resume.
import { streamFlows, type FlowResponse } from "./api";
import { byId, el } from "./util";

const MAX_ROWS = 500;
const RENDER_MS = 250;
const BURST_ROWS = 100;
/** History asked for when the link names no selection (last/since/first). */
const DEFAULT_LAST = "200";
const FORM_KEYS = ["namespace", "pod", "workload", "verdict", "protocol", "port", "http-status", "dns-query", "node-name"];
const DNS_RCODES: Record<number, string> = { 0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED" };

export interface FlowsView {
  show(params: URLSearchParams): void;
  hide(): void;
}

type Flow = FlowResponse;

function endpoint(f: Flow, side: "source" | "destination"): string {
  const e = f[side] ?? {};
  const names: string[] = f[side === "source" ? "source_names" : "destination_names"] ?? [];
  const ip = f.IP?.[side] ?? "";
  const l4 = f.l4?.TCP ?? f.l4?.UDP ?? f.l4?.SCTP;
  const port = l4 ? l4[side === "source" ? "source_port" : "destination_port"] : undefined;
  const who = e.pod_name ? `${e.namespace}/${e.pod_name}` : names[0] ?? ip;
  return port ? `${who}:${port}` : who;
}

function protocol(f: Flow): string {
  const l7 = f.l7;
  if (l7?.http?.grpc) return "gRPC";
  if (l7?.http) return "HTTP";
  if (l7?.dns) return "DNS";
  const l4 = f.l4 ?? {};
  return Object.keys(l4)[0] ?? "";
}

/** A gRPC call's outcome: its status name (the code above 16), the reset, or none. */
function grpcStatus(g: FlowResponse): string {
  if (g.status_code !== undefined) return g.status_name || String(g.status_code);
  return g.reset ? `RST_STREAM ${g.reset}` : "no grpc-status";
}

function summary(f: Flow): string {
  const l7 = f.l7;
  if (l7?.http?.grpc) {
    const g = l7.http.grpc;
    const lat = l7.latency_ns ? ` (${(Number(l7.latency_ns) / 1e6).toFixed(2)} ms)` : "";
    const call = g.service && g.method ? `/${g.service}/${g.method}` : "(unknown method)";
    return l7.type === "RESPONSE" ? `gRPC ${call} → ${grpcStatus(g)}${lat}` : `gRPC ${call}`;
  }
  if (l7?.http) {
    const h = l7.http;
    const lat = l7.latency_ns ? ` (${(Number(l7.latency_ns) / 1e6).toFixed(2)} ms)` : "";
    // The path is what identifies the call; the host is in Destination.
    const path = String(h.url ?? "").replace(/^[a-z]+:\/\/[^/]+/i, "") || "/";
    return l7.type === "RESPONSE" ? `${h.method} ${path} → ${h.code}${lat}` : `${h.method} ${path}`;
  }
  if (l7?.dns) {
    const d = l7.dns;
    return l7.type === "RESPONSE" ? `${d.query} ${DNS_RCODES[d.rcode ?? 0] ?? d.rcode} ${(d.ips ?? []).join(", ")}` : `${d.query} ?`;
  }
  const tcp = f.l4?.TCP?.flags;
  if (tcp) return Object.keys(tcp).filter((k) => tcp[k]).join(",");
  if (f.verdict === "DROPPED") return f.drop_reason_desc ?? "dropped";
  return f.Summary ?? "";
}

function isError(f: Flow): boolean {
  const l7 = f.l7;
  // A failed gRPC call is HTTP 200: its status tells (status_code is
  // optional: present, 0 included, when the call ended with one).
  if (l7?.http?.grpc && l7.type === "RESPONSE") return l7.http.grpc.status_code !== 0;
  if (l7?.http && (l7.http.code ?? 0) >= 400) return true;
  if (l7?.dns && (l7.dns.rcode === 2 || l7.dns.rcode === 3)) return true;
  return f.verdict === "DROPPED" || f.verdict === "ERROR";
}

/** A cell whose text may be cut by the fixed layout: the whole text is its tooltip. */
const cell = (text: string) => el("td", { title: text }, text);

export function createFlowsView(navigate: (href: string) => void): FlowsView {
  const form = byId<HTMLFormElement>("flows-filters");
  const extra = byId("flows-extra");
  const pauseBtn = byId<HTMLButtonElement>("flows-pause");
  const clearBtn = byId<HTMLButtonElement>("flows-clear");
  const state = byId("flows-state");
  const errorBox = byId("flows-error");
  const tbody = byId("flows-table").querySelector("tbody") as HTMLTableSectionElement;
  const dialog = byId<HTMLDialogElement>("flow-dialog");
  const pre = byId("flow-json");

  let params = new URLSearchParams();
  let abort: AbortController | undefined;
  /** Flows not rendered yet, oldest first. */
  let fresh: Flow[] = [];
  const flowOf = new WeakMap<HTMLTableRowElement, Flow>();
  let received = 0;
  let pending = 0;
  let paused = false;
  let frame = 0;
  let status = "idle";
  let notices: string[] = [];

  const setState = (s: string) => {
    status = s;
    state.dataset.state = s;
    state.dataset.received = String(received);
    state.dataset.rows = String(tbody.rows.length);
    const what =
      s === "following" ? "Following" : s === "paused" ? `Paused (${pending} new)` : s === "ended" ? "Stream ended" : s === "error" ? "Stopped" : "Connecting";
    state.textContent = `${what}: ${received} flows received, showing the latest ${tbody.rows.length}.${notices.length ? " " + notices.join(" ") : ""}`;
  };

  const row = (f: Flow) => {
    const flow = f.flow;
    const http = flow.l7?.http;
    const tr = el(
      "tr",
      {
        tabindex: "0",
        "data-uuid": flow.uuid ?? "",
        "data-node": f.node_name ?? flow.node_name ?? "",
        "data-point": flow.trace_observation_point ?? "",
        "data-source": flow.source?.pod_name ? `${flow.source.namespace}/${flow.source.pod_name}` : "",
        "data-destination": flow.destination?.pod_name ? `${flow.destination.namespace}/${flow.destination.pod_name}` : "",
        "data-status": http && flow.l7.type === "RESPONSE" ? String(http.code) : "",
        class: isError(flow) ? "err" : "",
      },
      el("td", {}, el("time", { datetime: flow.time ?? "" }, (flow.time ?? "").replace("T", " ").replace(/\.(\d{3})\d*Z$/, ".$1"))),
      cell(endpoint(flow, "source")),
      cell(endpoint(flow, "destination")),
      el("td", { class: `verdict ${String(flow.verdict ?? "").toLowerCase()}` }, flow.verdict ?? ""),
      cell(summary(flow)),
      el("td", {}, protocol(flow)),
      el("td", {}, flow.node_name ?? ""),
    );
    flowOf.set(tr, f);
    return tr;
  };

  const render = () => {
    frame = 0;
    if (paused) {
      setState("paused");
      return;
    }
    pending = 0;
    // Newest first; only what is new. More than BURST_ROWS since the last
    // render (a fast stream): the table becomes the newest BURST_ROWS, as
    // nobody reads faster, and the page stays responsive.
    const burst = fresh.length > BURST_ROWS;
    const add = burst ? fresh.slice(-BURST_ROWS) : fresh;
    fresh = [];
    const frag = document.createDocumentFragment();
    for (let i = add.length - 1; i >= 0; i--) frag.append(row(add[i]));
    if (burst) tbody.replaceChildren(frag);
    else {
      tbody.prepend(frag);
      while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild?.remove();
    }
    setState(status === "paused" ? "following" : status);
  };
  const schedule = () => {
    if (!frame) frame = window.setTimeout(() => requestAnimationFrame(render), RENDER_MS);
  };

  const onBatch = (batch: FlowResponse[]) => {
    for (const r of batch) {
      if (r.flow) {
        fresh.push(r);
        received += 1;
        pending += 1;
      } else if (r.lost_events) {
        notices.push(`${r.lost_events.num_events_lost} events lost (${r.lost_events.source}).`);
      } else if (r.node_status && r.node_status.state_change !== "NODE_CONNECTED") {
        const n = r.node_status;
        notices.push(`${(n.node_names ?? []).join(", ")}: ${n.state_change}${n.message ? ` (${n.message})` : ""}.`);
      } else if (r.error) {
        notices.push(r.error);
      }
    }
    if (notices.length > 5) notices = notices.slice(-5);
    if (fresh.length > 2 * MAX_ROWS) fresh = fresh.slice(fresh.length - MAX_ROWS);
    schedule();
  };

  async function start() {
    abort?.abort();
    const ctl = new AbortController();
    abort = ctl;
    fresh = [];
    received = 0;
    pending = 0;
    notices = [];
    tbody.replaceChildren();
    errorBox.hidden = true;
    const q = new URLSearchParams(params);
    if (!["last", "since", "first", "all", "until"].some((k) => q.has(k))) q.set("last", DEFAULT_LAST);
    if (!q.has("follow") && !q.has("first") && !q.has("until")) q.set("follow", "");
    setState("connecting");
    try {
      status = "following";
      setState(paused ? "paused" : "following");
      await streamFlows(q, ctl.signal, onBatch);
      if (abort === ctl) setState("ended");
    } catch (e) {
      if ((e as Error).name === "AbortError") return;
      errorBox.hidden = false;
      errorBox.textContent = `The relay refused this view: ${(e as Error).message}`;
      setState("error");
    }
  }

  function fillForm(p: URLSearchParams) {
    for (const k of FORM_KEYS) {
      const input = form.elements.namedItem(k) as HTMLInputElement | HTMLSelectElement | null;
      if (input) input.value = p.getAll(k).join(",") ?? "";
    }
    const others = [...p.entries()].filter(([k]) => !FORM_KEYS.includes(k));
    extra.replaceChildren(
      ...(others.length
        ? [el("span", {}, "Also: "), ...others.map(([k, v]) => el("code", { "data-param": k }, v ? `--${k} ${v}` : `--${k}`))]
        : []),
    );
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    // Filters outside the form (from a map link) stay.
    for (const [k, v] of params) if (!FORM_KEYS.includes(k)) q.append(k, v);
    for (const k of FORM_KEYS) {
      const input = form.elements.namedItem(k) as HTMLInputElement | HTMLSelectElement | null;
      const v = input?.value.trim();
      // Comma-separated values OR, as repeated observe flags do.
      if (v) for (const part of v.split(",")) if (part.trim()) q.append(k, part.trim());
    }
    navigate(`/flows${q.size ? `?${q}` : ""}`);
  });
  clearBtn.addEventListener("click", () => navigate("/flows"));
  pauseBtn.addEventListener("click", () => {
    paused = !paused;
    pauseBtn.setAttribute("aria-pressed", String(paused));
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    if (paused) setState("paused");
    else {
      status = "following";
      schedule();
    }
  });
  const open = (tr: HTMLTableRowElement) => {
    const f = flowOf.get(tr);
    if (!f) return;
    pre.textContent = JSON.stringify(f, null, 2);
    dialog.showModal();
  };
  tbody.addEventListener("click", (ev) => {
    const tr = (ev.target as HTMLElement).closest("tr");
    if (tr) open(tr);
  });
  tbody.addEventListener("keydown", (ev) => {
    const tr = (ev.target as HTMLElement).closest("tr");
    if (tr && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault();
      open(tr);
    }
  });

  return {
    show(p: URLSearchParams) {
      if (p.toString() === params.toString() && abort && !abort.signal.aborted) return;
      params = p;
      fillForm(p);
      void start();
    },
    hide() {
      abort?.abort();
      abort = undefined;
    },
  };
}
