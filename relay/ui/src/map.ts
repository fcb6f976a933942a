// The service map view: SVG, refreshed every REFRESH_MS from /api/map.
//
// Layout. Each namespace is a column (the outside world last), each
// workload a slot in its column. Slots are handed out once, in order of
// first appearance (the first answer sorted by name), and never move: an
// update changes colours and figures, a new workload takes the next free
// slot, and one that left the window keeps its slot for when it returns.
// A general graph layout would move everything whenever an edge appears,
// which is what an operator watching a live map must not see.
import { fetchMap, type MapEdge, type MapNode, type ServiceMap, type Stats } from "./api";
import { byId, el, fmtMs, fmtPct, fmtRate, svg } from "./util";

const REFRESH_MS = 2000;
/** Width of a sub-column of workloads in a namespace column. */
const SUB_W = 190;
const ROW_H = 120;
const TOP = 56;
const R = 18;
/** Above this many edges, only error edges keep their label; the others show it on focus/hover. */
const LABEL_LIMIT = 12;
const OUTSIDE = "";

interface Slot {
  x: number;
  y: number;
}

export interface MapView {
  show(params: URLSearchParams): void;
  hide(): void;
}

export function flowsLinkForNode(n: MapNode): string {
  return `/flows?${new URLSearchParams(selector(n, ""))}`;
}

/** observe flags selecting a map node on one side ("from", "to") or either (""). */
function selector(n: MapNode, side: "from" | "to" | ""): [string, string][] {
  const p = side ? `${side}-` : "";
  switch (n.kind) {
    case "workload":
      return [
        [`${p}namespace`, n.namespace],
        [`${p}workload`, n.label],
      ];
    case "pod":
      return [[`${p}pod`, `${n.namespace}/${n.label}`]];
    case "dns":
      return [[`${p}fqdn`, n.label]];
    case "reserved":
      return [[`${p}label`, `reserved:${n.label}`]];
    default:
      return [[`${p}ip`, n.label]];
  }
}

/** Links to an edge's flows: requests, responses, and the failing ones. */
export function edgeLinks(e: MapEdge, nodes: Map<string, MapNode>): { label: string; href: string; id: string }[] {
  const c = nodes.get(e.source);
  const s = nodes.get(e.target);
  if (!c || !s) return [];
  const port = e.port ? [["to-port", String(e.port)]] : [];
  const rport = e.port ? [["from-port", String(e.port)]] : [];
  const q = (pairs: string[][]) => `/flows?${new URLSearchParams(pairs)}`;
  const req = [...selector(c, "from"), ...selector(s, "to"), ...port];
  const resp = [...selector(s, "from"), ...selector(c, "to"), ...rport];
  const out = [
    { id: "link-requests", label: `Flows ${c.label} → ${s.label}`, href: q(req) },
    { id: "link-responses", label: `Flows ${s.label} → ${c.label} (responses)`, href: q(resp) },
  ];
  if (e.stats.errors > 0 && e.protocol === "HTTP") {
    out.push({ id: "link-errors", label: "Error responses (HTTP 4xx/5xx)", href: q([...resp, ["http-status", "400-599"]]) });
  }
  if (e.stats.errors > 0 && e.protocol === "gRPC") {
    // Every gRPC response but the OK ones: failures, resets without a status.
    out.push({
      id: "link-errors",
      label: "Failed calls (gRPC status not OK)",
      href: q([...resp, ["protocol", "grpc"], ["not", ""], ["grpc-status", "OK"]]),
    });
  }
  if (e.stats.drops > 0) {
    out.push({ id: "link-drops", label: "Dropped flows", href: q([...req.filter(([k]) => k !== "to-port"), ["verdict", "DROPPED"]]) });
  }
  return out;
}

function statsRows(s: Stats, windowSecs: number): HTMLElement {
  const dl = el("dl", { class: "stats" });
  const row = (k: string, v: string, name: string) => {
    dl.append(el("dt", {}, k), el("dd", { "data-stat": name }, v));
  };
  row("Requests/s", fmtRate(s.request_rate), "request_rate");
  row(`Requests (${windowSecs} s)`, String(s.requests), "requests");
  row("Errors", `${s.errors} (${fmtPct(s.error_rate)})`, "errors");
  if (s.drops) row("Drops", String(s.drops), "drops");
  row("Latency p50", fmtMs(s.p50_ms), "p50");
  row("Latency p95", fmtMs(s.p95_ms), "p95");
  row("Flows/s", fmtRate(s.flow_rate), "flow_rate");
  return dl;
}

function nodeTitle(n: MapNode): string {
  return n.namespace ? `${n.namespace}/${n.label}` : n.label;
}

/** Attribute, text and data writes that skip unchanged values (no style work for them). */
function setA(e: Element, k: string, v: string) {
  if (e.getAttribute(k) !== v) e.setAttribute(k, v);
}
function setT(e: Node, v: string) {
  if (e.textContent !== v) e.textContent = v;
}
function setD(e: HTMLElement | SVGElement, k: string, v: string) {
  if (e.dataset[k] !== v) e.dataset[k] = v;
}

export function createMapView(navigate: (href: string) => void): MapView {
  const svgRoot = byId("map-svg") as unknown as SVGSVGElement;
  const nsSelect = byId<HTMLSelectElement>("map-namespace");
  const winSelect = byId<HTMLSelectElement>("map-window");
  const updated = byId("map-updated");
  const empty = byId("map-empty");
  const detailBody = byId("detail-body");
  const edgeBody = byId("edge-table").querySelector("tbody") as HTMLTableSectionElement;

  // Layers: namespace boxes under edges under nodes.
  const defs = svg("defs");
  for (const [id, cls] of [
    ["arrow", "arrow"],
    ["arrow-err", "arrow err"],
  ]) {
    const m = svg("marker", { id, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    m.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: cls }));
    defs.append(m);
  }
  const gBoxes = svg("g", { class: "boxes" });
  const gEdges = svg("g", { class: "edges" });
  // Edge labels above every edge (a label is never under another edge's line).
  const gLabels = svg("g", { class: "edge-labels" });
  const gNodes = svg("g", { class: "nodes" });
  svgRoot.append(defs, gBoxes, gEdges, gLabels, gNodes);

  const groupSlots = new Map<string, number>();
  /** Per group: x of its column and its sub-columns (1 or 2), fixed when it first appears. */
  const groupGeom = new Map<string, { x: number; cols: number }>();
  let width = 0;
  const nodeSlots = new Map<string, number>();
  const groupCount = new Map<string, number>();
  const nodeEls = new Map<string, SVGGElement>();
  const edgeEls = new Map<string, SVGGElement>();
  const labelEls = new Map<string, SVGTextElement>();
  const boxEls = new Map<string, SVGGElement>();
  let generation = 0;
  let params = new URLSearchParams();
  let timer: number | undefined;
  let abort: AbortController | undefined;
  let last: ServiceMap | undefined;
  let nodesById = new Map<string, MapNode>();
  let selected: { kind: "node" | "edge"; id: string } | undefined;
  let active = false;

  const groupOf = (n: MapNode) => (n.namespace ? n.namespace : OUTSIDE);

  function assignSlots(m: ServiceMap) {
    const fresh = m.nodes.filter((n) => !nodeSlots.has(n.id));
    if (!fresh.length) return;
    // New groups: cluster namespaces by name, the outside world last.
    const newGroups = [...new Set(fresh.map(groupOf))].filter((g) => !groupSlots.has(g));
    newGroups.sort((a, b) => (a === OUTSIDE ? 1 : b === OUTSIDE ? -1 : a.localeCompare(b)));
    for (const g of newGroups) {
      groupSlots.set(g, groupSlots.size);
      const cols = fresh.filter((n) => groupOf(n) === g).length >= 3 ? 2 : 1;
      groupGeom.set(g, { x: width, cols });
      width += 60 + cols * SUB_W;
    }
    fresh.sort((a, b) => a.label.localeCompare(b.label));
    for (const n of fresh) {
      const g = groupOf(n);
      const i = groupCount.get(g) ?? 0;
      groupCount.set(g, i + 1);
      nodeSlots.set(n.id, i);
    }
  }

  function pos(n: MapNode): Slot {
    const g = groupGeom.get(groupOf(n)) ?? { x: 0, cols: 1 };
    const i = nodeSlots.get(n.id) ?? 0;
    if (g.cols === 1) return { x: g.x + 30 + SUB_W / 2, y: TOP + 40 + i * ROW_H };
    return { x: g.x + 30 + SUB_W / 2 + (i % 2) * SUB_W, y: TOP + 40 + Math.floor(i / 2) * ROW_H + (i % 2) * (ROW_H / 2) };
  }

  function drawBoxes() {
    let maxBottom = TOP + ROW_H;
    for (const [g, count] of groupCount) {
      const geom = groupGeom.get(g) ?? { x: 0, cols: 1 };
      const rows = geom.cols === 1 ? count : Math.ceil(count / 2) + 0.5;
      const height = TOP + rows * ROW_H;
      maxBottom = Math.max(maxBottom, height + 20);
      let box = boxEls.get(g);
      if (!box) {
        box = svg("g", { class: g === OUTSIDE ? "ns outside" : "ns" });
        box.append(svg("rect", { rx: 10 }), svg("text", { class: "ns-label" }));
        gBoxes.append(box);
        boxEls.set(g, box);
      }
      const [rect, text] = box.children as unknown as [SVGRectElement, SVGTextElement];
      rect.setAttribute("x", String(geom.x + 10));
      rect.setAttribute("y", "10");
      rect.setAttribute("width", String(40 + geom.cols * SUB_W));
      rect.setAttribute("height", String(height));
      text.setAttribute("x", String(geom.x + 24));
      text.setAttribute("y", "36");
      text.textContent = g === OUTSIDE ? "outside the cluster" : g;
    }
    const w = Math.max(width, 400);
    const h = maxBottom;
    const vb = `0 0 ${w} ${h}`;
    if (svgRoot.getAttribute("viewBox") !== vb) {
      svgRoot.setAttribute("viewBox", vb);
      svgRoot.style.aspectRatio = `${w} / ${h}`;
      // Never smaller than the drawing's own size at 70 %: wide maps scroll.
      svgRoot.style.minWidth = `${Math.round(w * 0.7)}px`;
    }
  }

  /** The curve from a to b, and the point halfway along it (for the label). */
  function edgePath(a: Slot, b: Slot, bend: number): [string, Slot] {
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const len = Math.hypot(dx, dy) || 1;
    const ux = dx / len;
    const uy = dy / len;
    const sx = a.x + ux * R;
    const sy = a.y + uy * R;
    const tx = b.x - ux * (R + 2);
    const ty = b.y - uy * (R + 2);
    // Bend to the left of the direction: the two directions of a pair separate.
    const mx = (sx + tx) / 2 - uy * bend;
    const my = (sy + ty) / 2 + ux * bend;
    const mid = { x: 0.25 * sx + 0.5 * mx + 0.25 * tx, y: 0.25 * sy + 0.5 * my + 0.25 * ty };
    return [`M${sx.toFixed(1)},${sy.toFixed(1)} Q${mx.toFixed(1)},${my.toFixed(1)} ${tx.toFixed(1)},${ty.toFixed(1)}`, mid];
  }

  function select(kind: "node" | "edge", id: string) {
    selected = { kind, id };
    for (const [k, g] of nodeEls) g.classList.toggle("selected", kind === "node" && k === id);
    for (const [k, g] of edgeEls) g.classList.toggle("selected", kind === "edge" && k === id);
    for (const [k, t] of labelEls) t.classList.toggle("selected", kind === "edge" && k === id);
    renderDetail();
  }

  function renderDetail() {
    if (!last || !selected) return;
    const m = last;
    if (selected.kind === "node") {
      const n = nodesById.get(selected.id);
      if (!n) {
        detailBody.replaceChildren(el("p", {}, "Not in this window."));
        return;
      }
      const link = el("a", { href: flowsLinkForNode(n), id: "link-node-flows" }, `Flows of ${n.label}`);
      detailBody.replaceChildren(
        el("h3", { "data-selected-node": n.id }, nodeTitle(n)),
        el("p", {}, `${n.kind === "workload" ? "Workload" : n.kind === "pod" ? "Pod" : "Outside the cluster"}; requests it served:`),
        statsRows(n.stats, m.window_secs),
        el("p", {}, link),
      );
      return;
    }
    const e = m.edges.find((x) => x.id === selected!.id);
    if (!e) {
      detailBody.replaceChildren(el("p", {}, "Not in this window."));
      return;
    }
    const c = nodesById.get(e.source);
    const s = nodesById.get(e.target);
    const links = edgeLinks(e, nodesById).map((l) => el("li", {}, el("a", { href: l.href, id: l.id }, l.label)));
    detailBody.replaceChildren(
      el("h3", { "data-selected-edge": e.id }, `${c ? nodeTitle(c) : e.source} → ${s ? nodeTitle(s) : e.target}`),
      el("p", {}, `${e.protocol} ${e.transport}/${e.port}`),
      statsRows(e.stats, m.window_secs),
      el("ul", { class: "links" }, ...links),
    );
  }

  function activate(g: SVGGElement, kind: "node" | "edge", id: string) {
    g.addEventListener("click", () => select(kind, id));
    g.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        select(kind, id);
      }
    });
  }

  function render(m: ServiceMap) {
    last = m;
    nodesById = new Map(m.nodes.map((n) => [n.id, n]));
    assignSlots(m);
    drawBoxes();
    const labels = m.edges.length <= LABEL_LIMIT;

    // Nodes.
    const seenNodes = new Set<string>();
    for (const n of m.nodes) {
      seenNodes.add(n.id);
      let g = nodeEls.get(n.id);
      if (!g) {
        g = svg("g", { class: `node kind-${n.kind}`, tabindex: 0, role: "button", "data-id": n.id });
        g.append(svg("circle", { r: R }), svg("text", { class: "label", "text-anchor": "middle" }), svg("text", { class: "figures", "text-anchor": "middle" }));
        activate(g, "node", n.id);
        gNodes.append(g);
        nodeEls.set(n.id, g);
      }
      const p = pos(n);
      const [circle, label, figures] = g.children as unknown as [SVGCircleElement, SVGTextElement, SVGTextElement];
      setA(circle, "cx", String(p.x));
      setA(circle, "cy", String(p.y));
      setA(label, "x", String(p.x));
      setA(label, "y", String(p.y + R + 16));
      setT(label, n.label);
      setA(figures, "x", String(p.x));
      setA(figures, "y", String(p.y + R + 31));
      const s = n.stats;
      setT(figures, s.requests ? `${fmtRate(s.request_rate)}/s · ${fmtPct(s.error_rate)}` : "");
      setD(g, "namespace", n.namespace);
      setD(g, "label", n.label);
      setD(g, "requests", String(s.requests));
      setD(g, "errors", String(s.errors));
      g.classList.toggle("err", s.errors > 0);
      setA(g, 
        "aria-label",
        `${nodeTitle(n)}: ${fmtRate(s.request_rate)} requests per second served, ${fmtPct(s.error_rate)} errors, p50 ${fmtMs(s.p50_ms)}, p95 ${fmtMs(s.p95_ms)}`,
      );
    }
    for (const [id, g] of nodeEls) {
      if (!seenNodes.has(id)) {
        g.remove();
        nodeEls.delete(id);
      }
    }

    // Edges.
    const pairs = new Set(m.edges.map((e) => `${e.source}\u0000${e.target}`));
    const seenEdges = new Set<string>();
    for (const e of m.edges) {
      seenEdges.add(e.id);
      const a = nodesById.get(e.source);
      const b = nodesById.get(e.target);
      if (!a || !b) continue;
      let g = edgeEls.get(e.id);
      if (!g) {
        g = svg("g", { class: "edge", tabindex: 0, role: "button", "data-id": e.id });
        g.append(svg("path", { class: "hit" }), svg("path", { class: "line" }));
        activate(g, "edge", e.id);
        gEdges.append(g);
        edgeEls.set(e.id, g);
        const t = svg("text", { class: "edge-label", "text-anchor": "middle", "data-edge": e.id, "aria-hidden": "true" });
        t.addEventListener("click", () => select("edge", e.id));
        gLabels.append(t);
        labelEls.set(e.id, t);
      }
      const text = labelEls.get(e.id)!;
      const reverse = pairs.has(`${e.target}\u0000${e.source}`);
      const pa = pos(a);
      const pb = pos(b);
      const [d, mid] = edgePath(pa, pb, reverse ? 40 : 24);
      const [hit, line] = g.children as unknown as [SVGPathElement, SVGPathElement];
      setA(hit, "d", d);
      setA(line, "d", d);
      const s = e.stats;
      const err = s.errors > 0;
      g.classList.toggle("err", err);
      setA(line, "marker-end", err ? "url(#arrow-err)" : "url(#arrow)");
      const sw = (1.5 + Math.min(4, Math.log10(1 + s.request_rate + s.flow_rate / 10) * 2)).toFixed(1);
      if (line.style.strokeWidth !== sw) line.style.strokeWidth = sw;
      setD(g, "source", e.source);
      setD(g, "target", e.target);
      setD(g, "protocol", e.protocol);
      setD(g, "port", String(e.port));
      setD(g, "requests", String(s.requests));
      setD(g, "errors", String(s.errors));
      setA(text, "x", mid.x.toFixed(1));
      setA(text, "y", (mid.y + 4).toFixed(1));
      setT(text, `${e.protocol}:${e.port}${err ? ` · ${fmtPct(s.error_rate)} err` : ""}`);
      text.classList.toggle("always", labels || err);
      text.classList.toggle("err", err);
      setA(g, 
        "aria-label",
        `${nodeTitle(a)} to ${nodeTitle(b)}, ${e.protocol} port ${e.port}: ${fmtRate(s.request_rate)} requests per second, ${s.errors} errors (${fmtPct(s.error_rate)}), p50 ${fmtMs(s.p50_ms)}, p95 ${fmtMs(s.p95_ms)}`,
      );
    }
    for (const [id, g] of edgeEls) {
      if (!seenEdges.has(id)) {
        g.remove();
        edgeEls.delete(id);
        labelEls.get(id)?.remove();
        labelEls.delete(id);
      }
    }

    renderEdgeTable(m);
    empty.hidden = m.edges.length > 0;
    // Namespaces known to the relay, for the selector (keeps the choice).
    const want = ["", ...m.namespaces];
    const have = [...nsSelect.options].map((o) => o.value);
    if (want.join("\n") !== have.join("\n")) {
      const cur = params.get("namespace") ?? "";
      nsSelect.replaceChildren(
        ...want.map((ns) => el("option", { value: ns }, ns || "All namespaces")),
      );
      if (cur && !want.includes(cur)) nsSelect.append(el("option", { value: cur }, cur));
      nsSelect.value = cur;
    }
    generation += 1;
    setD(updated, "generation", String(generation));
    setA(updated, "datetime", m.generated_at);
    setT(updated, new Date(m.generated_at).toLocaleTimeString());
    if (selected) {
      for (const [k, g] of nodeEls) g.classList.toggle("selected", selected.kind === "node" && k === selected.id);
      for (const [k, g] of edgeEls) g.classList.toggle("selected", selected.kind === "edge" && k === selected.id);
      renderDetail();
    }
  }

  /** The connections table: rows made when the edge set changes, figures updated in place. */
  let tableIds = "";
  function renderEdgeTable(m: ServiceMap) {
    const ids = m.edges.map((e) => e.id).join("\n");
    if (ids !== tableIds) {
      tableIds = ids;
      const rows = m.edges.map((e) => {
        const a = nodesById.get(e.source);
        const b = nodesById.get(e.target);
        const links = edgeLinks(e, nodesById);
        const sel = el("button", { type: "button", class: "linklike" }, a ? nodeTitle(a) : e.source);
        sel.addEventListener("click", () => select("edge", e.id));
        return el(
          "tr",
          { "data-id": e.id },
          el("td", {}, sel),
          el("td", {}, b ? nodeTitle(b) : e.target),
          el("td", {}, `${e.protocol} ${e.transport}/${e.port}`),
          el("td", { class: "num" }),
          el("td", { class: "num" }),
          el("td", { class: "num" }),
          el("td", { class: "num" }),
          el("td", {}, ...links.slice(0, 1).map((l) => el("a", { href: l.href }, "flows"))),
        );
      });
      edgeBody.replaceChildren(...rows);
    }
    const trs = edgeBody.rows;
    m.edges.forEach((e, i) => {
      const tr = trs[i];
      const s = e.stats;
      const set = (c: number, text: string) => {
        const td = tr.cells[c];
        if (td.textContent !== text) td.textContent = text;
      };
      set(3, fmtRate(s.request_rate));
      set(4, s.requests || s.errors ? `${s.errors} (${fmtPct(s.error_rate)})` : "–");
      set(5, fmtMs(s.p50_ms));
      set(6, fmtMs(s.p95_ms));
      tr.classList.toggle("err", s.errors > 0);
    });
  }

  async function refresh() {
    if (!active) return;
    abort?.abort();
    abort = new AbortController();
    try {
      const q = new URLSearchParams();
      q.set("window", params.get("window") ?? "live");
      if (params.get("namespace")) q.set("namespace", params.get("namespace")!);
      render(await fetchMap(q, abort.signal));
    } catch (e) {
      if ((e as Error).name !== "AbortError") {
        updated.textContent = `failed: ${(e as Error).message}`;
      }
    }
    if (active) timer = window.setTimeout(refresh, REFRESH_MS);
  }

  const onControls = () => {
    const q = new URLSearchParams();
    if (nsSelect.value) q.set("namespace", nsSelect.value);
    if (winSelect.value !== "live") q.set("window", winSelect.value);
    navigate(`/map${q.size ? `?${q}` : ""}`);
  };
  nsSelect.addEventListener("change", onControls);
  winSelect.addEventListener("change", onControls);
  detailBody.addEventListener("click", (ev) => {
    const a = (ev.target as HTMLElement).closest("a");
    if (a && a.origin === location.origin) {
      ev.preventDefault();
      navigate(a.pathname + a.search);
    }
  });
  edgeBody.addEventListener("click", (ev) => {
    const a = (ev.target as HTMLElement).closest("a");
    if (a && a.origin === location.origin) {
      ev.preventDefault();
      navigate(a.pathname + a.search);
    }
  });

  return {
    show(p: URLSearchParams) {
      const changed = p.toString() !== params.toString();
      params = p;
      nsSelect.value = p.get("namespace") ?? "";
      if (nsSelect.value !== (p.get("namespace") ?? "")) {
        nsSelect.append(el("option", { value: p.get("namespace")! }, p.get("namespace")!));
        nsSelect.value = p.get("namespace")!;
      }
      winSelect.value = p.get("window") ?? "live";
      if (!active || changed) {
        active = true;
        window.clearTimeout(timer);
        void refresh();
      }
    },
    hide() {
      active = false;
      window.clearTimeout(timer);
      abort?.abort();
    },
  };
}
