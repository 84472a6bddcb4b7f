// @ts-check
// The agentmesh dashboard page: one server-sent-events stream (read with fetch, so
// the bearer token travels in a header, never in a URL) keeps a local copy of the
// registry and renders it. No framework, no build step, nothing from the internet.

/**
 * @typedef {{ inFlight: number, queueDepth: number, cpuMillis: number, rssBytes: number, p50Ms: number, errorRate: number }} LoadView
 * @typedef {{ id: string, name: string, version: string, host: string, state: string, reason: string, deployment: string,
 *   owner: string, endpoint: string, capabilities: string[], labels: Record<string, string>, load: LoadView,
 *   registeredAtMs: number, lastHeartbeatAtMs: number }} InstanceView
 * @typedef {{ fromVersion: string, toVersion: string, phase: string, updated: number, ready: number, desired: number,
 *   message: string, startedAtMs: number }} RolloutView
 * @typedef {{ name: string, version: string, generation: number, replicas: number, ready: number, updated: number,
 *   phase: string, message: string, rollout?: RolloutView }} DeploymentView
 * @typedef {{ fingerprint: string, alertname: string, severity: string, labels: Record<string, string>, summary: string,
 *   description: string, startsAtMs: number }} AlertView
 * @typedef {{ seq: number, time: string, actor: string, action: string, target: string, outcome: string }} AuditView
 * @typedef {{ id: string, name: string, version: string, host: string, state: string, load: number, share: number, p50Ms: number }} RoutingCandidate
 * @typedef {{ capability: string, version: string, candidates: RoutingCandidate[] }} RoutingView
 */

const tokenKey = "agentmesh.dashboardToken";
const routingKey = "agentmesh.routingCapability";
const maxAgentRows = 500;
const stateOrder = ["READY", "DEGRADED", "STARTING", "UNHEALTHY", "DRAINING", "STOPPED", "FAILED"];

const state = {
  /** @type {Map<string, InstanceView>} */
  instances: new Map(),
  /** @type {DeploymentView[]} */
  deployments: [],
  /** @type {AlertView[]} */
  alerts: [],
  /** @type {AuditView[]} */
  audit: [],
  /** @type {RoutingView | undefined} */
  routing: undefined,
  routingCapability: sessionStorage.getItem(routingKey) ?? "",
  filter: "",
};

/** @param {string} id */
function element(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`missing #${id}`);
  return found;
}

/**
 * @param {string} tag
 * @param {{ text?: string, className?: string, title?: string, attrs?: Record<string, string> }} [options]
 * @param {Array<Node | string>} [children]
 */
function make(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  if (options.text !== undefined) node.textContent = options.text;
  if (options.className) node.className = options.className;
  if (options.title) node.title = options.title;
  for (const [name, value] of Object.entries(options.attrs ?? {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

/** @param {string} text @param {string} kind */
function chip(text, kind) {
  return make("span", { text, className: `chip ${kind}` });
}

/** @param {Array<Node | string>} cells @param {string} [className] */
function cell(cells, className = "") {
  return make("td", { className }, cells);
}

/** @param {HTMLElement} table @param {HTMLElement[]} rows */
function fillBody(table, rows) {
  const body = table.querySelector("tbody");
  if (body) body.replaceChildren(...rows);
}

/** @param {number} bytes */
function formatBytes(bytes) {
  if (bytes <= 0) return "-";
  return bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(1)} GiB` : `${Math.round(bytes / (1 << 20))} MiB`;
}

/** @param {number} atMs */
function formatSince(atMs) {
  if (!atMs) return "";
  const seconds = Math.max(0, Math.round((Date.now() - atMs) / 1000));
  if (seconds < 90) return `${seconds}s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}

/** @param {string} spiffeId */
function shortIdentity(spiffeId) {
  const match = /^spiffe:\/\/[^/]+\/(.+)$/.exec(spiffeId);
  return match?.[1] ?? spiffeId;
}

/** @param {number} done @param {number} total */
function progressBar(done, total) {
  const bar = make("span", { className: "progress", attrs: { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": String(total), "aria-valuenow": String(done) } });
  const fill = make("span");
  fill.style.width = `${total > 0 ? Math.min(100, Math.round((done / total) * 100)) : 0}%`;
  bar.append(fill);
  return bar;
}

// ---- rendering (coalesced to one pass per animation frame)

let renderPending = false;
const dirty = { agents: false, deployments: false, alerts: false, audit: false, routing: false };

/** @param {Array<keyof typeof dirty>} parts */
function invalidate(...parts) {
  for (const part of parts) dirty[part] = true;
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    if (dirty.agents) renderAgents();
    if (dirty.deployments) renderDeployments();
    if (dirty.alerts) renderAlerts();
    if (dirty.audit) renderAudit();
    if (dirty.agents || dirty.routing) renderRouting();
    for (const part of /** @type {Array<keyof typeof dirty>} */ (Object.keys(dirty))) dirty[part] = false;
  });
}

/** @param {InstanceView} instance */
function matchesFilter(instance) {
  if (state.filter === "") return true;
  const haystack = [instance.name, instance.version, instance.state, instance.host, instance.deployment, instance.id, ...instance.capabilities].join(" ").toLowerCase();
  return state.filter.split(/\s+/).every((word) => haystack.includes(word));
}

function renderAgents() {
  const all = [...state.instances.values()];
  const counts = new Map();
  for (const instance of all) counts.set(instance.state, (counts.get(instance.state) ?? 0) + 1);
  element("summary").replaceChildren(
    ...[...counts.entries()]
      .sort(([left], [right]) => stateOrder.indexOf(left) - stateOrder.indexOf(right))
      .map(([name, count]) => chip(`${count} ${name}`, `state-${name}`)),
  );
  const shown = all.filter(matchesFilter).sort((left, right) => left.name.localeCompare(right.name) || left.id.localeCompare(right.id));
  element("agents-count").textContent = String(all.length);
  const rows = shown.slice(0, maxAgentRows).map((instance) => {
    const load = instance.load;
    const row = make("tr", { attrs: { "data-instance-id": instance.id, "data-state": instance.state } }, [
      cell([instance.name]),
      cell([instance.version], "mono"),
      cell([chip(instance.state, `state-${instance.state}`)], "state"),
      cell([instance.host]),
      cell([instance.capabilities.join(", ")], "mono wrap"),
      cell([instance.deployment || "unmanaged"], instance.deployment ? "" : "muted"),
      cell([String(load.inFlight)], "num"),
      cell([String(load.queueDepth)], "num"),
      cell([load.p50Ms ? `${load.p50Ms} ms` : "-"], "num"),
      cell([load.errorRate ? `${(load.errorRate * 100).toFixed(1)}%` : "-"], "num"),
      cell([load.cpuMillis ? `${load.cpuMillis} ms` : "-"], "num"),
      cell([formatBytes(load.rssBytes)], "num"),
      cell([instance.id], "mono muted"),
      cell([instance.reason], "muted wrap"),
    ]);
    row.title = `owner ${instance.owner}\nendpoint ${instance.endpoint || "-"}\nregistered ${formatSince(instance.registeredAtMs)} ago`;
    return row;
  });
  fillBody(element("agents"), rows);
  element("agents-note").textContent =
    all.length === 0
      ? "No agents registered yet: start a sidecar, then apply a deployment."
      : shown.length > maxAgentRows
        ? `Showing ${maxAgentRows} of ${shown.length} matching; filter to narrow.`
        : state.filter !== ""
          ? `${shown.length} of ${all.length} match the filter.`
          : "";
  renderCapabilities(all);
}

/** @param {InstanceView[]} all */
function renderCapabilities(all) {
  /** @type {Map<string, Map<string, { total: number, routable: number }>>} */
  const byCapability = new Map();
  for (const instance of all) {
    for (const offered of instance.capabilities) {
      const at = offered.lastIndexOf("@");
      const name = offered.slice(0, at);
      const version = offered.slice(at + 1);
      let versions = byCapability.get(name);
      if (!versions) byCapability.set(name, (versions = new Map()));
      const counts = versions.get(version) ?? { total: 0, routable: 0 };
      counts.total += 1;
      if (instance.state === "READY" || instance.state === "DEGRADED") counts.routable += 1;
      versions.set(version, counts);
    }
  }
  const names = [...byCapability.keys()].sort();
  element("capabilities-count").textContent = String(names.length);
  const rows = names.map((name) => {
    const versions = [...(byCapability.get(name) ?? new Map()).entries()]
      .sort(([left], [right]) => right.localeCompare(left, undefined, { numeric: true }))
      .map(([version, counts]) => `${version} (${counts.routable}/${counts.total})`);
    const row = make("tr", { className: `clickable${name === state.routingCapability ? " selected" : ""}`, attrs: { "data-capability": name } }, [
      cell([name], "mono"),
      cell([versions.join(", ")], "mono wrap"),
    ]);
    row.addEventListener("click", () => selectRouting(name));
    return row;
  });
  fillBody(element("capabilities"), rows);

  const select = /** @type {HTMLSelectElement} */ (element("routing-capability"));
  if (state.routingCapability === "" && names.length > 0) selectRouting(names[0] ?? "");
  const options = (state.routingCapability !== "" && !names.includes(state.routingCapability) ? [state.routingCapability, ...names] : names).map((name) =>
    make("option", { text: name, attrs: { value: name } }),
  );
  if (options.length === 0) options.push(make("option", { text: "no capabilities", attrs: { value: "" } }));
  select.replaceChildren(...options);
  select.value = state.routingCapability;
}

function renderDeployments() {
  element("deployments-count").textContent = String(state.deployments.length);
  element("deployments-empty").hidden = state.deployments.length > 0;
  const rows = state.deployments.map((deployment) => {
    const rollout = deployment.rollout;
    const rolloutCell = rollout
      ? cell(
          [
            progressBar(rollout.updated, rollout.desired),
            make("span", { className: "rollout-text", text: `${rollout.updated}/${rollout.desired} updated · ${rollout.ready} ready · ${rollout.fromVersion || "-"} → ${rollout.toVersion}` }),
            ...(rollout.message ? [make("span", { className: "rollout-message", text: rollout.message })] : []),
          ],
          "rollout",
        )
      : cell(["-"], "muted");
    const phase = rollout ? rollout.phase : deployment.phase || "-";
    return make(
      "tr",
      {
        attrs: {
          "data-deployment": deployment.name,
          "data-version": deployment.version,
          "data-phase": phase,
          "data-updated": String(rollout?.updated ?? deployment.updated),
          "data-desired": String(rollout?.desired ?? deployment.replicas),
        },
        title: deployment.message,
      },
      [
        cell([deployment.name]),
        cell([deployment.version], "mono"),
        cell([`${deployment.ready}/${deployment.replicas}`], "num"),
        rolloutCell,
        cell([chip(phase, `phase-${phase}`)]),
      ],
    );
  });
  fillBody(element("deployments"), rows);
}

function renderAlerts() {
  element("alerts-count").textContent = String(state.alerts.length);
  element("alerts-empty").hidden = state.alerts.length > 0;
  element("alerts").replaceChildren(
    ...state.alerts.map((alert) => {
      const subject = Object.entries(alert.labels)
        .filter(([key]) => key !== "alertname" && key !== "severity")
        .map(([key, value]) => `${key}=${value}`)
        .join(" ");
      return make("li", { attrs: { "data-alertname": alert.alertname }, title: alert.description }, [
        chip(alert.severity, `severity-${alert.severity}`),
        make("span", { className: "alert-name", text: alert.alertname }),
        make("span", { className: "mono", text: subject }),
        make("span", { className: "alert-summary", text: `${alert.summary} (for ${formatSince(alert.startsAtMs)})` }),
      ]);
    }),
  );
}

function renderAudit() {
  const rows = [...state.audit].reverse().map((entry) =>
    make("tr", { attrs: { "data-seq": String(entry.seq), "data-action": entry.action } }, [
      cell([entry.time.replace("T", " ").replace(/\.\d+Z$/, "Z")], "mono muted"),
      cell([shortIdentity(entry.actor)], "mono"),
      cell([entry.action], "mono"),
      cell([entry.target], "mono wrap"),
      cell([chip(entry.outcome, `outcome-${entry.outcome}`)]),
    ]),
  );
  fillBody(element("audit"), rows);
}

function renderRouting() {
  const capability = state.routingCapability;
  const view = state.routing && state.routing.capability === capability ? state.routing : undefined;
  const candidates = view?.candidates ?? [];
  element("routing-summary").textContent =
    capability === ""
      ? "Register an agent to see how its capability is routed."
      : !view
        ? "loading…"
        : candidates.length === 0
          ? `Nothing routable for ${capability}: calls fail with UNAVAILABLE.`
          : `${capability}@${view.version}: ${candidates.length} routable instance(s); the balancer (power of two choices on this load) picks each with the share shown.`;
  fillBody(
    element("routing"),
    candidates.map((candidate) =>
      make("tr", { attrs: { "data-instance-id": candidate.id, "data-share": candidate.share.toFixed(4) } }, [
        cell([candidate.id], "mono"),
        cell([candidate.version], "mono"),
        cell([candidate.host]),
        cell([chip(candidate.state, `state-${candidate.state}`)]),
        cell([String(candidate.load)], "num"),
        cell([progressBar(Math.round(candidate.share * 1000), 1000), `${(candidate.share * 100).toFixed(1)}%`], "share"),
      ]),
    ),
  );
  // Instances offering the capability that calls do not reach, and why.
  const routed = new Set(candidates.map((candidate) => candidate.id));
  const excluded = [];
  for (const instance of state.instances.values()) {
    const offered = instance.capabilities.find((entry) => entry.slice(0, entry.lastIndexOf("@")) === capability);
    if (!offered || routed.has(instance.id) || !view) continue;
    const version = offered.slice(offered.lastIndexOf("@") + 1);
    const why = instance.state !== "READY" && instance.state !== "DEGRADED" ? `${instance.state}, not routable` : `version ${version}: an older version than the routable ${view.version}`;
    excluded.push(make("li", { attrs: { "data-instance-id": instance.id }, text: `${instance.id} (${instance.host}): ${why}` }));
  }
  element("routing-excluded").replaceChildren(...excluded);
}

// ---- routing view: fetched when the selection or what it depends on changes (at most one request in flight)

let routingInFlight = false;
let routingAgain = false;

/** @param {string} capability */
function selectRouting(capability) {
  if (capability === state.routingCapability) return;
  state.routingCapability = capability;
  sessionStorage.setItem(routingKey, capability);
  state.routing = undefined;
  invalidate("agents", "routing");
  refreshRouting();
}

async function refreshRouting() {
  if (state.routingCapability === "") return;
  if (routingInFlight) {
    routingAgain = true;
    return;
  }
  routingInFlight = true;
  try {
    const capability = state.routingCapability;
    const response = await fetch(`api/routing?capability=${encodeURIComponent(capability)}`, { headers: authHeaders(), cache: "no-store" });
    if (response.status === 401) return signedOut(await errorText(response));
    if (response.ok) state.routing = /** @type {RoutingView} */ (await response.json());
    else state.routing = { capability, version: "", candidates: [] };
    invalidate("routing");
  } catch {
    // The event stream reports connection trouble; the next change retries.
  } finally {
    routingInFlight = false;
    if (routingAgain) {
      routingAgain = false;
      void refreshRouting();
    }
  }
}

/** @param {InstanceView} instance */
function affectsRouting(instance) {
  return instance.capabilities.some((entry) => entry.slice(0, entry.lastIndexOf("@")) === state.routingCapability);
}

// ---- the event stream

/** @returns {Record<string, string>} */
function authHeaders() {
  const token = sessionStorage.getItem(tokenKey);
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** @param {Response} response */
async function errorText(response) {
  try {
    const body = /** @type {{ error?: string }} */ (await response.json());
    return body.error ?? `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

/** @param {string} status @param {string} text */
function setConnection(status, text) {
  const indicator = element("connection");
  indicator.dataset.status = status;
  indicator.textContent = text;
}

/** @param {string} reason */
function signedOut(reason) {
  sessionStorage.removeItem(tokenKey);
  stopStream();
  setConnection("signed-out", "signed out");
  element("identity").textContent = "";
  element("login-reason").textContent = reason;
  element("login").hidden = false;
  element("main").hidden = true;
}

/**
 * @param {string} event
 * @param {unknown} data
 */
function onEvent(event, data) {
  switch (event) {
    case "session": {
      const session = /** @type {{ authRequired: boolean, spiffeId: string, expiresAtMs: number }} */ (data);
      element("identity").textContent = session.authRequired
        ? `${shortIdentity(session.spiffeId)} until ${new Date(session.expiresAtMs).toLocaleTimeString()}`
        : "loopback: no sign-in needed";
      element("login").hidden = true;
      element("main").hidden = false;
      return;
    }
    case "snapshot": {
      const snapshot = /** @type {{ revision: number, instances: InstanceView[] }} */ (data);
      state.instances = new Map(snapshot.instances.map((instance) => [instance.id, instance]));
      setConnection("live", "live");
      invalidate("agents");
      void refreshRouting();
      return;
    }
    case "instance": {
      const change = /** @type {{ kind: string, id?: string, instance?: InstanceView }} */ (data);
      const before = change.id !== undefined ? state.instances.get(change.id) : undefined;
      if (change.kind === "removed" && change.id !== undefined) state.instances.delete(change.id);
      else if (change.instance) state.instances.set(change.instance.id, change.instance);
      invalidate("agents");
      const touched = change.instance ?? before;
      if (touched && affectsRouting(touched)) void refreshRouting();
      return;
    }
    case "load": {
      const loads = /** @type {Record<string, LoadView>} */ (data);
      for (const [id, load] of Object.entries(loads)) {
        const instance = state.instances.get(id);
        if (instance) instance.load = load;
      }
      invalidate("agents");
      void refreshRouting();
      return;
    }
    case "deployments":
      state.deployments = /** @type {DeploymentView[]} */ (data);
      invalidate("deployments");
      return;
    case "alerts":
      state.alerts = /** @type {AlertView[]} */ (data);
      invalidate("alerts");
      return;
    case "audit":
      state.audit = /** @type {AuditView[]} */ (data);
      invalidate("audit");
      return;
    case "session-ended":
      signedOut(/** @type {{ reason: string }} */ (data).reason);
      return;
  }
}

/** @type {AbortController | undefined} */
let streamAbort;
let reconnectDelayMs = 1000;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let reconnectTimer;

function stopStream() {
  clearTimeout(reconnectTimer);
  streamAbort?.abort();
  streamAbort = undefined;
}

async function connect() {
  stopStream();
  const abort = new AbortController();
  streamAbort = abort;
  setConnection(state.instances.size > 0 ? "reconnecting" : "connecting", state.instances.size > 0 ? "reconnecting" : "connecting");
  try {
    const response = await fetch("api/events", { headers: { ...authHeaders(), accept: "text/event-stream" }, cache: "no-store", signal: abort.signal });
    if (response.status === 401) return signedOut(await errorText(response));
    if (!response.ok || !response.body) throw new Error(await errorText(response));
    reconnectDelayMs = 1000;
    await readEvents(response.body, abort.signal);
  } catch (error) {
    if (abort.signal.aborted) return;
    setConnection("reconnecting", `reconnecting (${error instanceof Error ? error.message : "connection lost"})`);
  }
  if (abort.signal.aborted) return;
  setConnection("reconnecting", "reconnecting");
  reconnectTimer = setTimeout(() => void connect(), reconnectDelayMs);
  reconnectDelayMs = Math.min(reconnectDelayMs * 2, 15_000);
}

/**
 * The text/event-stream format, as much as the server uses: `event:` and `data:`
 * lines, blocks ended by a blank line, `:` comments and `retry:` ignored.
 * @param {ReadableStream<Uint8Array>} body
 * @param {AbortSignal} signal
 */
async function readEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += decoder.decode(value, { stream: true });
    let boundary = buffered.indexOf("\n\n");
    while (boundary !== -1) {
      const block = buffered.slice(0, boundary);
      buffered = buffered.slice(boundary + 2);
      boundary = buffered.indexOf("\n\n");
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length > 0) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

// ---- start

/**
 * A token arrives in the URL fragment (never sent to any server): kept for this
 * tab only and taken out of the address bar. True when there was one.
 */
function takeTokenFromUrl() {
  const fromUrl = /(?:^#|&)token=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (!fromUrl?.[1]) return false;
  sessionStorage.setItem(tokenKey, fromUrl[1]);
  history.replaceState(null, "", `${location.pathname}${location.search}`);
  return true;
}

function start() {
  takeTokenFromUrl();
  // Opening a token URL in the tab that already shows this page changes only the fragment: no reload.
  window.addEventListener("hashchange", () => {
    if (takeTokenFromUrl()) void connect();
  });
  element("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = /** @type {HTMLInputElement} */ (element("token-input"));
    const token = input.value.trim();
    if (token === "") return;
    sessionStorage.setItem(tokenKey, token);
    input.value = "";
    element("login").hidden = true;
    void connect();
  });
  element("agent-filter").addEventListener("input", (event) => {
    state.filter = /** @type {HTMLInputElement} */ (event.target).value.trim().toLowerCase();
    invalidate("agents");
  });
  element("routing-capability").addEventListener("change", (event) => selectRouting(/** @type {HTMLSelectElement} */ (event.target).value));
  void connect();
}

start();
