// wildcircuits report: hover details and the circuit-size slider. No network, no innerHTML.
(function () {
  "use strict";
  var dataNode = document.getElementById("wc-data");
  var data = dataNode ? JSON.parse(dataNode.textContent) : {};
  var tooltip = document.getElementById("wc-tooltip");

  function tipTarget(event) {
    var el = event.target;
    return el && el.closest ? el.closest("[data-tip]") : null;
  }
  document.addEventListener("mousemove", function (event) {
    var el = tipTarget(event);
    if (!tooltip) return;
    if (!el) { tooltip.hidden = true; return; }
    tooltip.textContent = el.getAttribute("data-tip");
    tooltip.hidden = false;
    var x = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
    var y = Math.min(event.clientY + 14, window.innerHeight - tooltip.offsetHeight - 8);
    tooltip.style.left = Math.max(x, 4) + "px";
    tooltip.style.top = Math.max(y, 4) + "px";
  });

  var graph = data.graph;
  var slider = document.getElementById("size-slider");
  var svg = document.getElementById("circuit-graph");
  if (!graph || !slider || !svg) return;
  var edges = Array.prototype.slice.call(svg.querySelectorAll(".edge"));
  var nodes = Array.prototype.slice.call(svg.querySelectorAll(".node"));
  var members = edges.map(function (e) {
    return (e.getAttribute("data-sizes") || "").split(" ");
  });
  var edgeCount = document.getElementById("edge-count");
  var nodeCount = document.getElementById("node-count");

  function show(index) {
    var key = String(index);
    var touched = new Set();
    edges.forEach(function (edge, i) {
      var on = members[i].indexOf(key) >= 0;
      edge.classList.toggle("off", !on);
      if (on) {
        touched.add(edge.getAttribute("data-src"));
        touched.add(edge.getAttribute("data-dst"));
      }
    });
    nodes.forEach(function (node) {
      node.classList.toggle("dim", !touched.has(node.getAttribute("data-node")));
    });
    edgeCount.textContent = graph.labels[index];
    nodeCount.textContent = touched.size + " of " + nodes.length + " nodes";
  }
  slider.addEventListener("input", function () { show(Number(slider.value)); });
  show(Number(slider.value));
})();
