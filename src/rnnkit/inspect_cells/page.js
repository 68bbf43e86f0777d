(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("cell-data").textContent);
  const text = Array.from(data.text);  // code points, like the spans
  const T = text.length;
  const spans = Array.from(document.getElementById("text").children);
  const layerSel = document.getElementById("layer");
  const cellSel = document.getElementById("cell");
  const foundSel = document.getElementById("found");
  const info = document.getElementById("info");
  const tip = document.getElementById("tip");
  const byLayer = new Map(data.layers.map(function (d) { return [d.layer, d]; }));
  const decoded = new Map();
  let current = null;

  function values(layer) {  // Int8Array (cells x T), each cell's T values contiguous
    if (!decoded.has(layer)) {
      const bin = atob(byLayer.get(layer).q);
      const a = new Int8Array(bin.length);
      for (let i = 0; i < bin.length; i++) a[i] = (bin.charCodeAt(i) << 24) >> 24;
      decoded.set(layer, a);
    }
    return decoded.get(layer);
  }
  function colour(v) {  // blue at -1, white at 0, red at +1
    const t = Math.min(1, Math.abs(v));
    const end = v < 0 ? data.negative : data.positive;
    return "rgb(" + end.map(function (e) { return Math.round(255 + (e - 255) * t); })
      .join(", ") + ")";
  }
  function value(i) {
    return values(current.layer)[current.row * T + i] / data.scale;
  }
  function show(layer, cell) {
    const d = byLayer.get(layer);
    const row = d.cells.indexOf(cell);
    current = {layer: layer, cell: cell, row: row};
    for (let i = 0; i < T; i++) {
      const v = value(i);
      spans[i].style.backgroundColor = colour(v);
      spans[i].style.color = Math.abs(v) > 0.6 ? "#fff" : "";
    }
    layerSel.value = String(layer);
    fillCells(layer);
    cellSel.value = String(cell);
    const found = data.highlights.findIndex(function (h) {
      return h.layer === layer && h.cell === cell;
    });
    foundSel.value = found >= 0 ? String(found) : "";
    info.textContent = "layer " + layer + ", cell " + cell + ": " + data.quantity;
  }
  function option(select, value, label) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    select.appendChild(o);
  }
  function fillCells(layer) {
    if (cellSel.dataset.layer === String(layer)) return;
    cellSel.textContent = "";
    byLayer.get(layer).cells.forEach(function (c) { option(cellSel, String(c), String(c)); });
    cellSel.dataset.layer = String(layer);
  }
  data.layers.forEach(function (d) {
    option(layerSel, String(d.layer), d.layer + " (" + d.cells.length + " cells)");
  });
  option(foundSel, "", "\u2014");
  data.highlights.forEach(function (h, i) {
    const r = (h.r >= 0 ? "+" : "") + h.r.toFixed(2);
    option(foundSel, String(i), h.label + ": layer " + h.layer + " cell " + h.cell +
      " (r = " + r + ")");
  });
  layerSel.addEventListener("change", function () {
    const layer = Number(layerSel.value);
    show(layer, byLayer.get(layer).cells[0]);
  });
  cellSel.addEventListener("change", function () {
    show(current.layer, Number(cellSel.value));
  });
  foundSel.addEventListener("change", function () {
    if (foundSel.value === "") return;
    const h = data.highlights[Number(foundSel.value)];
    show(h.layer, h.cell);
  });
  document.addEventListener("keydown", function (ev) {  // j / k: the next / previous cell
    if (ev.target.tagName === "SELECT" || (ev.key !== "j" && ev.key !== "k")) return;
    const cells = byLayer.get(current.layer).cells;
    const row = Math.min(cells.length - 1, Math.max(0, current.row + (ev.key === "j" ? 1 : -1)));
    show(current.layer, cells[row]);
  });

  function visible(ch) {
    return {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5"}[ch] || ch;
  }
  function cellText(tr, s, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = s;
    tr.appendChild(td);
    return td;
  }
  const index = new Map(spans.map(function (s, i) { return [s, i]; }));
  document.getElementById("text").addEventListener("mousemove", function (ev) {
    const i = index.get(ev.target);
    if (i === undefined) { tip.style.display = "none"; return; }
    const v = value(i);
    tip.textContent = "";
    const head = document.createElement("div");
    head.textContent = "after \u201c" + visible(text[i]) + "\u201d (character " + i +
      "): " + data.quantity + " = " + (v >= 0 ? "+" : "") + v.toFixed(2);
    tip.appendChild(head);
    if (data.pred_chars) {
      const table = document.createElement("table");
      const next = i + 1 < T ? text[i + 1] : null;
      Array.from(data.pred_chars[i]).forEach(function (ch, k) {
        const p = data.pred_probs[i][k];
        const tr = document.createElement("tr");
        if (ch === next) tr.className = "actual";
        cellText(tr, visible(ch));
        cellText(tr, (100 * p).toFixed(1) + "%");
        const bar = document.createElement("div");
        bar.style.width = Math.round(80 * p) + "px";
        cellText(tr, "", "bar").appendChild(bar);
        table.appendChild(tr);
      });
      tip.appendChild(table);
    }
    tip.style.display = "block";
    const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    const y = ev.clientY + 18 + tip.offsetHeight > window.innerHeight
      ? ev.clientY - tip.offsetHeight - 10 : ev.clientY + 18;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  });
  document.getElementById("text").addEventListener("mouseleave", function () {
    tip.style.display = "none";
  });

  show(data.initial.layer, data.initial.cell);
  document.body.dataset.ready = "1";  // for tests: the script ran to the end
})();
