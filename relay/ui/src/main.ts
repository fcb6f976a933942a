// The relay's web UI: a service map, a live flow table and the nodes'
// status. Views are paths (/map, /flows) with their options in the query,
// so every view is a link.
import "./style.css";
import { createFlowsView } from "./flows";
import { createMapView } from "./map";
import { startStatus } from "./status";
import { byId } from "./util";

const views = {
  map: byId("view-map"),
  flows: byId("view-flows"),
};

function navigate(href: string) {
  history.pushState(null, "", href);
  route();
}

const mapView = createMapView(navigate);
const flowsView = createFlowsView(navigate);

function route() {
  const view = location.pathname.startsWith("/flows") ? "flows" : "map";
  const params = new URLSearchParams(location.search);
  for (const [name, section] of Object.entries(views)) section.hidden = name !== view;
  for (const a of document.querySelectorAll<HTMLAnchorElement>("nav a[data-view]")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${view === "map" ? "Service map" : "Flows"} · flowd relay`;
  document.body.dataset.view = view;
  if (view === "map") {
    flowsView.hide();
    mapView.show(params);
  } else {
    mapView.hide();
    flowsView.show(params);
  }
}

document.querySelector("nav")?.addEventListener("click", (ev) => {
  const a = (ev.target as HTMLElement).closest("a");
  if (a?.dataset.view) {
    ev.preventDefault();
    navigate(a.dataset.view === "map" ? "/map" : "/flows");
  }
});
window.addEventListener("popstate", route);
startStatus();
route();
