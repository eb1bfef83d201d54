// Ask the server to answer as soon as the search is over (it holds the request up to
// SEARCH_WAIT_SECONDS, and then sends the results page along), then swap the outcome in.
// Without JavaScript the page's <noscript> refresh reloads it instead. The server ends every
// search (done, or failed past SEARCH_TIMEOUT_SECONDS), so this loop always ends too.
(() => {
  const notice = document.getElementById("search-pending");
  if (!notice) return;
  const url = notice.dataset.waitUrl;
  const searching = notice.textContent;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const show = (html) => {
    try {
      const page = new DOMParser().parseFromString(html, "text/html");
      const outcome = page.getElementById("search-outcome"), photo = page.getElementById("search-photo");
      if (!outcome || outcome.querySelector("#search-pending")) throw new Error("no outcome");
      // The notice is the live region: it announces the outcome's first line, stays for screen
      // readers only, and the outcome (the same markup a reload would show) follows it.
      notice.textContent = outcome.firstElementChild.textContent;
      notice.removeAttribute("class");
      notice.classList.add("visually-hidden");
      notice.after(...Array.from(outcome.children));  // a copy: moving them empties `children`
      // The photo (the worker's clean copy) and the searched box arrive with the outcome.
      const shown = document.getElementById("search-photo");
      if (photo && shown) shown.replaceWith(photo);
    } catch (error) {
      location.reload();
    }
  };
  const wait = async () => {
    let backoff = 500;
    for (;;) {
      const asked = performance.now();
      try {
        const response = await fetch(url, {cache: "no-store", headers: {Accept: "application/json"}});
        if (response.status === 404) return location.reload();  // the search is gone: the page says so
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const {status, page} = await response.json();
        if (status !== "pending") return show(page || "");
        backoff = 500;
        if (notice.textContent !== searching) notice.textContent = searching;
        // A server that answers "pending" at once must not make this a tight loop.
        await sleep(Math.max(0, 1000 - (performance.now() - asked)));
      } catch (error) {
        notice.textContent = "Searching the catalogue… (lost the connection to the shop; trying again)";
        await sleep(backoff + Math.random() * backoff / 2);
        backoff = Math.min(backoff * 2, 10000);
      }
    }
  };
  wait();
})();
