// Sortable tables: a header's button sorts its column (numbers by the cell's data-value,
// text by locale; blank cells last either way), a second click reverses. No dependencies.
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  heads.forEach(function (th, col) {
    th.querySelector("button").addEventListener("click", function () {
      var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
      var sign = dir === "ascending" ? 1 : -1;
      var numeric = th.dataset.type === "number";
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir);
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        if (numeric) {
          var u = x.dataset.value, v = y.dataset.value;
          if (u === undefined || v === undefined) {
            return (u === undefined) - (v === undefined);
          }
          return sign * (parseFloat(u) - parseFloat(v));
        }
        var p = x.hasAttribute("data-blank"), q = y.hasAttribute("data-blank");
        if (p || q) {
          return p - q;
        }
        return sign * x.textContent.trim().localeCompare(y.textContent.trim(), undefined,
                                                         {numeric: true});
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
