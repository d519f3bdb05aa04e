// Progressive enhancement for the signing form: a live "characters left" counter under the
// personal message. The form works the same without it.
(function () {
  "use strict";
  var areas = document.querySelectorAll("textarea[data-counter]");
  Array.prototype.forEach.call(areas, function (area) {
    var out = document.getElementById(area.getAttribute("data-counter"));
    if (!out) { return; }
    var max = parseInt(area.getAttribute("maxlength"), 10) || 2000;
    var label = out.getAttribute("data-label") || "";
    var update = function () {
      var left = max - Array.from(area.value).length;
      out.textContent = left + " " + label;
    };
    out.hidden = false;
    area.addEventListener("input", update);
    update();
  });
})();
