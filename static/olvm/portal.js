/* OLVM portal behaviour that is not live updates: filters apply as soon as a select changes;
   the system tree shows the current object's node, and a branch that could not be loaded says
   so and offers a retry. */
(function () {
  "use strict";
  document.querySelectorAll("form.olvm-filters select").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form.requestSubmit) select.form.requestSubmit();
      else select.form.submit();
    });
  });

  var current = document.querySelector(".olvm-tree .olvm-current");
  if (current) current.scrollIntoView({ block: "center" });

  // Tree nodes (details.olvm-lazy) fetch their children with htmx the first time they open.
  function treeLoadFailed(event) {
    var node = event.detail && event.detail.elt;
    if (!node || !node.matches || !node.matches(".olvm-tree details.olvm-lazy")) return;
    var list = node.querySelector(":scope > ul");
    if (!list) return;
    var item = document.createElement("li");
    item.className = "olvm-leaf text-danger small";
    item.textContent = "Could not load. ";
    var retry = document.createElement("a");
    retry.href = "#";
    retry.textContent = "Retry";
    retry.addEventListener("click", function (click) {
      click.preventDefault();
      window.htmx.ajax("GET", node.getAttribute("hx-get"), { source: node, target: list, swap: "innerHTML" });
    });
    item.appendChild(retry);
    list.replaceChildren(item);
  }
  document.body.addEventListener("htmx:responseError", treeLoadFailed);
  document.body.addEventListener("htmx:sendError", treeLoadFailed);
})();
