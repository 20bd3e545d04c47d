// Draws every <canvas data-chart="ID"> with the Chart.js configuration in <script id="ID" type="application/json">.
(function () {
  "use strict";
  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var source = document.getElementById(canvas.dataset.chart);
    if (!source || typeof Chart === "undefined") {
      return;
    }
    canvas.chart = new Chart(canvas, JSON.parse(source.textContent));
    canvas.dataset.drawn = "true";
  });
})();
