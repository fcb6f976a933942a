// The relay's UI endpoints (relay/src/ui): JSON documents and an NDJSON
// flow stream. Types hold only the fields the page reads.

export interface Stats {
  flows: number;
  requests: number;
  errors: number;
  drops: number;
  flow_rate: number;
  request_rate: number;
  error_rate: number;
  p50_ms: number | null;
  p95_ms: number | null;
}

export interface MapNode {
  id: string;
  label: string;
  namespace: string;
  kind: "workload" | "pod" | "dns" | "reserved" | "ip";
  stats: Stats;
  outgoing: Stats;
}

export interface MapEdge {
  id: string;
  source: string;
  target: string;
  protocol: string;
  transport: string;
  port: number;
  stats: Stats;
}

export interface ServiceMap {
  window: string;
  window_secs: number;
  namespace: string | null;
  namespaces: string[];
  generated_at: string;
  nodes: MapNode[];
  edges: MapEdge[];
}

export interface NodeStatus {
  name: string;
  address: string;
  connected: boolean;
  state: string;
}

export interface Status {
  nodes: NodeStatus[];
  connected: number;
  unavailable: string[];
  flows_per_second: number;
  flows_seen: number;
  lost_events: number;
  lost_by_source: Record<string, number>;
  lost_kernel_events: number;
}

async function getJson<T>(url: string, signal?: AbortSignal): Promise<T> {
  const r = await fetch(url, { signal, headers: { Accept: "application/json" } });
  const body = await r.json();
  if (!r.ok) throw new Error(body?.error ?? `${r.status} ${r.statusText}`);
  return body as T;
}

export const fetchMap = (q: URLSearchParams, signal?: AbortSignal) =>
  getJson<ServiceMap>(`/api/map?${q}`, signal);

export const fetchStatus = (signal?: AbortSignal) => getJson<Status>("/api/status", signal);

/** One line of the flow stream: a GetFlowsResponse in protojson. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type FlowResponse = Record<string, any>;

/**
 * Streams `/api/flows?query`, calling `onBatch` with the responses of each
 * chunk read. Resolves when the stream ends; rejects on an HTTP error (with
 * the relay's one-line message) or a broken stream.
 */
export async function streamFlows(
  query: URLSearchParams,
  signal: AbortSignal,
  onBatch: (batch: FlowResponse[]) => void,
): Promise<void> {
  const r = await fetch(`/api/flows?${query}`, { signal });
  if (!r.ok || !r.body) {
    let msg = `${r.status} ${r.statusText}`;
    try {
      msg = (await r.json()).error ?? msg;
    } catch {
      /* not JSON */
    }
    throw new Error(msg);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const text = rest + value;
    const lines = text.split("\n");
    rest = lines.pop() ?? "";
    const batch: FlowResponse[] = [];
    for (const l of lines) if (l) batch.push(JSON.parse(l));
    if (batch.length) onBatch(batch);
  }
  if (rest.trim()) onBatch([JSON.parse(rest)]);
}
