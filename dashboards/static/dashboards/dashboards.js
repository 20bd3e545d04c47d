// Draws every <canvas data-chart="ID"> with the Chart.js configuration in <script id="ID" type="application/json">.
(function () {
  "use strict";
  function timeTicks(config) {
    var x = config.options && config.options.scales && config.options.scales.x;
    if (x && x.ticks && x.ticks.callback === "time") {
      x.ticks.callback = function (value) {
        var at = new Date(value);
        return at.toISOString().slice(11, 16) + "Z";
      };
    }
  }
  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var source = document.getElementById(canvas.dataset.chart);
    if (!source || typeof Chart === "undefined") {
      return;
    }
    var config = JSON.parse(source.textContent);
    timeTicks(config);
    canvas.chart = new Chart(canvas, config);
    canvas.dataset.drawn = "true";
  });
})();
