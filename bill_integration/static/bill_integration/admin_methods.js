/*
 * The admin's link form (admin_forms.py): show only the inputs of the chosen sign-in method.
 * The select #id_auth_method carries, in data-bill-methods, each method's inputs and the
 * environments whose developer key the service supplies (that input is then not asked for).
 * Hidden inputs are ignored by the form, so nothing typed there is sent to BILL.
 */
(function () {
  "use strict";

  function rowOf(name) { return document.querySelector(".form-row.field-" + name); }

  function show(row, visible) { if (row) { row.style.display = visible ? "" : "none"; } }

  function init() {
    var select = document.getElementById("id_auth_method");
    if (!select || !select.getAttribute("data-bill-methods")) { return; }
    var config = JSON.parse(select.getAttribute("data-bill-methods"));
    var environment = document.getElementById("id_environment");

    function apply() {
      var own = config.methods[select.value] || [];
      var supplied = !!environment && !config.tenantKeys &&
        config.hostKeys.indexOf(environment.value) !== -1;
      config.inputs.forEach(function (name) {
        show(rowOf(name), own.indexOf(name) !== -1 && !(name === "dev_key" && supplied));
      });
      show(rowOf("clear_api_token"), own.indexOf("api_token") !== -1);
    }

    select.addEventListener("change", apply);
    if (environment) { environment.addEventListener("change", apply); }
    apply();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
