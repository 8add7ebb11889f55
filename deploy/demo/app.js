// The demo front end: plain fetch calls to the PostgREST API on the same
// origin. The browser sends and stores the HttpOnly session cookie by itself;
// this script never reads or writes it.

const $ = (selector) => document.querySelector(selector);

/** Calls the API; returns { status, body } and never throws on HTTP errors. */
async function api(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const send = () =>
    fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  let response = await send();
  // 429 with Retry-After: 1: the server is busy checking other passwords
  // and says to come back in a second; we do, a few times. (A throttled
  // login also answers 429, with a wait of 15 minutes: that one is shown.)
  for (let attempt = 1; attempt <= 5 && response.status === 429; attempt++) {
    const wait = Number(response.headers.get("Retry-After"));
    if (!(wait <= 1)) break;
    await new Promise((r) => setTimeout(r, wait * 1000));
    response = await send();
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { status: response.status, body: parsed };
}

/** Words for the user, from a failed API answer. */
function explain(action, { status, body }) {
  const detail = body && typeof body === "object" && body.message ? body.message : "";
  if (status === 429 && /at once|in progress/.test(detail)) {
    return "The server is busy. Try again in a moment.";
  }
  if (action === "login" && status === 401) return "Wrong email or password.";
  if (action === "login" && status === 429) {
    return "Too many failed attempts for this email. Wait 15 minutes and try again.";
  }

  if (action === "register" && status === 409) return "An account with this email already exists.";
  if (action === "link" && status === 400) {
    return "This link no longer works: it was used, has expired, or a newer one was sent. Ask for a new one.";
  }
  if (action === "link" && status === 403) return detail || "This link is not for this account.";
  if (action === "link" && status === 401) {
    return "Log in to your account first, then open the link again.";
  }
  if (action === "change-email" && status === 403) return "That is not your current password.";
  if (status === 429 && /mail/.test(detail)) return "Too many messages asked for. Try again later.";
  if (status === 409) return detail || "That conflicts with another account.";
  if (status === 400) return detail || "The server did not accept that input.";
  if (status === 401 || status === 403) return "Your session has ended. Please log in again.";
  return `Something went wrong (${status}${detail ? `: ${detail}` : ""}).`;
}

function showMessage(text, kind = "error") {
  const box = $("#message");
  box.textContent = text;
  box.className = kind === "info" ? "info" : "";
  box.hidden = !text;
}

function showSignedOut() {
  $("#signed-out").hidden = false;
  $("#signed-in").hidden = true;
  $("#whoami").hidden = true;
}

function showSignedIn(user) {
  $("#whoami-name").textContent = user.name;
  $("#whoami-email").textContent = user.email;
  // With email.sql.md, GET /rpc/email_status says whether the address is proven.
  $("#unverified").hidden = true;
  api("GET", "/rpc/email_status").then((status) => {
    $("#unverified").hidden = !(status.status === 200 && status.body.email_verified === false);
  });
  $("#whoami").hidden = false;
  $("#signed-out").hidden = true;
  $("#signed-in").hidden = false;
}

let currentUser = null;

/** Any 401 means the session is gone (logged out elsewhere, revoked, expired). */
function sessionLost() {
  currentUser = null;
  showSignedOut();
  showMessage("Your session has ended. Please log in again.");
}

async function refreshEverything() {
  const me = await api("GET", "/rpc/current_user");
  if (me.status !== 200) {
    // A session this page was showing has ended (another tab logged out,
    // or it was revoked): say so, as a refused request does.
    if (currentUser) return sessionLost();
    showSignedOut();
    return;
  }
  currentUser = me.body;
  showSignedIn(currentUser);
  await Promise.all([loadTodos(), loadSessions()]);
}

async function loadTodos() {
  const [todos, users] = await Promise.all([
    api("GET", "/todos?order=created.desc"),
    api("GET", "/users"),
  ]);
  if (todos.status === 401 || users.status === 401) return sessionLost();
  if (todos.status !== 200) return showMessage(explain("todos", todos));
  const names = new Map((users.body ?? []).map((u) => [u.user_id, u.name]));
  const list = $("#todos");
  list.replaceChildren();
  for (const todo of todos.body) {
    const mine = todo.user_id === currentUser?.user_id;
    const item = document.createElement("li");
    item.dataset.todoId = String(todo.todo_id);
    item.classList.toggle("done", todo.done);

    const done = document.createElement("input");
    done.type = "checkbox";
    done.checked = todo.done;
    done.disabled = !mine;
    done.setAttribute("aria-label", "done");
    done.addEventListener("change", () => updateTodo(todo.todo_id, { done: done.checked }));

    const description = document.createElement("span");
    description.className = "description";
    description.textContent = todo.description;

    item.append(done, description);
    if (todo.public) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "public";
      item.append(badge);
    }
    if (mine) {
      const toggle = document.createElement("button");
      toggle.className = "quiet";
      toggle.type = "button";
      toggle.textContent = todo.public ? "Make private" : "Make public";
      toggle.addEventListener("click", () => updateTodo(todo.todo_id, { public: !todo.public }));
      const remove = document.createElement("button");
      remove.className = "danger";
      remove.type = "button";
      remove.textContent = "Delete";
      remove.addEventListener("click", () => deleteTodo(todo.todo_id));
      item.append(toggle, remove);
    } else {
      const owner = document.createElement("span");
      owner.className = "owner";
      owner.textContent = `by ${names.get(todo.user_id) ?? "someone else"}`;
      item.append(owner);
    }
    list.append(item);
  }
}

async function updateTodo(id, changes) {
  const result = await api("PATCH", `/todos?todo_id=eq.${encodeURIComponent(id)}`, changes);
  if (result.status === 401) return sessionLost();
  if (result.status >= 300) showMessage(explain("todo", result));
  await loadTodos();
}

async function deleteTodo(id) {
  const result = await api("DELETE", `/todos?todo_id=eq.${encodeURIComponent(id)}`);
  if (result.status === 401) return sessionLost();
  if (result.status >= 300) showMessage(explain("todo", result));
  await loadTodos();
}

function formatTime(value) {
  return new Date(value).toLocaleString();
}

async function loadSessions() {
  const sessions = await api("GET", "/session_details?order=created.desc");
  if (sessions.status === 401) return sessionLost();
  if (sessions.status !== 200) return showMessage(explain("sessions", sessions));
  const rows = $("#sessions");
  rows.replaceChildren();
  for (const session of sessions.body) {
    const row = document.createElement("tr");
    row.dataset.sessionId = String(session.session_id);
    const how = session.via && session.via !== "web" ? ` ${session.via}` : "";
    const cells = [
      session.current
        ? `#${session.session_id} (this browser)`
        : `#${session.session_id}${how}${session.client && how ? `: ${session.client}` : ""}`,
      formatTime(session.created),
      formatTime(session.expires),
    ];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    const action = document.createElement("td");
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.className = "danger";
    revoke.textContent = session.current ? "Log out" : "Revoke";
    revoke.addEventListener("click", async () => {
      const result = await api(
        "DELETE",
        `/sessions?session_id=eq.${encodeURIComponent(session.session_id)}`,
      );
      if (result.status === 401) return sessionLost();
      if (result.status >= 300) return showMessage(explain("sessions", result));
      if (session.current) {
        currentUser = null;
        showSignedOut();
        showMessage("You are logged out.", "info");
        return;
      }
      showMessage("Session revoked.", "info");
      await loadSessions();
    });
    action.append(revoke);
    row.append(action);
    rows.append(row);
  }
}

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showMessage("");
  const { email, password } = formValues(event.target);
  const result = await api("POST", "/rpc/login", { email, password });
  if (result.status >= 300) return showMessage(explain("login", result));
  event.target.reset();
  showMessage("");
  await refreshEverything();
});

$("#register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showMessage("");
  const { email, name, password } = formValues(event.target);
  const result = await api("POST", "/rpc/register", { email, name, password });
  if (result.status >= 300) return showMessage(explain("register", result));
  event.target.reset();
  showMessage(
    result.body?.logged_in === false
      ? "Welcome! Follow the link we sent to your address, then log in."
      : "Welcome! Your account is ready.",
    "info",
  );
  await refreshEverything();
});

$("#forgot-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { email } = formValues(event.target);
  const result = await api("POST", "/rpc/request_password_reset", { email });
  if (result.status >= 300) return showMessage(explain("forgot", result));
  showMessage(`Check your mail: ${result.body.message}.`, "info");
});

$("#sign-in-link").addEventListener("click", async () => {
  const form = $("#forgot-form");
  if (!form.reportValidity()) return;
  const result = await api("POST", "/rpc/request_sign_in_link", {
    email: form.elements.email.value,
  });
  if (result.status >= 300) return showMessage(explain("forgot", result));
  showMessage(`Check your mail: ${result.body.message}.`, "info");
});

$("#resend-verification").addEventListener("click", async () => {
  const result = await api("POST", "/rpc/resend_verification", {});
  if (result.status === 401) return sessionLost();
  if (result.status >= 300) return showMessage(explain("resend", result));
  showMessage("A new link is on its way to your address.", "info");
});

$("#change-email-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { new_email, password } = formValues(event.target);
  const result = await api("POST", "/rpc/change_email", { new_email, password });
  if (result.status === 401) return sessionLost();
  if (result.status >= 300) return showMessage(explain("change-email", result));
  event.target.reset();
  showMessage(`${result.body.message}.`, "info");
});

// Links from mail carry their token after "#": the fragment never reaches a
// server log or another site's Referer. It is taken out of the address bar
// at once and posted in a request body.
let resetToken = null;

$("#reset-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { new_password } = formValues(event.target);
  const result = await api("POST", "/rpc/reset_password", { token: resetToken, new_password });
  if (result.status >= 300) return showMessage(explain("link", result));
  resetToken = null;
  event.target.reset();
  event.target.hidden = true;
  showMessage("Your password is set. Every other browser and device was logged out.", "info");
  await refreshEverything();
});

async function followLink() {
  const match = /^#(verify-email|reset-password|confirm-email|sign-in)=([A-Za-z0-9_-]+)$/.exec(
    location.hash,
  );
  if (!match) return;
  history.replaceState(null, "", location.pathname + location.search);
  const [, kind, token] = match;
  if (kind === "reset-password") {
    resetToken = token;
    $("#reset-form").hidden = false;
    showMessage("Choose a new password for your account.", "info");
    return;
  }
  const endpoint = {
    "verify-email": "/rpc/verify_email",
    "confirm-email": "/rpc/confirm_email_change",
    "sign-in": "/rpc/sign_in_with_link",
  }[kind];
  const result = await api("POST", endpoint, { token });
  if (result.status >= 300) return showMessage(explain("link", result));
  showMessage(
    {
      "verify-email": "Your address is verified. Thank you!",
      "confirm-email": `Your account now uses ${result.body.email}.`,
      "sign-in": "You are logged in.",
    }[kind],
    "info",
  );
  await refreshEverything();
}
window.addEventListener("hashchange", followLink);

// Database clients signing in through the browser (device.sql.md): the
// code the client printed is looked up first, so that the person sees what
// asks before letting it in.
let deviceCode = null;

$("#device-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showMessage("");
  const { user_code } = formValues(event.target);
  const result = await api("POST", "/rpc/device_lookup", { user_code });
  if (result.status === 401) return sessionLost();
  if (result.status === 404)
    return showMessage(
      "No sign-in is waiting for this code. Check it, or start again in the terminal.",
    );
  if (result.status === 429) return showMessage("Too many wrong codes. Wait 15 minutes.");
  if (result.status >= 300) return showMessage(explain("device", result));
  deviceCode = user_code;
  $("#device-client").textContent = result.body.client;
  $("#device-request").hidden = false;
});

async function decideDevice(approve) {
  const result = await api("POST", "/rpc/device_decide", { user_code: deviceCode, approve });
  $("#device-request").hidden = true;
  if (result.status === 401) return sessionLost();
  if (result.status === 403)
    return showMessage("Your account has no database access: ask an administrator.");
  if (result.status >= 300) return showMessage(explain("device", result));
  deviceCode = null;
  $("#device-form").reset();
  showMessage(
    approve
      ? `${result.body.client} is signed in as you. End its session below to close its connection.`
      : `${result.body.client} was refused.`,
    "info",
  );
  await loadSessions();
}
$("#device-approve").addEventListener("click", () => decideDevice(true));
$("#device-deny").addEventListener("click", () => decideDevice(false));

// The address a client prints: /demo/#device (with the code after "=" when given).
function showDevice() {
  const match = /^#device(?:=([A-Za-z -]{1,20}))?$/.exec(location.hash);
  if (!match) return;
  if (match[1]) $("#device-form").elements.user_code.value = match[1];
  $("#device-form").scrollIntoView();
  $("#device-form").elements.user_code.focus();
}
window.addEventListener("hashchange", showDevice);

$("#todo-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const description = form.elements.description.value;
  const result = await api("POST", "/todos", { description, public: form.elements.public.checked });
  if (result.status === 401) return sessionLost();
  if (result.status >= 300) return showMessage(explain("todo", result));
  form.reset();
  await loadTodos();
});

$("#logout").addEventListener("click", async () => {
  await api("POST", "/rpc/logout");
  currentUser = null;
  showSignedOut();
  showMessage("You are logged out.", "info");
});

$("#logout-everywhere").addEventListener("click", async () => {
  await api("POST", "/rpc/logout_everywhere");
  currentUser = null;
  showSignedOut();
  showMessage("You are logged out on every device.", "info");
});

// Sliding sessions: reads do not renew the session (PostgREST runs GET in a
// read-only transaction), so while the user is active the page asks for a
// renewal now and then. An idle user is logged out by the idle timeout.
let activeSinceRefresh = false;
for (const type of ["keydown", "pointerdown", "scroll"]) {
  window.addEventListener(type, () => {
    activeSinceRefresh = true;
  });
}
setInterval(
  async () => {
    if (!currentUser || !activeSinceRefresh) return;
    activeSinceRefresh = false;
    const result = await api("POST", "/rpc/refresh_session");
    if (result.status === 401) sessionLost();
  },
  5 * 60 * 1000,
);

// Another tab may log out or revoke this session: check again on focus.
window.addEventListener("focus", () => {
  if (currentUser) refreshEverything();
});

followLink().finally(async () => {
  await refreshEverything();
  showDevice();
});
