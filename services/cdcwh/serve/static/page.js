// The live page: three semantic queries subscribed over graphql-ws (the graphql-transport-ws subprotocol),
// redrawn whenever the server pushes a new answer (after a mart they read gets a new version).
// The token comes from the URL fragment (#token=...), never sent in a URL to the server, or from the form.
"use strict";

const QUERY = "subscription($q: SemanticQueryInput!) { semantic(query: $q) { columns rows } }";
const utcToday = () => new Date().toISOString().slice(0, 10);
const SUBSCRIPTIONS = {
  // a function: the day (UTC) is taken at each subscribe, and again after midnight (see followToday)
  today: () => {
    const day = utcToday();
    document.body.dataset.today = day; // the day the page shows, for whoever reads it (the tests)
    return {
      measures: ["daily_revenue.revenue", "daily_revenue.orders"],
      filters: [{ member: "daily_revenue.order_date", op: "EQUALS", values: [day] }],
    };
  },
  total: { measures: ["daily_revenue.revenue"] },
  statuses: { measures: ["orders.orders"], dimensions: [{ member: "orders.status" }] },
  byDay: {
    measures: ["daily_revenue.revenue"],
    dimensions: [{ member: "daily_revenue.order_date", granularity: "DAY" }],
    order: [{ member: "daily_revenue.order_date", descending: true }],
    limit: 180,
  },
};
const $ = (id) => document.getElementById(id);
const money = (text) => (text === null || text === undefined ? "0.00" : Number(text).toFixed(2));
let chart = null;

const render = {
  today(result) {
    const row = result.rows[0] || [null, null];
    $("today-revenue").textContent = money(row[0]);
    $("today-orders").textContent = String(row[1] ?? 0);
  },
  total(result) {
    $("total-revenue").textContent = money((result.rows[0] || [null])[0]);
  },
  statuses(result) {
    const body = $("status-table").tBodies[0];
    body.replaceChildren(
      ...result.rows.map(([status, orders]) => {
        const tr = document.createElement("tr");
        for (const value of [status, orders]) {
          const td = document.createElement("td");
          td.textContent = String(value);
          tr.append(td);
        }
        return tr;
      })
    );
  },
  byDay(result) {
    const rows = [...result.rows].reverse();
    const data = [rows.map((r) => Date.parse(r[0]) / 1000), rows.map((r) => Number(r[1]))];
    if (chart === null) {
      chart = new uPlot(
        { width: 720, height: 260, series: [{}, { label: "revenue", stroke: "#2a6fdb", width: 2 }] },
        data,
        $("chart")
      );
    } else {
      chart.setData(data);
    }
  },
};

function subscribe(ws, id) {
  const query = SUBSCRIPTIONS[id];
  const q = typeof query === "function" ? query() : query;
  ws.send(JSON.stringify({ id, type: "subscribe", payload: { query: QUERY, variables: { q } } }));
}

// at the next midnight UTC, subscribe "today" again for the new day (until the socket closes)
function followToday(ws) {
  const now = new Date();
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  setTimeout(() => {
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ id: "today", type: "complete" }));
    subscribe(ws, "today");
    followToday(ws);
  }, midnight - now.getTime() + 1000);
}

function connect(token) {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql";
  const ws = new WebSocket(url, "graphql-transport-ws");
  $("state").textContent = "connecting";
  ws.onopen = () => ws.send(JSON.stringify({ type: "connection_init", payload: { token } }));
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") {
      $("state").textContent = "live";
      $("state").classList.add("live");
      for (const id of Object.keys(SUBSCRIPTIONS)) {
        subscribe(ws, id);
      }
      followToday(ws);
    } else if (message.type === "next") {
      if (message.payload.errors) {
        $("error").textContent = message.id + ": " + message.payload.errors.map((e) => e.message).join("; ");
        return;
      }
      render[message.id](message.payload.data.semantic);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } else if (message.type === "error") {
      $("error").textContent = message.id + ": " + message.payload.map((e) => e.message).join("; ");
    } else if (message.type === "ping") {
      ws.send(JSON.stringify({ type: "pong" }));
    }
  };
  ws.onclose = (event) => {
    $("state").classList.remove("live");
    if (event.code === 4403) {
      $("state").textContent = "token refused";
      $("token-form").hidden = false;
      return;
    }
    $("state").textContent = "reconnecting";
    setTimeout(() => connect(token), 2000);
  };
}

function start() {
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  const token = fromFragment || sessionStorage.getItem("cdcwh-token");
  if (fromFragment) {
    sessionStorage.setItem("cdcwh-token", fromFragment);
    history.replaceState(null, "", location.pathname); // the token does not stay in the address bar
  }
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("cdcwh-token", $("token-input").value);
    $("token-form").hidden = true;
    connect($("token-input").value);
  });
  if (token) {
    connect(token);
  } else {
    $("token-form").hidden = false;
  }
}

start();
