/*
 * The "Trust this app for payments" step (templates/bill_integration/_mfa_step.html).
 * BILL pays bills only for a session it trusts: a person confirms a code BILL texts to their
 * phone, once every 30 days. Every action is a fetch() to the REST API
 * (GET /connection/, GET mfa/phones/, POST mfa/challenge/, mfa/validate/, mfa/forget/); this
 * script only draws the answers. The typed code is sent once and cleared from the input.
 * The step redraws itself when the page dispatches "bill:connection-changed" on document.
 */
(function () {
  "use strict";

  var section = document.getElementById("bill-mfa");
  var configElement = document.getElementById("bill-mfa-config");
  if (!section || !configElement) { return; }
  var config = JSON.parse(configElement.textContent);
  var labels = config.labels;
  var stateLine = document.getElementById("bill-mfa-state");
  var actions = document.getElementById("bill-mfa-actions");
  var startButton = document.getElementById("bill-mfa-start");
  var forgetButton = document.getElementById("bill-mfa-forget");
  var sendForm = document.getElementById("bill-mfa-send");
  var phonesBox = document.getElementById("bill-mfa-phones");
  var codeForm = document.getElementById("bill-mfa-code");
  var codeInput = document.getElementById("bill-mfa-code-input");
  var messageBox = document.getElementById("bill-mfa-message");
  var challengeId = null;
  var chosenPhone = null;
  var canChange = false;

  function tenant() {
    if (config.tenant) { return config.tenant; }
    var page = document.getElementById("bill-connect-config");  // the Connect page's own config
    try { return page ? JSON.parse(page.textContent).tenant || "" : ""; } catch (e) { return ""; }
  }

  function csrf() {
    var input = section.querySelector("[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function fill(template, values) {
    return template.replace(/%\((\w+)\)s/g, function (_, key) { return values[key]; });
  }

  function say(text, kind) {
    messageBox.textContent = text || "";
    messageBox.hidden = !text;
    messageBox.className = "bill-message" + (kind ? " is-" + kind : "");
  }

  function call(method, url, body) {
    var headers = { "Accept": "application/json", "X-CSRFToken": csrf() };
    if (tenant()) { headers["X-Tenant-ID"] = tenant(); }
    var options = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.json().then(
        function (data) { return { ok: response.ok, status: response.status, data: data }; },
        function () { return { ok: false, status: response.status, data: { message: labels.network } }; }
      );
    }, function () {
      return { ok: false, status: 0, data: { message: labels.network } };
    });
  }

  function showForms(send, code) {
    sendForm.hidden = !send;
    codeForm.hidden = !code;
    actions.hidden = send || code || !canChange;  // one step at a time
  }

  function render(state) {
    // Never while the details must be entered again: that is the person's next step, and BILL
    // could not text a code for a connection it refused (the API then answers mfa: null too).
    var usable = state && state.linked && state.status !== "needs_relink" &&
      state.status !== "disabled";
    var mfa = usable ? state.mfa : null;
    section.hidden = !mfa;
    if (!mfa) { return; }
    stateLine.textContent = mfa.message;
    stateLine.setAttribute("data-state", mfa.state);
    stateLine.className = "bill-mfa-state is-" + mfa.state;
    var trusted = mfa.state === "trusted" || mfa.state === "expiring";
    canChange = state.can_change;
    actions.hidden = !canChange || !sendForm.hidden || !codeForm.hidden;
    startButton.textContent = trusted ? labels.renew : labels.start;
    forgetButton.hidden = !trusted;
    if (!state.can_change) { showForms(false, false); }
  }

  function fail(result) {
    var data = result.data || {};
    say(data.message || labels.network, "error");
    var fields = data.fields || {};
    var error = codeForm.querySelector('[data-error-for="code"]');
    error.textContent = fields.code ? fields.code.join(" ") : "";
  }

  function load() {
    return call("GET", config.connectionUrl).then(function (result) {
      if (result.ok) { render(result.data); } else { section.hidden = true; }
    });
  }

  function phoneChoice(value, text, checked) {
    var label = document.createElement("label");
    var radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "use_backup";
    radio.value = value;
    radio.checked = checked;
    label.appendChild(radio);
    label.appendChild(document.createTextNode(" " + text));
    label.style.display = "block";
    return label;
  }

  function drawPhones(answer) {
    phonesBox.textContent = "";
    var phones = answer.listed ? answer.phones : [];
    if (answer.listed && !phones.length) {
      say(labels.no_phone, "error");
      return false;
    }
    if (!answer.listed) {  // BILL's v2 API lists no phones: primary or backup
      phonesBox.appendChild(phoneChoice("false", labels.primary, true));
      phonesBox.appendChild(phoneChoice("true", labels.backup, false));
      return true;
    }
    var hasPrimary = phones.some(function (p) { return p.primary; });
    phones.forEach(function (phone, index) {
      var text = phone.masked + " " + (phone.primary ? labels.primary_suffix : labels.backup_suffix);
      var checked = phone.primary || (!hasPrimary && index === 0);
      phonesBox.appendChild(phoneChoice(phone.primary ? "false" : "true", text, checked));
    });
    return true;
  }

  startButton.addEventListener("click", function () {
    startButton.disabled = true;
    say("");
    call("GET", config.phonesUrl).then(function (result) {
      startButton.disabled = false;
      if (!result.ok) { fail(result); return; }
      if (drawPhones(result.data)) { showForms(true, false); }
    });
  });

  sendForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var chosen = sendForm.querySelector("input[name=use_backup]:checked");
    var useBackup = chosen ? chosen.value === "true" : false;
    chosenPhone = chosen ? chosen.parentElement.textContent.trim() : labels.sent_phone;
    var button = document.getElementById("bill-mfa-send-button");
    button.disabled = true;
    say(labels.sending);
    call("POST", config.challengeUrl, { use_backup: useBackup }).then(function (result) {
      button.disabled = false;
      if (!result.ok) { fail(result); return; }
      challengeId = result.data.challenge_id;
      showForms(false, true);
      say(fill(labels.sent, { phone: chosenPhone }));
      codeInput.value = "";
      codeInput.focus();
    });
  });

  codeForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var code = codeInput.value.trim();
    if (!/^[0-9]{3}[ -]?[0-9]{3}$/.test(code)) {
      codeForm.querySelector('[data-error-for="code"]').textContent = labels.code_format;
      return;
    }
    var button = document.getElementById("bill-mfa-confirm");
    button.disabled = true;
    say(labels.checking);
    call("POST", config.validateUrl, { challenge_id: challengeId, code: code }).then(function (result) {
      button.disabled = false;
      codeInput.value = "";
      if (!result.ok) { fail(result); return; }
      challengeId = null;
      codeForm.querySelector('[data-error-for="code"]').textContent = "";
      showForms(false, false);
      render(result.data);
      say(labels.trusted_ok, "success");
    });
  });

  document.getElementById("bill-mfa-resend").addEventListener("click", function () {
    showForms(true, false);
    say("");
  });

  forgetButton.addEventListener("click", function () {
    if (!window.confirm(labels.forget_confirm)) { return; }
    forgetButton.disabled = true;
    call("POST", config.forgetUrl).then(function (result) {
      forgetButton.disabled = false;
      if (!result.ok) { fail(result); return; }
      render(result.data);
      say(labels.forgotten, "success");
    });
  });

  // Redraw when the Connect page links, relinks or unlinks (it may dispatch this event), and
  // when its status badge changes (the page as shipped has one).
  document.addEventListener("bill:connection-changed", load);
  var badge = document.getElementById("bill-status-badge");
  if (badge && window.MutationObserver) {
    new MutationObserver(function () { load(); }).observe(badge, { childList: true, characterData: true, subtree: true });
  }

  load();
})();
