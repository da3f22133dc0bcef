// The pages' only script (served from this origin; the Content-Security-Policy allows no
// inline code): dialogs with focus moved in and back, the Generate form's checks, copy buttons.
"use strict";

(function () {
  const MIN_DAYS = 1;
  const MAX_DAYS = 365;

  function openDialog(dialog, opener) {
    if (dialog.open) dialog.close();
    dialog.showModal();
    dialog.returnFocusTo = opener || null;
    const first = dialog.querySelector("[aria-invalid=true], input:not([type=hidden]), button");
    if (first) first.focus();
  }

  document.querySelectorAll("dialog").forEach(function (dialog) {
    dialog.addEventListener("close", function () {
      if (dialog.returnFocusTo) dialog.returnFocusTo.focus();
    });
  });

  document.querySelectorAll("[data-opens]").forEach(function (button) {
    button.addEventListener("click", function () {
      openDialog(document.getElementById(button.dataset.opens), button);
    });
  });

  document.querySelectorAll("[data-closes]").forEach(function (button) {
    button.addEventListener("click", function () {
      document.getElementById(button.dataset.closes).close();
    });
  });

  document.querySelectorAll("dialog[data-open]").forEach(function (dialog) {
    openDialog(dialog, document.getElementById("generate-button"));
  });

  // The answer that shows token values replaces its own history entry with the list, so that
  // reloading or coming Back loads /tokens (no values) instead of resubmitting the form.
  document.querySelectorAll("[data-replace-url]").forEach(function (element) {
    history.replaceState(null, "", element.dataset.replaceUrl);
  });

  function showError(input, errorId, message) {
    const error = document.getElementById(errorId);
    error.textContent = message;
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  document.querySelectorAll("form[data-validate-generate]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      const name = form.querySelector("#name");
      const lifetime = form.querySelector("#lifetime");
      const text = lifetime.value.trim();
      const days = Number(text);
      const nameBad = name.value.trim() === "";
      const daysBad = !/^[0-9]+$/.test(text) || days < MIN_DAYS || days > MAX_DAYS;
      showError(name, "name-error", nameBad ? "Enter a name." : "");
      showError(lifetime, "lifetime-error",
        daysBad ? "Enter a whole number of days from 1 to 365." : "");
      if (nameBad || daysBad) {
        event.preventDefault();
        (nameBad ? name : lifetime).focus();
      }
    });
  });

  // 3-dot menus: without the script their items simply show; with it they open on demand.
  document.querySelectorAll("[data-menu]").forEach(function (button) {
    const items = document.getElementById(button.getAttribute("aria-controls"));
    items.hidden = true;
    button.addEventListener("click", function () {
      const open = button.getAttribute("aria-expanded") !== "true";
      button.setAttribute("aria-expanded", String(open));
      items.hidden = !open;
      if (open) items.querySelector("button").focus();
    });
    items.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        button.setAttribute("aria-expanded", "false");
        items.hidden = true;
        button.focus();
      }
    });
  });

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      const value = document.getElementById(button.dataset.copy).textContent;
      const status = document.getElementById("copy-status");
      navigator.clipboard.writeText(value).then(
        function () { if (status) status.textContent = button.textContent.replace("Copy ", "") + " copied."; },
        function () { if (status) status.textContent = "Copying failed: select the value and copy it."; }
      );
    });
  });
})();
