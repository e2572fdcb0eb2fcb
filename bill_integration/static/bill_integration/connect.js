/*
 * The "Connect your BILL account" page. Every action is a fetch() to the REST API
 * (GET/PUT/DELETE /connection/, POST /connection/refresh/); this script only draws the answers.
 *
 * - Secrets typed into the form are sent once and cleared from the inputs on success.
 * - The status is asked for again every config.pollSeconds (at once when the tab is shown
 *   again), and relative times ("3 minutes ago") are redrawn every config.tickSeconds against
 *   the server's clock (server_time), not the browser's.
 * - Actions are shown only to those the API says may use them (can_change).
 * - After an error, focus moves to the error summary; after connecting, to the status heading.
 * - Every word comes from config.labels (translated by Django); times use the browser's Intl.
 * - "How do you sign in to BILL?" (auth_method) decides which fields are shown and sent
 *   (config.methods, from auth_methods.METHODS); the developer key is not asked where the
 *   service supplies it (config.hostKeys). With an email and password or a sync token, an
 *   empty organization ID asks BILL for the organizations these details open
 *   (POST /connection/organizations/): one is linked at once, several are offered to choose.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("bill-connect-config").textContent);
  var labels = config.labels;
  var csrf = document.getElementById("bill-csrf").value;
  var form = document.getElementById("bill-form");
  var linkedBlock = document.getElementById("bill-linked");
  var messageBox = document.getElementById("bill-message");
  var summary = document.getElementById("bill-error-summary");
  var connectButton = document.getElementById("bill-connect-button");
  var cancelButton = document.getElementById("bill-cancel");
  var refreshButton = document.getElementById("bill-refresh");
  var changeButton = document.getElementById("bill-show-form");
  var disconnectButton = document.getElementById("bill-disconnect");

  var SECRET_FIELDS = ["password", "dev_key", "api_token", "sync_token", "console_token",
    "client_secret"];
  var FIELDS = ["auth_method", "environment", "username", "password", "token_name", "sync_token",
    "console_token", "client_id", "client_secret", "organization_id", "dev_key", "api_token"];
  // Which fields to check when BILL refuses what was typed (by the API's error code).
  var REFUSED_FIELDS = {
    invalid_credentials: ["username", "password", "token_name", "sync_token", "console_token",
      "client_id", "client_secret", "organization_id", "environment"],
    invalid_dev_key: ["dev_key", "organization_id", "environment"],
    invalid_api_token: ["api_token"]
  };
  var choiceField = document.getElementById("bill-organization-choice-field");
  var choice = document.getElementById("bill-organization-choice");

  var current = null;         // the last status document
  var skew = 0;               // server clock minus browser clock, in milliseconds
  var checkedAt = null;       // browser time of the last status answer
  var formOpenedByUser = false;
  var pollTimer = null;
  var busy = false;           // an action is in flight: polls wait

  var language = config.language || document.documentElement.lang || "en";
  // Words for times come from the browser, in the page's language ("3 minutes ago", "in 1 hour").
  var relativeFormat = new Intl.RelativeTimeFormat(language, { numeric: "always" });
  var timeFormat = new Intl.DateTimeFormat(language, { hour: "numeric", minute: "2-digit" });

  function fill(template, values) {
    return template.replace(/%\((\w+)\)s/g, function (_, key) { return values[key]; });
  }

  function byId(id) { return document.getElementById(id); }

  function setText(id, text) {
    var el = byId(id);
    if (el) { el.textContent = text; }  // a project's own template may leave a fact out
  }

  function show(el, visible) { if (el) { el.hidden = !visible; } }

  // --- the sign-in method ---------------------------------------------------------------------

  function method() {
    var chosen = form.elements.auth_method && form.elements.auth_method.value;
    return config.methods[chosen] ? chosen : "user_password";
  }

  function hostKey() {
    return (config.hostKeys || []).indexOf(form.elements.environment.value) !== -1;
  }

  function listable() { return (config.listable || []).indexOf(method()) !== -1; }

  // The fields the chosen method sends (the environment always; the key unless supplied).
  function activeFields() {
    var own = config.methods[method()].fields;
    return FIELDS.filter(function (name) {
      if (name === "dev_key" && hostKey()) { return false; }
      return name === "environment" || name === "auth_method" || own.indexOf(name) !== -1;
    });
  }

  function isActive(name) { return activeFields().indexOf(name) !== -1; }

  // The organization ID may be left empty (BILL lists them) once the rest is given.
  function requiredFields(withOrganization) {
    var required = config.methods[method()].required;
    return FIELDS.filter(function (name) {
      if (name === "organization_id" && listable() && !withOrganization) { return false; }
      return required.indexOf(name) !== -1 && isActive(name);
    });
  }

  function applyMethod() {
    form.querySelectorAll(".bill-field[data-field]").forEach(function (wrapper) {
      wrapper.hidden = !isActive(wrapper.getAttribute("data-field"));
    });
    form.querySelectorAll("fieldset.bill-fieldset").forEach(function (set) {
      set.hidden = !set.querySelector(".bill-field[data-field]:not([hidden])");
    });
    form.querySelectorAll("[data-method-help]").forEach(function (help) {
      help.hidden = help.getAttribute("data-method-help") !== method();
    });
    // The S&E token is optional beside an AP/AR sign-in, and the whole form of the S&E-only one.
    var spendOnly = method() === "spend_token";
    setText("bill-spend-legend", spendOnly ? labels.spend_only : labels.spend_optional);
    setText("bill-api-token-help", spendOnly ? labels.spend_only_help : labels.spend_optional_help);
    // A relink offers the linked organization again: the hint is for a first link.
    show(byId("bill-organization-hint"), listable() && !(current && current.linked));
    if (!listable()) { show(choiceField, false); }
  }

  // --- talking to the API ---------------------------------------------------------------------

  function headers() {
    var h = { "Accept": "application/json", "X-CSRFToken": csrf };
    if (config.tenant) { h["X-Tenant-ID"] = config.tenant; }
    return h;
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

  // --- times ----------------------------------------------------------------------------------

  function serverNow() { return Date.now() + skew; }

  function relative(seconds) {
    // seconds > 0: in the past; < 0: in the future.
    var past = seconds >= 0;
    var abs = Math.abs(seconds);
    if (past && abs < 5) { return labels.just_now; }
    var value, unit;
    if (abs < 90) { value = Math.round(abs); unit = "second"; }
    else if (abs < 5400) { value = Math.round(abs / 60); unit = "minute"; }
    else if (abs < 172800) { value = Math.round(abs / 3600); unit = "hour"; }
    else { value = Math.round(abs / 86400); unit = "day"; }
    return relativeFormat.format(past ? -value : value, unit);
  }

  function since(iso) { return (serverNow() - Date.parse(iso)) / 1000; }

  function clock(iso) {
    return timeFormat.format(new Date(iso));
  }

  function renderTimes() {
    if (!current || !current.linked) { return; }
    var usable = current.status !== "needs_relink" && current.status !== "disabled";
    setText("bill-fact-session", !usable ? labels.no_usable_session
      : current.session_obtained_at
        ? fill(labels.session_age, { age: relative(since(current.session_obtained_at)) })
        : labels.no_session);
    var refreshed = current.last_refresh_at ? relative(since(current.last_refresh_at)) : labels.never;
    // A failed attempt also sets last_refresh_at: say so rather than look like a success.
    var failed = current.last_error && current.status !== "active" &&
      current.last_error.at === current.last_refresh_at;
    setText("bill-fact-refresh", failed ? fill(labels.attempt_failed, { age: refreshed }) : refreshed);
    var retrying = current.next_attempt_at && current.status !== "needs_relink";
    show(byId("bill-fact-next-row"), !!retrying);
    if (retrying) {
      var wait = -since(current.next_attempt_at);
      setText("bill-fact-next", wait > 0
        ? relative(-wait) + " (" + clock(current.next_attempt_at) + ")" : labels.just_now);
    }
    if (checkedAt !== null) {
      setText("bill-checked", fill(labels.checked, {
        age: relative((Date.now() - checkedAt) / 1000), seconds: config.pollSeconds
      }));
    }
  }

  // --- messages and errors --------------------------------------------------------------------

  function say(text, kind) {
    messageBox.textContent = text || "";
    messageBox.className = "bill-message" + (kind ? " is-" + kind : "");
  }

  function fieldLabel(name) {
    var input = form.elements[name];
    var label = input && form.querySelector('label[for="' + input.id + '"]');
    return label ? label.textContent.trim() : name;
  }

  function setFieldError(name, text) {
    var input = form.elements[name];
    var error = form.querySelector('[data-error-for="' + name + '"]');
    if (!input || !error) { return false; }
    var help = input.id + "-help";
    error.textContent = text || "";
    error.hidden = !text;
    error.parentElement.classList.toggle("has-error", !!text);
    if (text) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", error.id + " " + help);
    } else {
      input.removeAttribute("aria-invalid");
      input.setAttribute("aria-describedby", help);
    }
    return true;
  }

  function clearErrors() {
    FIELDS.forEach(function (name) { setFieldError(name, ""); });
    summary.hidden = true;
    byId("bill-error-summary-list").textContent = "";
  }

  function summaryLink(name, text) {
    var input = form.elements[name];
    var item = document.createElement("li");
    var link = document.createElement("a");
    link.href = "#" + input.id;
    link.textContent = text ? fieldLabel(name) + ": " + text : fieldLabel(name);
    link.addEventListener("click", function (event) {
      event.preventDefault();
      input.focus();
    });
    item.appendChild(link);
    return item;
  }

  // Show an error: a summary that says what happened and links to each field to fix.
  function showError(result) {
    var data = result.data || {};
    var list = byId("bill-error-summary-list");
    var fields = data.fields || {};
    var named = [];
    var loose = [];
    clearErrors();
    Object.keys(fields).forEach(function (name) {
      var text = [].concat(fields[name]).join(" ");
      if (setFieldError(name, text)) { named.push(summaryLink(name, text)); }
      else { loose.push(text); }
    });
    var title, text, check = [];
    if (data.code === "validation_error") {
      title = labels.fix_fields;
      text = loose.join(" ");
    } else if (REFUSED_FIELDS[data.code] && !form.hidden) {
      title = labels.bill_refused;
      text = data.message;
      check = REFUSED_FIELDS[data.code].filter(isActive);
    } else {
      title = labels.problem;
      text = data.message || labels.network;
    }
    setText("bill-error-summary-title", title);
    setText("bill-error-summary-text", text || "");
    show(byId("bill-error-summary-text"), !!text);
    named.forEach(function (item) { if (item) { list.appendChild(item); } });
    // BILL does not say which of these was wrong: link them, but mark none as invalid.
    check.forEach(function (name) {
      if (form.elements[name]) { list.appendChild(summaryLink(name, "")); }
    });
    show(byId("bill-error-summary-check"), check.length > 0);
    say("");
    summary.hidden = false;
    summary.focus();
  }

  // --- drawing the state ----------------------------------------------------------------------

  function formIsDirty() {
    return SECRET_FIELDS.some(function (name) { return form.elements[name].value !== ""; });
  }

  // Empty required fields are named before anything is sent.
  function missingFields() {
    var fields = {};
    var empty = function (name) { return !form.elements[name].value.trim(); };
    var others = requiredFields(false).filter(empty);
    requiredFields(others.length > 0).filter(empty).forEach(function (name) {
      fields[name] = [labels["required_" + name]];
    });
    return Object.keys(fields).length ? fields : null;
  }

  function showForm(visible) {
    var required = current && current.linked && current.status === "needs_relink";
    form.hidden = !visible;
    cancelButton.hidden = !(visible && current && current.linked && !required);
    changeButton.hidden = visible;
  }

  // Relinking: the sign-in method, user name (or token name) and organization ID are not
  // secret; offer them again.
  function prefill() {
    if (!current || !current.linked) { return; }
    if (current.auth_method && config.methods[current.auth_method]) {
      form.elements.auth_method.value = current.auth_method;
      applyMethod();
    }
    ["username", "token_name"].forEach(function (name) {
      if (isActive(name) && !form.elements[name].value) {
        form.elements[name].value = current.username || "";
      }
    });
    if (!form.elements.organization_id.value) {
      form.elements.organization_id.value = current.organization_id || "";
    }
  }

  function renderStepper(state) {
    var connected = state.linked && state.status !== "needs_relink";
    var steps = { details: connected ? "done" : "current", connected: connected ? "current" : "" };
    document.querySelectorAll("#bill-stepper [data-step]").forEach(function (item) {
      var step = steps[item.getAttribute("data-step")];
      if (step === undefined) { return; }  // an item another script draws (e.g. MFA)
      item.classList.toggle("is-done", step === "done");
      if (step === "current") { item.setAttribute("aria-current", "step"); }
      else { item.removeAttribute("aria-current"); }
      var note = item.querySelector("[data-step-state]");
      if (note) { note.textContent = step === "done" ? labels.done : step === "current" ? labels.current : ""; }
    });
  }

  function problemText(error) {
    var template = labels["error_" + error.kind];
    if (!template) { return error.message; }
    return fill(template, { time: error.at ? clock(error.at) : labels.unknown_time });
  }

  function renderStatus(state) {
    var badge = byId("bill-status-badge");
    badge.textContent = labels[state.status] || state.status_display;
    badge.className = "bill-badge is-" + state.status;
    setText("bill-fact-organization", state.organization_id || "—");
    setText("bill-fact-username", state.username || "—");
    setText("bill-fact-method", (config.methodLabels || {})[state.auth_method] || "—");
    var environment = config.environments[state.environment] || state.environment || "—";
    setText("bill-fact-environment", fill(labels.environment_version, {
      environment: environment, version: state.api_version || "—"
    }));
    setText("bill-fact-spend", state.has_api_token ? labels.token_stored : labels.no_token);
    var problem = byId("bill-status-problem");
    if (state.last_error) {
      problem.textContent = problemText(state.last_error);
      var serious = state.status === "needs_relink" || state.status === "disabled";
      problem.className = "bill-problem" + (serious ? " is-serious" : state.status === "active" ? " is-info" : "");
    }
    show(problem, !!state.last_error);
    var usable = state.status !== "needs_relink" && state.status !== "disabled";
    show(byId("bill-status-actions"), state.can_change);
    show(refreshButton, usable);
    show(byId("bill-read-only"), !state.can_change);
    renderTimes();
  }

  function render(state) {
    var wasLinked = current && current.linked;
    current = state;
    show(byId("bill-loading"), false);
    show(byId("bill-no-access"), false);
    show(byId("bill-stepper"), state.linked || state.can_change);
    renderStepper(state);
    show(linkedBlock, state.linked);
    show(byId("bill-read-only-empty"), !state.linked && !state.can_change);
    if (state.linked) {
      renderStatus(state);
      if (!wasLinked && state.environment) {
        form.elements.environment.value = state.environment;
        applyMethod();
      }
      // A relink replaces every credential: say so where the stored token would be lost.
      form.elements.api_token.placeholder = state.has_api_token ? labels.token_reenter : "";
    } else {
      formOpenedByUser = false;
    }
    var needed = state.can_change && (!state.linked || state.status === "needs_relink");
    var opened = state.can_change && state.linked && formOpenedByUser;
    var typing = !form.hidden && formIsDirty() && state.can_change;
    if (needed && state.linked && form.hidden) { prefill(); }
    applyMethod();
    showForm(needed || opened || typing);
  }

  function renderNoAccess() {
    current = null;
    show(byId("bill-loading"), false);
    show(byId("bill-stepper"), false);
    show(linkedBlock, false);
    show(byId("bill-read-only-empty"), false);
    showForm(false);
    show(byId("bill-no-access"), true);
  }

  function received(result) {
    if (result.ok && result.data) {
      if (result.data.server_time) { skew = Date.parse(result.data.server_time) - Date.now(); }
      checkedAt = Date.now();
    }
    return result;
  }

  // --- loading and polling --------------------------------------------------------------------

  // polled: a check in the background; it never moves the focus, and a failed one keeps
  // what is shown (the "Status checked … ago" line then shows how old it is).
  function load(polled) {
    return call("GET", config.connectionUrl).then(received).then(function (result) {
      if (result.ok) {
        var before = current && current.status;
        render(result.data);
        if (polled && before && before !== result.data.status) {
          say(fill(labels.status_changed, { status: labels[result.data.status] || result.data.status_display }));
        }
        return;
      }
      if (result.status === 404) { renderNoAccess(); return; }
      if (!polled) { showError(result); }
    });
  }

  function schedulePoll() {
    window.clearTimeout(pollTimer);
    pollTimer = window.setTimeout(poll, config.pollSeconds * 1000);
  }

  function poll() {
    if (document.hidden || busy) { schedulePoll(); return; }
    load(true).then(schedulePoll, schedulePoll);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !busy) { window.clearTimeout(pollTimer); poll(); }
  });

  // --- actions --------------------------------------------------------------------------------

  function start(button, text) {
    busy = true;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    clearErrors();
    say(text || "");
  }

  function finish(button) {
    busy = false;
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }

  function formBody() {
    var body = { auth_method: method() };
    activeFields().forEach(function (name) {
      var value = form.elements[name].value;
      if (["username", "organization_id", "token_name", "client_id"].indexOf(name) !== -1) {
        value = value.trim();
      }
      if (name !== "api_token" || value) { body[name] = value; }
    });
    return body;
  }

  function offerOrganizations(found) {
    choice.textContent = "";
    var blank = document.createElement("option");
    blank.value = "";
    blank.textContent = "—";
    choice.appendChild(blank);
    found.forEach(function (org) {
      var option = document.createElement("option");
      option.value = org.id;
      option.textContent = org.name ? org.name + " (" + org.id + ")" : org.id;
      choice.appendChild(option);
    });
    show(choiceField, true);
    say(labels.choose_organization);
    choice.focus();
  }

  // No organization ID typed: ask BILL which ones these details open. One: link it at once.
  function findOrganizations(body) {
    var listing = {};
    Object.keys(body).forEach(function (name) {
      if (name !== "organization_id" && name !== "api_token") { listing[name] = body[name]; }
    });
    start(connectButton, labels.finding_organizations);
    call("POST", config.organizationsUrl, listing).then(function (result) {
      finish(connectButton);
      if (!result.ok) { showError(result); return; }
      var found = result.data.organizations || [];
      if (found.length === 1) {
        form.elements.organization_id.value = found[0].id;
        body.organization_id = found[0].id;
        link(body);
      } else if (found.length > 1) {
        offerOrganizations(found);
      } else {
        showError({ status: 400, data: { code: "validation_error",
          fields: { organization_id: [labels.no_organizations] } } });
      }
    });
  }

  choice.addEventListener("change", function () {
    if (choice.value) { form.elements.organization_id.value = choice.value; }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = formBody();
    var missing = missingFields();
    if (missing) {
      showError({ status: 400, data: { code: "validation_error", fields: missing } });
      return;
    }
    if (listable() && !body.organization_id) { findOrganizations(body); return; }
    link(body);
  });

  function link(body) {
    start(connectButton, labels.connecting);
    call("PUT", config.connectionUrl, body).then(received).then(function (result) {
      finish(connectButton);
      if (result.ok) {
        SECRET_FIELDS.forEach(function (name) { form.elements[name].value = ""; });
        formOpenedByUser = false;
        render(result.data);
        showForm(false);
        show(choiceField, false);
        say(labels.linked_ok, "success");
        byId("bill-status-title").focus();
      } else {
        showError(result);
      }
    });
  }

  form.elements.auth_method.addEventListener("change", function () {
    clearErrors();
    applyMethod();
  });
  form.elements.environment.addEventListener("change", applyMethod);

  refreshButton.addEventListener("click", function () {
    start(refreshButton, labels.refreshing);
    call("POST", config.refreshUrl).then(received).then(function (result) {
      finish(refreshButton);
      if (result.ok) { render(result.data); say(labels.refreshed, "success"); }
      else { showError(result); load(true); }  // show what the failure recorded
    });
  });

  disconnectButton.addEventListener("click", function () {
    if (!window.confirm(labels.disconnect_confirm)) { return; }
    start(disconnectButton);
    call("DELETE", config.connectionUrl).then(function (result) {
      finish(disconnectButton);
      if (result.ok) {
        load().then(function () {
          say(labels.disconnected, "success");
          byId("bill-form-title").focus();
        });
      } else {
        showError(result);
      }
    });
  });

  changeButton.addEventListener("click", function () {
    prefill();
    formOpenedByUser = true;
    showForm(true);
    var secret = SECRET_FIELDS.filter(isActive)[0];
    (secret ? form.elements[secret] : form.elements.environment).focus();
  });

  cancelButton.addEventListener("click", function () {
    clearErrors();
    formOpenedByUser = false;
    SECRET_FIELDS.forEach(function (name) { form.elements[name].value = ""; });
    showForm(false);
    changeButton.focus();
  });

  applyMethod();
  window.setInterval(renderTimes, config.tickSeconds * 1000);
  load().then(schedulePoll, schedulePoll);
})();
