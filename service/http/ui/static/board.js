// incidentd board: keeps the response clocks counting between htmx refreshes.
// The server renders every clock; this only re-computes "left"/"overdue" each second
// from data-due (epoch ms), corrected by the server's time at page load (body data-now).
(function () {
  "use strict";
  var serverNow = Number(document.body.dataset.now || 0);
  var skew = serverNow ? serverNow - Date.now() : 0;

  function duration(seconds) {
    var total = Math.floor(Math.abs(seconds));
    var h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
    var mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
  }

  function tick() {
    var now = Date.now() + skew;
    document.querySelectorAll(".clock[data-due]").forEach(function (el) {
      var left = (Number(el.dataset.due) - now) / 1000;
      el.textContent = left >= 0 ? duration(left) + " left" : "overdue " + duration(left);
      el.classList.toggle("overdue", left < 0);
      el.classList.toggle("running", left >= 0);
    });
  }

  tick();
  setInterval(tick, 1000);
  document.body.addEventListener("htmx:afterSwap", tick);
})();
