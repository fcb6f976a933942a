// The status bar: nodes (connected / unavailable), flows per second, lost
// events. Polled every REFRESH_MS; an unreachable relay is shown, not hidden.
import { fetchStatus, type Status } from "./api";
import { byId, el } from "./util";

const REFRESH_MS = 2000;

export function startStatus(): void {
  const summary = byId("status-summary");
  const list = byId("status-nodes");
  const rate = byId("status-rate");
  const lost = byId("status-lost");
  const lostWrap = byId("status-lost-wrap");

  const render = (s: Status) => {
    const total = s.nodes.length;
    const up = s.nodes.filter((n) => n.connected).length;
    summary.textContent =
      up === total ? `Nodes: ${up}/${total} connected` : `Nodes: ${up}/${total} connected, ${total - up} unavailable`;
    summary.dataset.connected = String(up);
    summary.dataset.total = String(total);
    summary.classList.toggle("warn", up < total);
    list.replaceChildren(
      ...s.nodes.map((n) => {
        const state = n.connected ? "connected" : "unavailable";
        const li = el("li", { "data-node": n.name, "data-state": state, class: state }, `${n.name}: ${state}`);
        li.title = `${n.address} (${n.state})`;
        return li;
      }),
    );
    rate.textContent = s.flows_per_second.toFixed(1);
    rate.dataset.value = String(s.flows_per_second);
    const lostTotal = s.lost_events + s.lost_kernel_events;
    lost.textContent = String(lostTotal);
    lost.dataset.value = String(lostTotal);
    const by = Object.entries(s.lost_by_source)
      .map(([k, v]) => `${k}: ${v}`)
      .concat(s.lost_kernel_events ? [`kernel (nodes' rings): ${s.lost_kernel_events}`] : []);
    lostWrap.title = by.length ? by.join(", ") : "no events lost";
    lostWrap.classList.toggle("warn", lostTotal > 0);
  };

  const tick = async () => {
    try {
      render(await fetchStatus());
    } catch (e) {
      summary.textContent = `Relay unreachable: ${(e as Error).message}`;
      summary.classList.add("warn");
      summary.dataset.connected = "0";
    }
    setTimeout(tick, REFRESH_MS);
  };
  void tick();
}
