/*
 * The "Connect your BILL account" page. Every action is a fetch() to the REST API
 * (GET/PUT/DELETE /connection/, POST /connection/refresh/); this script only draws the answers.
 * Secrets typed into the form are sent once and cleared from the inputs on success.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("bill-connect-config").textContent);
  var labels = config.labels;
  var csrf = document.getElementById("bill-csrf").value;
  var form = document.getElementById("bill-form");
  var statusCard = document.getElementById("bill-status");
  var messageBox = document.getElementById("bill-message");
  var connectButton = document.getElementById("bill-connect-button");
  var cancelButton = document.getElementById("bill-cancel");
  var current = null;

  function fill(template, values) {
    return template.replace(/%\((\w+)\)s/g, function (_, key) { return values[key]; });
  }

  function say(text, kind) {
    messageBox.textContent = text || "";
    messageBox.hidden = !text;
    messageBox.className = "bill-message" + (kind ? " is-" + kind : "");
  }

  function headers(extra) {
    var h = { "Accept": "application/json", "X-CSRFToken": csrf };
    if (config.tenant) { h["X-Tenant-ID"] = config.tenant; }
    return Object.assign(h, extra || {});
  }

  function call(method, url, body) {
    var options = { method: method, headers: headers(), credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      if (response.status === 204) { return { ok: true, status: 204, data: null }; }
      return response.json().then(
        function (data) { return { ok: response.ok, status: response.status, data: data }; },
        function () { return { ok: false, status: response.status, data: { message: labels.network } }; }
      );
    }, function () {
      return { ok: false, status: 0, data: { message: labels.network } };
    });
  }

  function humanAge(seconds) {
    if (seconds < 90) { return fill(labels.seconds, { n: seconds }); }
    if (seconds < 5400) { return fill(labels.minutes, { n: Math.round(seconds / 60) }); }
    if (seconds < 172800) { return fill(labels.hours, { n: Math.round(seconds / 3600) }); }
    return fill(labels.days, { n: Math.round(seconds / 86400) });
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; }  // a project's own template may leave a fact out
  }

  function clearFieldErrors() {
    form.querySelectorAll("[data-error-for]").forEach(function (el) {
      el.textContent = "";
      el.parentElement.classList.remove("has-error");
    });
  }

  function showFieldErrors(fields) {
    Object.keys(fields || {}).forEach(function (name) {
      var el = form.querySelector('[data-error-for="' + name + '"]');
      if (el) {
        el.textContent = fields[name].join(" ");
        el.parentElement.classList.add("has-error");
      }
    });
  }

  function showForm(visible) {
    form.hidden = !visible;
    cancelButton.hidden = !(visible && current && current.linked);
  }

  function render(state) {
    current = state;
    var badge = document.getElementById("bill-status-badge");
    badge.textContent = labels[state.status] || state.status_display;
    badge.className = "bill-badge is-" + state.status;
    statusCard.hidden = !state.linked;
    document.getElementById("bill-status-actions").hidden = !state.can_change;
    document.getElementById("bill-read-only").hidden = state.can_change;
    if (state.linked) {
      setText("bill-fact-organization", state.organization_id);
      setText("bill-fact-username", state.username);
      setText("bill-fact-environment", state.environment + " · " + state.api_version);
      setText("bill-fact-session", state.session_age_seconds === null ? labels.no_session
        : fill(labels.session_age, { age: humanAge(state.session_age_seconds) }));
      setText("bill-fact-spend", state.has_api_token ? labels.token_stored : labels.no_token);
      setText("bill-fact-error", state.last_error ? state.last_error.message : labels.none);
      if (state.environment) { document.getElementById("bill-environment").value = state.environment; }
      // A relink replaces every credential: say so where the stored token would be lost.
      form.elements.api_token.placeholder = state.has_api_token ? labels.token_reenter : "";
    }
    showForm(state.can_change && (!state.linked || state.status === "needs_relink"));
    if (!state.linked && !state.can_change) { say(labels.no_access, "error"); }
  }

  function handleError(result) {
    var data = result.data || {};
    if (result.status === 404 && data.code === "not_found") {
      statusCard.hidden = true;
      form.hidden = true;
      say(labels.no_access, "error");
      return;
    }
    say(data.message || labels.network, "error");
    showFieldErrors(data.fields);
  }

  function load() {
    return call("GET", config.connectionUrl).then(function (result) {
      if (result.ok) { render(result.data); } else { handleError(result); }
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearFieldErrors();
    var body = {};
    ["username", "password", "organization_id", "dev_key", "api_token", "environment"].forEach(function (name) {
      var value = form.elements[name].value;
      if (name === "username" || name === "organization_id") { value = value.trim(); }
      if (name !== "api_token" || value) { body[name] = value; }
    });
    connectButton.disabled = true;
    say(labels.connecting);
    call("PUT", config.connectionUrl, body).then(function (result) {
      connectButton.disabled = false;
      if (result.ok) {
        ["password", "dev_key", "api_token"].forEach(function (name) { form.elements[name].value = ""; });
        render(result.data);
        showForm(false);
        say(labels.linked_ok, "success");
      } else {
        handleError(result);
      }
    });
  });

  document.getElementById("bill-refresh").addEventListener("click", function (event) {
    var button = event.target;
    button.disabled = true;
    say(labels.refreshing);
    call("POST", config.refreshUrl).then(function (result) {
      button.disabled = false;
      if (result.ok) { render(result.data); say(labels.refreshed, "success"); }
      else { handleError(result); load(); }
    });
  });

  document.getElementById("bill-disconnect").addEventListener("click", function (event) {
    if (!window.confirm(labels.disconnect_confirm)) { return; }
    var button = event.target;
    button.disabled = true;
    call("DELETE", config.connectionUrl).then(function (result) {
      button.disabled = false;
      if (result.ok) { say(labels.disconnected, "success"); load(); }
      else { handleError(result); }
    });
  });

  document.getElementById("bill-show-form").addEventListener("click", function () {
    if (current) {
      form.elements.username.value = current.username || "";
      form.elements.organization_id.value = current.organization_id || "";
    }
    showForm(true);
    form.elements.password.focus();
  });

  cancelButton.addEventListener("click", function () { clearFieldErrors(); showForm(false); });

  load();
})();
