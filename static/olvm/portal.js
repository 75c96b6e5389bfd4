/* OLVM portal behaviour that is not live updates: filters apply as soon as a select changes. */
(function () {
  "use strict";
  document.querySelectorAll("form.olvm-filters select").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form.requestSubmit) select.form.requestSubmit();
      else select.form.submit();
    });
  });
})();
