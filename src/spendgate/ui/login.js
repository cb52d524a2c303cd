"use strict";
(function () {
  const failed = new URLSearchParams(window.location.search).get("failed");
  if (!failed) return;
  const box = document.getElementById("login-error");
  box.textContent = failed === "admin_disabled"
    ? "The admin API is disabled on this gateway: set its admin token and restart it."
    : "That token was not accepted. Check it and try again.";
  box.hidden = false;
})();
