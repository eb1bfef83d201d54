// The shop's admin behaviour, kept out of the pages for the Content-Security-Policy.
(() => {
  // Buttons that need a second thought (activating a version the quality gate refused).
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
  });
  // A running training's page reloads itself until the run ends (a <noscript> refresh without JS).
  const live = document.getElementById("live-run");
  if (live) {
    const seconds = Number(live.dataset.refreshSeconds) || 3;
    setTimeout(() => window.location.reload(), seconds * 1000);
  }
})();
