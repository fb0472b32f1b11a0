"use strict";
// Relay playground: one WebSocket per user (/api/streaming/ws/{user}), messages {message_type, request_id, data}.
// Model output is rendered with text nodes only, never as HTML.

const $ = (id) => document.getElementById(id);
const state = {
  user: localStorage.getItem("relay.user") || "playground",
  ws: null,
  ready: null,
  view: null, // {sessionId, compare, fresh, columns: Map(provider|null -> {log, sessionId})}
  run: null, // the request in flight: {id, bubbles: Map(provider|null -> bubble)}
  counter: 0,
};

// Identity travels as X-User-Id for now; an API key header joins here when keys arrive.
const authHeaders = () => ({ "X-User-Id": state.user });

async function api(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ? body.error.message : `${response.status} on ${path}`);
  return body;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function notice(message) {
  $("notice").textContent = message;
  $("notice").hidden = !message;
}

function setConnection(value) {
  $("conn").dataset.state = value;
  $("conn").textContent = { open: "connected", connecting: "connecting…", closed: "disconnected" }[value];
}

function connect() {
  if (state.ws && state.ws.readyState <= WebSocket.OPEN) return state.ready;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/streaming/ws/${encodeURIComponent(state.user)}`);
  state.ws = ws;
  setConnection("connecting");
  state.ready = new Promise((resolve, reject) => {
    ws.onopen = () => { setConnection("open"); resolve(ws); };
    ws.onerror = () => reject(new Error("The WebSocket connection failed"));
  });
  ws.onmessage = (message) => onMessage(JSON.parse(message.data));
  ws.onclose = () => {
    if (state.ws !== ws) return;
    setConnection("closed");
    if (state.run) failRun("The connection closed");
  };
  return state.ready;
}

// ---- providers and controls

const selected = () => [...$("providers").querySelectorAll("input:checked")].map((input) => input.value);

function setSelected(ids) {
  for (const input of $("providers").querySelectorAll("input")) input.checked = ids.includes(input.value);
  syncMode();
}

function syncMode() {
  const mode = $("mode");
  const compare = selected().length > 1;
  if (compare && mode.value !== "interleaved") {
    mode.dataset.single = mode.value;
    mode.append(new Option("interleaved"));
    mode.value = "interleaved";
  } else if (!compare && mode.value === "interleaved") {
    mode.querySelector("option:last-child").remove();
    mode.value = mode.dataset.single;
  }
  mode.disabled = compare;
}

async function loadProviders() {
  const [{ data }, models] = await Promise.all([api("/api/streaming/providers"), api("/v1/models")]);
  const box = $("providers");
  box.replaceChildren();
  for (const provider of data) {
    const input = el("input");
    input.type = "checkbox";
    input.value = provider.provider_id;
    input.dataset.testid = `provider-${provider.provider_id}`;
    input.disabled = provider.features.length === 0;
    const chip = el("label", "chip");
    chip.title = input.disabled ? "no adapter for this provider type" : `${provider.provider_type} · ${provider.model}`;
    chip.append(input, provider.provider_id);
    box.append(chip);
  }
  const usable = box.querySelector("input:not(:disabled)");
  if (usable) usable.checked = true;
  $("models").replaceChildren(...models.data.map((model) => new Option(model.id)));
}

function providerOptions() {
  const raw = $("provider-options").value.trim();
  if (!raw) return {};
  let value;
  try { value = JSON.parse(raw); } catch { value = null; }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new Error("Provider options must be a JSON object, e.g. {\"tokens_per_s\": 5}");
  }
  return { provider_options: value };
}

// ---- the chat view: one column, or one per provider when comparing

function openView(sessionId, compare, providers, fresh) {
  state.view = { sessionId, compare, fresh, columns: new Map() };
  const root = $("columns");
  root.replaceChildren();
  root.classList.toggle("compare", compare);
  for (const provider of compare ? providers : [null]) {
    const column = el("section", "column");
    column.dataset.testid = "column";
    column.dataset.provider = provider || "";
    if (compare) column.append(el("h3", "column-title", provider));
    const log = el("div", "log");
    log.dataset.testid = "log";
    column.append(log);
    root.append(column);
    state.view.columns.set(provider, { log, sessionId: compare ? `${sessionId}.${provider}` : sessionId });
  }
  showSession();
}

function showSession() {
  const { sessionId, compare, columns } = state.view;
  const label = $("session-label");
  label.dataset.sessionId = sessionId || "";
  label.textContent = !sessionId ? "New session"
    : compare ? `Comparison ${sessionId} · ${[...columns.keys()].join(" vs ")}` : `Session ${sessionId}`;
  for (const item of $("sessions").children) item.classList.toggle("active", item.dataset.sessionId === sessionId);
}

function addUser(log, text) {
  log.append(el("div", "msg user", text));
  log.scrollTop = log.scrollHeight;
}

function addAssistant(log, provider) {
  const root = el("div", "msg assistant");
  root.dataset.testid = "assistant";
  root.dataset.state = "streaming";
  const reasoning = el("details", "reasoning");
  reasoning.dataset.testid = "reasoning";
  reasoning.open = true;
  reasoning.hidden = true;
  reasoning.append(el("summary", "", "Reasoning"));
  const thought = reasoning.appendChild(el("div", "reasoning-text"));
  const tools = el("div", "tools");
  const text = el("div", "text");
  text.dataset.testid = "assistant-text";
  const footer = el("div", "footer", provider ? `${provider} · streaming…` : "streaming…");
  footer.dataset.testid = "run-status";
  root.append(reasoning, tools, text, footer);
  log.append(root);
  return {
    root, reasoning, tools, footer, provider, done: false, calls: new Map(),
    text: text.appendChild(document.createTextNode("")),
    thought: thought.appendChild(document.createTextNode("")),
  };
}

function addToolCall(bubble, index, name) {
  const card = el("div", "tool");
  card.dataset.testid = "tool-call";
  card.append(el("span", "tool-name", name));
  const args = card.appendChild(el("code", "tool-args"));
  args.append(document.createTextNode(""));
  bubble.tools.append(card);
  bubble.calls.set(index, args);
  return args;
}

function addNote(bubble, kind, text) {
  const note = el("div", `note ${kind}`, text);
  note.dataset.testid = `note-${kind}`;
  bubble.root.insertBefore(note, bubble.footer);
}

function finishBubble(bubble, reason, detail) {
  if (bubble.done) return;
  bubble.done = true;
  bubble.root.dataset.state = { cancelled: "cancelled", error: "error" }[reason] || "done";
  bubble.root.dataset.finish = reason;
  bubble.footer.textContent = [bubble.provider, reason, detail].filter(Boolean).join(" · ");
}

function metrics(event, usage) {
  const m = event.metrics || {};
  return [
    usage && `${usage.output_tokens} tokens`,
    m.ttft_ms != null && `TTFT ${Math.round(m.ttft_ms)} ms`,
    m.total_ms != null && `${(m.total_ms / 1000).toFixed(2)} s`,
    m.tokens_per_s && `${m.tokens_per_s} tok/s`,
  ].filter(Boolean).join(" · ");
}

function textOf(content) {
  if (typeof content === "string") return content;
  return (content || []).map((part) => part.text || `[${part.type}]`).join(" ");
}

const STORED_STATE = { cancelled: "cancelled", interrupted: "cancelled", failed: "error" };

function renderStored(log, message, run) {
  if (message.role === "user") return addUser(log, textOf(message.content));
  if (message.role !== "assistant") return log.append(el("div", "msg note", `${message.role}: ${textOf(message.content)}`));
  const bubble = addAssistant(log, run?.provider);
  bubble.text.appendData(textOf(message.content));
  for (const [index, call] of (message.tool_calls || []).entries()) {
    addToolCall(bubble, index, call.function.name).firstChild.appendData(call.function.arguments);
  }
  bubble.done = true;
  bubble.root.dataset.state = STORED_STATE[run?.status] || "stored";
  bubble.footer.textContent = run ? [run.provider, run.status === "completed" ? run.finish_reason : run.status].join(" · ") : "";
}

// ---- sending, streaming, cancelling

async function send(text) {
  const providers = selected();
  if (!providers.length) return notice("Pick at least one provider");
  let options;
  try { options = providerOptions(); } catch (error) { return notice(error.message); }
  notice("");
  const compare = providers.length > 1;
  const view = state.view;
  if (compare !== view.compare || (compare && providers.join() !== [...view.columns.keys()].join())) {
    openView(compare ? `cmp_${crypto.randomUUID().slice(0, 8)}` : null, compare, providers, true);
  }
  const model = $("model").value.trim();
  if (model) options.model = model;
  if (state.view.sessionId) options.session_id = state.view.sessionId;
  const data = { messages: [{ role: "user", content: text }], options };
  if (compare) Object.assign(data, { provider_ids: providers, generator_mode: "interleaved" });
  else Object.assign(data, { provider_id: providers[0], generator_mode: $("mode").value });
  const run = { id: `r${++state.counter}`, bubbles: new Map(), text };
  for (const [provider, column] of state.view.columns) {
    addUser(column.log, text);
    run.bubbles.set(provider, addAssistant(column.log, provider || providers[0]));
  }
  state.run = run;
  setBusy(true);
  try {
    const ws = await connect();
    ws.send(JSON.stringify({ message_type: "chat_request", request_id: run.id, data }));
  } catch (error) {
    failRun(error.message);
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("cancel").disabled = !busy;
}

function onMessage(message) {
  const run = state.run;
  if (!run || message.request_id !== run.id) {
    if (message.message_type === "error" && !message.request_id) notice(message.data.message);
    return;
  }
  const data = message.data;
  if (message.message_type === "ack" && data.status === "started" && !state.view.compare && !state.view.sessionId) {
    state.view.sessionId = data.session_id;
    state.view.columns.get(null).sessionId = data.session_id;
    showSession();
  } else if (message.message_type === "error") {
    failRun(`${data.type}: ${data.message}`);
  } else if (message.message_type === "stream_event") {
    onEvent(run, data.event_type, data.event_data);
  }
}

function targets(run, event) {
  if (run.bubbles.size === 1) return [...run.bubbles.values()];
  if (run.bubbles.has(event.provider)) return [run.bubbles.get(event.provider)];
  return [...run.bubbles.values()].filter((bubble) => !bubble.done); // a cancel ends every column
}

function onEvent(run, type, event) {
  for (const bubble of targets(run, event)) {
    if (type === "text-delta") bubble.text.appendData(event.content);
    else if (type === "reasoning-delta") {
      bubble.reasoning.hidden = false;
      bubble.thought.appendData(event.content);
    } else if (type === "tool-call-start") addToolCall(bubble, event.index, event.name);
    else if (type === "tool-call-delta") bubble.calls.get(event.index)?.firstChild.appendData(event.arguments_delta);
    else if (type === "tool-call-end") {
      const args = bubble.calls.get(event.index) || addToolCall(bubble, event.index, event.name);
      args.textContent = event.arguments;
    } else if (type === "usage") bubble.usage = event;
    else if (type === "status") bubble.footer.textContent = `${bubble.provider} · ${event.status}${event.message ? `: ${event.message}` : ""}`;
    else if (type === "warning") addNote(bubble, "warning", event.message);
    else if (type === "citation") addNote(bubble, "citation", `source: ${event.title || event.url || event.cited_text}`);
    else if (type === "error") {
      addNote(bubble, "error", `${event.error_type}: ${event.message}`);
      finishBubble(bubble, "error", "");
    } else if (type === "finish") finishBubble(bubble, event.reason, metrics(event, bubble.usage));
  }
  for (const { log } of state.view.columns.values()) log.scrollTop = log.scrollHeight;
  if ([...run.bubbles.values()].every((bubble) => bubble.done)) endRun(run);
}

function failRun(message) {
  const run = state.run;
  if (!run) return;
  for (const bubble of run.bubbles.values()) {
    if (!bubble.done) { addNote(bubble, "error", message); finishBubble(bubble, "error", ""); }
  }
  endRun(run);
}

async function endRun(run) {
  if (state.run !== run) return;
  state.run = null;
  setBusy(false);
  const view = state.view;
  if (view.fresh) {
    view.fresh = false;
    const name = run.text.replace(/\s+/g, " ").slice(0, 60);
    const patches = [...view.columns.values()].filter((c) => c.sessionId).map((column) =>
      api(`/api/sessions/${encodeURIComponent(column.sessionId)}`, {
        method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }),
      }));
    await Promise.allSettled(patches);
  }
  await loadSessions().catch((error) => notice(error.message));
}

function cancel() {
  const run = state.run;
  if (!run || state.ws?.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify({ message_type: "cancel", request_id: run.id, data: { request_id: run.id } }));
  for (const bubble of run.bubbles.values()) if (!bubble.done) bubble.footer.textContent = `${bubble.provider} · cancelling…`;
}

// ---- sessions sidebar

async function loadSessions() {
  const { data } = await api("/api/sessions?limit=50");
  const groups = new Map(); // a comparison stores one session per provider: cmp_<id>.<provider>
  for (const session of data) {
    const match = /^(cmp_[A-Za-z0-9]+)\.(.+)$/.exec(session.session_id);
    const id = match ? match[1] : session.session_id;
    if (!groups.has(id)) groups.set(id, { id, name: session.name, created: session.created_at, providers: [] });
    if (match) groups.get(id).providers.unshift(match[2]);
  }
  const list = $("sessions");
  list.replaceChildren();
  for (const group of groups.values()) {
    const item = el("li", "session");
    item.dataset.testid = "session-item";
    item.dataset.sessionId = group.id;
    const when = new Date(group.created * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    const what = group.providers.length ? `compare · ${group.providers.join(", ")}` : group.id;
    item.append(el("span", "title", group.name || "Untitled"), el("span", "sub", `${what} · ${when}`));
    item.onclick = () => reopen(group).catch((error) => notice(error.message));
    list.append(item);
  }
  if (state.view) showSession();
}

async function reopen(group) {
  if (state.run) return notice("Cancel or finish the reply in flight before switching sessions");
  notice("");
  const compare = group.providers.length > 0;
  openView(group.id, compare, group.providers, false);
  let last;
  for (const column of state.view.columns.values()) {
    const path = `/api/sessions/${encodeURIComponent(column.sessionId)}`;
    const [{ messages }, { runs }] = await Promise.all([api(`${path}/messages`), api(`${path}/runs`)]);
    const byId = new Map(runs.map((run) => [run.run_id, run]));
    for (const message of messages) renderStored(column.log, message, byId.get(message.run_id));
    last = runs.at(-1);
  }
  if (compare) return setSelected(group.providers);
  const usable = [...$("providers").querySelectorAll("input:not(:disabled)")].map((input) => input.value);
  if (last && usable.includes(last.provider)) setSelected([last.provider]);
  else if (selected().length > 1) setSelected(selected().slice(0, 1));
}

// ---- wiring

function switchUser(user) {
  state.user = user || "playground";
  localStorage.setItem("relay.user", state.user);
  if (state.run) failRun("Switched user");
  const old = state.ws;
  state.ws = null;
  old?.close();
  openView(null, false, [], true);
  connect().catch((error) => notice(error.message));
  loadSessions().catch((error) => notice(error.message));
}

function start() {
  $("user-id").value = state.user;
  $("user-id").addEventListener("change", (event) => switchUser(event.target.value.trim()));
  $("providers").addEventListener("change", syncMode);
  $("new-chat").addEventListener("click", () => { if (!state.run) openView(null, false, [], true); });
  $("cancel").addEventListener("click", cancel);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || state.run) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
  });
  loadProviders().catch((error) => notice(`Could not list providers: ${error.message}`));
  switchUser(state.user);
}

start();
