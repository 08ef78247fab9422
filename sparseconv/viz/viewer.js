// sparseconv scan viewer: WebGL 1, no libraries, no network. Written for this project.
// Reads the page's <script id="sc-meta"> (JSON) and <script id="sc-data"> (base64 of one
// little-endian blob holding every array) and draws the points, voxels and boxes.
// Camera: orbit (left drag), pan (right or shift drag), zoom (wheel) around a target, z up.
// Picking: on click, the CPU projects every visible point and reports the front-most point
// within a few pixels of the click (coordinates and every attribute).
// Test hook: window.__viewer; with #selftest=I in the URL the page clicks point I itself (in
// its first animation frame) and writes what it read back (and any errors) as JSON into
// <pre id="selftest">.
(function () {
  "use strict";
  var errors = [];
  window.addEventListener("error", function (e) { errors.push(String(e.message || e)); });
  var consoleError = console.error;
  console.error = function () {
    errors.push(Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };

  var meta = JSON.parse(document.getElementById("sc-meta").textContent);
  var blob = (function (text) {
    var bin = atob(text.replace(/\s+/g, "")), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  })(document.getElementById("sc-data").textContent);
  var TYPES = {float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
    int16: Int16Array, uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array};
  function view(a) { return new TYPES[a.dtype](blob, a.offset, a.length); }
  var positions = view(meta.positions);
  var N = meta.shown_points, offset = meta.offset;
  var attrs = {};
  meta.attributes.forEach(function (a) { attrs[a.name] = view(a); });

  // ---------------------------------------------------------------- colours
  var CMAP = meta.colormap;
  function ramp(t, out, k) {
    t = Math.min(Math.max(t, 0), 1) * (CMAP.length - 1);
    var i = Math.min(Math.floor(t), CMAP.length - 2), f = t - i;
    for (var c = 0; c < 3; c++) out[k + c] = Math.round(CMAP[i][c] * (1 - f) + CMAP[i + 1][c] * f);
  }
  function colorsFor(mode) {
    var out = new Uint8Array(N * 3), i, c;
    if (mode.kind === "scalar") {
      var span = mode.hi > mode.lo ? mode.hi - mode.lo : 1;
      for (i = 0; i < N; i++) {
        var v = mode.attr === "z" ? positions[3 * i + 2] + offset[2] : attrs[mode.attr][i];
        if (isFinite(v)) ramp((v - mode.lo) / span, out, 3 * i); else out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = 128;
      }
    } else if (mode.kind === "rgb") {
      out.set(attrs[mode.attr].subarray(0, 3 * N));
    } else if (mode.kind === "label") {
      var a = attrs[mode.attr];
      for (i = 0; i < N; i++) {
        var rgb = mode.table[a[i]] || [128, 128, 128];
        for (c = 0; c < 3; c++) out[3 * i + c] = rgb[c];
      }
    } else if (mode.kind === "error") {
      var t = attrs[mode.truth], p = attrs[mode.prediction];
      for (i = 0; i < N; i++) {
        var col = t[i] < mode.ignore_below ? mode.ignored : (t[i] === p[i] ? mode.right : mode.wrong);
        for (c = 0; c < 3; c++) out[3 * i + c] = col[c];
      }
    }
    return out;
  }

  // ---------------------------------------------------------------- matrices (column-major)
  function perspective(fovy, aspect, near, far) {
    var f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
    return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0];
  }
  function sub(a, b) { return [a[0] - b[0], a[1] - b[1], a[2] - b[2]]; }
  function cross(a, b) { return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]; }
  function norm(a) { var l = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / l, a[1] / l, a[2] / l]; }
  function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
  function lookAt(eye, target, up) {
    var f = norm(sub(target, eye)), s = norm(cross(f, up)), u = cross(s, f);
    return [s[0], u[0], -f[0], 0, s[1], u[1], -f[1], 0, s[2], u[2], -f[2], 0,
      -dot(s, eye), -dot(u, eye), dot(f, eye), 1];
  }
  function mul(a, b) {
    var o = new Array(16);
    for (var c = 0; c < 4; c++) for (var r = 0; r < 4; r++) {
      var s = 0;
      for (var k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k];
      o[c * 4 + r] = s;
    }
    return o;
  }

  // ---------------------------------------------------------------- camera
  var FOVY = 50 * Math.PI / 180;
  var cam = {};
  function fit(top) {
    var s = meta.sphere, half = Math.min(FOVY / 2, Math.atan(Math.tan(FOVY / 2) * aspect()));
    cam.target = s.centre.slice();
    cam.distance = 1.04 * Math.max(s.radius, 1e-3) / Math.sin(half);
    cam.yaw = -60 * Math.PI / 180;
    cam.pitch = (top ? 89.9 : 32) * Math.PI / 180;
  }
  function eye() {
    var cp = Math.cos(cam.pitch);
    return [cam.target[0] + cam.distance * cp * Math.cos(cam.yaw), cam.target[1] + cam.distance * cp * Math.sin(cam.yaw),
      cam.target[2] + cam.distance * Math.sin(cam.pitch)];
  }
  function aspect() { return canvas.clientWidth / Math.max(canvas.clientHeight, 1); }
  function mvp() {  // clip planes hold every point: none is farther than `bound` from the sphere's centre
    var e = eye(), s = meta.sphere;
    var reach = Math.hypot(e[0] - s.centre[0], e[1] - s.centre[1], e[2] - s.centre[2]);
    var far = reach + s.bound * 1.01 + 1e-6, near = Math.max(reach - s.bound * 1.01, far * 1e-5);
    return mul(perspective(FOVY, aspect(), near, far), lookAt(e, cam.target, [0, 0, 1]));
  }
  function focalPx() { return canvas.height / 2 / Math.tan(FOVY / 2); }

  // ---------------------------------------------------------------- WebGL
  var canvas = document.getElementById("sc-canvas");
  var gl = canvas.getContext("webgl", {antialias: false, preserveDrawingBuffer: true});
  if (!gl) {
    document.getElementById("sc-readout").textContent = "This browser has no WebGL; the viewer cannot draw.";
    errors.push("no WebGL");
  }
  function shader(type, src) {
    var s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  }
  function program(vs, fs) {
    var p = gl.createProgram();
    gl.attachShader(p, shader(gl.VERTEX_SHADER, vs));
    gl.attachShader(p, shader(gl.FRAGMENT_SHADER, fs));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
    return p;
  }
  var VS = "attribute vec3 pos; attribute vec3 col; uniform mat4 mvp; uniform float size; uniform float world;" +
    "uniform float focal; varying vec3 v;" +
    "void main(){ gl_Position = mvp * vec4(pos, 1.0); v = col;" +
    " gl_PointSize = world > 0.0 ? max(2.0, world * focal / gl_Position.w) : size; }";
  var FS = "precision mediump float; varying vec3 v; uniform float shape;" +
    "void main(){ if (shape > 2.5) { gl_FragColor = vec4(v, 1.0); return; }" +
    " vec2 d = gl_PointCoord - 0.5; float r = length(d);" +
    " if (shape < 0.5 && r > 0.5) discard;" +
    " if (shape > 1.5 && (r > 0.5 || r < 0.3)) discard;" +
    " float edge = max(abs(d.x), abs(d.y));" +
    " gl_FragColor = vec4(shape > 0.5 && shape < 1.5 && edge > 0.42 ? v * 0.55 : v, 1.0); }";
  var prog, loc = {}, buffers = {};
  function buffer(data) {
    var b = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, b);
    gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
    return b;
  }
  function setupGL() {
    prog = program(VS, FS);
    ["pos", "col"].forEach(function (n) { loc[n] = gl.getAttribLocation(prog, n); });
    ["mvp", "size", "world", "focal", "shape"].forEach(function (n) { loc[n] = gl.getUniformLocation(prog, n); });
    buffers.pos = buffer(positions);
    buffers.col = buffer(new Uint8Array(N * 3));
    if (meta.voxels) {
      buffers.vpos = buffer(view(meta.voxels.centres));
      buffers.vcol = buffer(new Uint8Array(meta.voxels.count * 3));
    }
    if (meta.boxes.length) {
      var lp = [], lc = [], E = [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]];
      meta.boxes.forEach(function (b) {
        E.forEach(function (e) {
          e.forEach(function (k) { lp.push.apply(lp, b.corners[k]); lc.push.apply(lc, b.color); });
        });
      });
      buffers.lpos = buffer(new Float32Array(lp));
      buffers.lcol = buffer(new Uint8Array(lc));
      buffers.lcount = lp.length / 3;
    }
    buffers.mark = gl.createBuffer();
    buffers.markcol = buffer(new Uint8Array([255, 255, 255]));
  }
  function bind(p, c) {
    gl.bindBuffer(gl.ARRAY_BUFFER, p);
    gl.enableVertexAttribArray(loc.pos);
    gl.vertexAttribPointer(loc.pos, 3, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, c);
    gl.enableVertexAttribArray(loc.col);
    gl.vertexAttribPointer(loc.col, 3, gl.UNSIGNED_BYTE, true, 0, 0);
  }

  // ---------------------------------------------------------------- state and drawing
  var ui = {mode: meta.default_mode, size: meta.point_size, points: true, voxels: false, boxes: true, picked: null};
  var pointColors = null;
  function currentMode() { return meta.modes.filter(function (m) { return m.name === ui.mode; })[0]; }
  function recolor() {
    pointColors = colorsFor(currentMode());
    gl.bindBuffer(gl.ARRAY_BUFFER, buffers.col);
    gl.bufferData(gl.ARRAY_BUFFER, pointColors, gl.STATIC_DRAW);
    if (meta.voxels) {
      var rep = view(meta.voxels.representative), vc = new Uint8Array(rep.length * 3);
      for (var i = 0; i < rep.length; i++) for (var c = 0; c < 3; c++) vc[3 * i + c] = pointColors[3 * rep[i] + c];
      gl.bindBuffer(gl.ARRAY_BUFFER, buffers.vcol);
      gl.bufferData(gl.ARRAY_BUFFER, vc, gl.STATIC_DRAW);
    }
    legend();
  }
  function resize() {
    var dpr = window.devicePixelRatio || 1, w = Math.round(canvas.clientWidth * dpr), h = Math.round(canvas.clientHeight * dpr);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  }
  function draw() {
    resize();
    var bg = meta.background;
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(bg[0] / 255, bg[1] / 255, bg[2] / 255, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    gl.useProgram(prog);
    gl.uniformMatrix4fv(loc.mvp, false, new Float32Array(mvp()));
    gl.uniform1f(loc.focal, focalPx());
    var dpr = window.devicePixelRatio || 1;
    if (ui.points) {
      bind(buffers.pos, buffers.col);
      gl.uniform1f(loc.size, ui.size * dpr); gl.uniform1f(loc.world, 0); gl.uniform1f(loc.shape, 0);
      gl.drawArrays(gl.POINTS, 0, N);
    }
    if (ui.voxels && meta.voxels) {
      bind(buffers.vpos, buffers.vcol);
      gl.uniform1f(loc.world, meta.voxels.size); gl.uniform1f(loc.shape, 1);
      gl.drawArrays(gl.POINTS, 0, meta.voxels.count);
    }
    if (ui.boxes && buffers.lpos) {
      bind(buffers.lpos, buffers.lcol);
      gl.uniform1f(loc.world, 0); gl.uniform1f(loc.shape, 3);
      gl.drawArrays(gl.LINES, 0, buffers.lcount);
    }
    if (ui.picked) {
      gl.bindBuffer(gl.ARRAY_BUFFER, buffers.mark);
      gl.bufferData(gl.ARRAY_BUFFER, new Float32Array(ui.picked.local), gl.DYNAMIC_DRAW);
      bind(buffers.mark, buffers.markcol);
      gl.disable(gl.DEPTH_TEST);
      gl.uniform1f(loc.size, (ui.size + 12) * dpr); gl.uniform1f(loc.world, 0); gl.uniform1f(loc.shape, 2);
      gl.drawArrays(gl.POINTS, 0, 1);
    }
    var err = gl.getError();
    if (err !== gl.NO_ERROR) errors.push("WebGL error " + err);
  }
  var pending = false;
  function redraw() {
    if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; draw(); }); }
  }

  // ---------------------------------------------------------------- picking
  function project(local, m) {
    var x = local[0], y = local[1], z = local[2];
    var w = m[3] * x + m[7] * y + m[11] * z + m[15];
    if (w <= 0) return null;
    return [((m[0] * x + m[4] * y + m[8] * z + m[12]) / w + 1) / 2 * canvas.clientWidth,
      (1 - (m[1] * x + m[5] * y + m[9] * z + m[13]) / w) / 2 * canvas.clientHeight, w];
  }
  // The front-most point drawn under the cursor (within its own splat radius `under`);
  // failing that, the point nearest the cursor on screen within `radius` pixels.
  function nearest(px, py, arr, count, under, radius) {
    var m = mvp(), best = -1, bestClass = 2, bestValue = Infinity;
    var W = canvas.clientWidth, H = canvas.clientHeight;
    for (var i = 0; i < count; i++) {  // project() inlined: this loop runs over up to a million points
      var x = arr[3 * i], y = arr[3 * i + 1], z = arr[3 * i + 2];
      var w = m[3] * x + m[7] * y + m[11] * z + m[15];
      if (w <= 0) continue;
      var sx = ((m[0] * x + m[4] * y + m[8] * z + m[12]) / w + 1) / 2 * W - px;
      var sy = (1 - (m[1] * x + m[5] * y + m[9] * z + m[13]) / w) / 2 * H - py;
      var d = Math.sqrt(sx * sx + sy * sy);
      if (d > radius) continue;
      var cls = d <= under(w) ? 0 : 1, value = cls === 0 ? w : d;
      if (cls < bestClass || (cls === bestClass && value < bestValue)) { best = i; bestClass = cls; bestValue = value; }
    }
    return best;
  }
  function fmt(v) { return typeof v === "number" && !Number.isInteger(v) ? +v.toPrecision(7) : v; }
  function record(i) {
    var out = {kind: "point", index: meta.indices ? view(meta.indices)[i] : i,
      x: fmt(positions[3 * i] + offset[0]), y: fmt(positions[3 * i + 1] + offset[1]), z: fmt(positions[3 * i + 2] + offset[2])};
    meta.attributes.forEach(function (a) {
      var arr = attrs[a.name];
      var v = a.components === 1 ? fmt(arr[i]) : Array.prototype.slice.call(arr, a.components * i, a.components * (i + 1)).map(fmt);
      out[a.name] = v;
      if (a.names && a.names[v] !== undefined) out[a.name + "_name"] = a.names[v];
    });
    return out;
  }
  function pick(px, py) {
    var radius = Math.max(8, ui.size / 2 + 4), rec = null, i;
    if (ui.points) {
      i = nearest(px, py, positions, N, function () { return ui.size / 2 + 0.5; }, radius);
      if (i >= 0) rec = record(i);
    } else if (ui.voxels && meta.voxels) {
      var centres = view(meta.voxels.centres);
      var dpr = window.devicePixelRatio || 1;
      i = nearest(px, py, centres, meta.voxels.count,
        function (w) { return meta.voxels.size * focalPx() / w / dpr / 2; }, radius);
      if (i >= 0) {
        var ijk = view(meta.voxels.cells), n = view(meta.voxels.counts);
        rec = {kind: "voxel", x: fmt(centres[3 * i] + offset[0]), y: fmt(centres[3 * i + 1] + offset[1]),
          z: fmt(centres[3 * i + 2] + offset[2]), cell: [ijk[3 * i], ijk[3 * i + 1], ijk[3 * i + 2]], points: n[i]};
      }
    }
    var arr = rec && rec.kind === "voxel" ? view(meta.voxels.centres) : positions;
    ui.picked = rec ? {record: rec, local: [arr[3 * i], arr[3 * i + 1], arr[3 * i + 2]]} : null;
    showReadout(rec);
    draw();
    return rec;
  }
  function showReadout(rec) {
    var el = document.getElementById("sc-readout");
    if (!rec) { el.textContent = "no point within a few pixels of the click"; return; }
    el.textContent = Object.keys(rec).map(function (k) {
      return k + ": " + (Array.isArray(rec[k]) ? rec[k].join(", ") : rec[k]);
    }).join("\n");
  }

  // ---------------------------------------------------------------- controls
  function legend() {
    var m = currentMode(), el = document.getElementById("sc-legend");
    el.innerHTML = "";
    var head = document.createElement("div");
    head.className = "title";
    head.textContent = m.title;
    el.appendChild(head);
    if (m.entries) {
      m.entries.forEach(function (e) {
        var row = document.createElement("div"), sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = "rgb(" + e[1].join(",") + ")";
        row.appendChild(sw);
        row.appendChild(document.createTextNode(e[0]));
        el.appendChild(row);
      });
    } else if (m.kind === "scalar") {
      var bar = document.createElement("div");
      bar.className = "bar";
      bar.style.background = "linear-gradient(to right," + CMAP.map(function (c) { return "rgb(" + c.join(",") + ")"; }).join(",") + ")";
      el.appendChild(bar);
      var ticks = document.createElement("div");
      ticks.className = "ticks";
      ticks.textContent = fmt(m.lo) + " \u2026 " + fmt(m.hi) + (m.unit ? " " + m.unit : "");
      el.appendChild(ticks);
    }
  }
  function setMode(name) { ui.mode = name; document.getElementById("sc-mode").value = name; recolor(); draw(); }
  function setupControls() {
    var sel = document.getElementById("sc-mode");
    meta.modes.forEach(function (m) {
      var o = document.createElement("option");
      o.value = m.name; o.textContent = m.label;
      sel.appendChild(o);
    });
    sel.value = ui.mode;
    sel.onchange = function () { setMode(sel.value); };
    var size = document.getElementById("sc-size");
    size.value = ui.size;
    size.oninput = function () { ui.size = +size.value; redraw(); };
    ["points", "voxels", "boxes"].forEach(function (k) {
      var box = document.getElementById("sc-layer-" + k);
      if (!box) return;
      box.checked = ui[k];
      box.onchange = function () { ui[k] = box.checked; redraw(); };
    });
    document.getElementById("sc-reset").onclick = function () { fit(false); redraw(); };
    document.getElementById("sc-top").onclick = function () { fit(true); redraw(); };
    var drag = null;
    canvas.addEventListener("contextmenu", function (e) { e.preventDefault(); });
    canvas.addEventListener("mousedown", function (e) {
      drag = {x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey, moved: false};
    });
    window.addEventListener("mouseup", function () { setTimeout(function () { drag = null; }, 0); });
    window.addEventListener("mousemove", function (e) {
      if (!drag) return;
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      drag.x = e.clientX; drag.y = e.clientY;
      if (drag.pan) {
        var k = cam.distance * 2 * Math.tan(FOVY / 2) / canvas.clientHeight;
        var f = norm(sub(cam.target, eye())), right = norm(cross(f, [0, 0, 1])), up = cross(right, f);
        for (var c = 0; c < 3; c++) cam.target[c] += k * (-dx * right[c] + dy * up[c]);
      } else {
        cam.yaw -= dx * 0.008;
        cam.pitch = Math.min(Math.max(cam.pitch + dy * 0.008, -1.55), 1.55);
      }
      redraw();
    });
    canvas.addEventListener("wheel", function (e) {
      e.preventDefault();
      cam.distance *= Math.exp(e.deltaY * 0.0015);
      redraw();
    }, {passive: false});
    canvas.addEventListener("click", function (e) {
      if (drag && drag.moved) return;
      var r = canvas.getBoundingClientRect();
      pick(e.clientX - r.left, e.clientY - r.top);
    });
    window.addEventListener("resize", redraw);
  }

  function selftest(index) {
    var out = {errors: errors};
    try {
      var s = project([positions[3 * index], positions[3 * index + 1], positions[3 * index + 2]], mvp());
      var r = canvas.getBoundingClientRect();
      canvas.dispatchEvent(new MouseEvent("click", {clientX: r.left + s[0], clientY: r.top + s[1], bubbles: true}));
      out.clicked = [s[0], s[1]];
      out.picked = ui.picked ? ui.picked.record : null;
      out.readout = document.getElementById("sc-readout").textContent;
      var dpr = window.devicePixelRatio || 1, px = new Uint8Array(4);
      ui.picked = null;
      draw();
      gl.readPixels(Math.floor(s[0] * dpr), canvas.height - 1 - Math.floor(s[1] * dpr), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
      out.pixel = [px[0], px[1], px[2]];
      out.expected = Array.prototype.slice.call(pointColors, 3 * index, 3 * index + 3);
      out.canvas = [canvas.width, canvas.height];
    } catch (e) {
      errors.push(String(e && e.stack || e));
    }
    document.getElementById("selftest").textContent = JSON.stringify(out);
  }

  try {
    if (gl) {
      fit(false);
      setupGL();
      setupControls();
      recolor();
      draw();
    }
  } catch (e) {
    errors.push(String(e && e.stack || e));
    document.getElementById("sc-readout").textContent = "viewer error: " + e;
  }
  window.__viewer = {meta: meta, errors: errors, pick: pick, setMode: setMode, draw: draw, record: record,
    project: function (i) { return project([positions[3 * i], positions[3 * i + 1], positions[3 * i + 2]], mvp()); }};
  var m = /selftest=(\d+)/.exec(location.hash);
  if (m && gl) requestAnimationFrame(function () { draw(); selftest(+m[1]); });  // once the layout has settled
})();
