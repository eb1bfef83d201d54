// The upload page: preview the chosen photo and let the shopper mark the dress with a box, drawn
// with a mouse, a finger or a pen (pointer events) or typed into the four fields (keyboards). The
// fields hold the box in pixels of the original photo; they are the form's, so without
// JavaScript the box can still be typed, and without a box the whole photo is searched.
(() => {
  const input = document.getElementById("id_image"), img = document.getElementById("preview");
  const wrap = document.getElementById("preview-wrap"), box = document.getElementById("box");
  const label = document.getElementById("box-label"), clear = document.getElementById("clear-box");
  if (!input || !wrap) return;
  const fields = ["left", "top", "width", "height"].map((n) => document.getElementById("id_box_" + n));
  const noBox = "No box: the whole photo is searched.";
  let start = null, pointer = null;

  // The preview's scale: CSS pixels shown per pixel of the photo.
  const scale = () => [img.width / (img.naturalWidth || 1), img.height / (img.naturalHeight || 1)];
  const values = () => fields.map((f) => (f.value === "" ? NaN : Number(f.value)));
  const describe = (v) => `Box: ${v[2]}×${v[3]} px at (${v[0]}, ${v[1]}).`;

  // Draw the fields' box over the preview (CSSOM writes: the Content-Security-Policy allows them).
  const show = () => {
    const v = values();
    const complete = v.every(Number.isFinite) && v[2] > 0 && v[3] > 0;
    clear.hidden = !v.some(Number.isFinite);
    if (!complete || wrap.hidden || !img.naturalWidth) { box.hidden = true; return complete; }
    const [sx, sy] = scale();
    box.style.left = v[0] * sx + "px"; box.style.top = v[1] * sy + "px";
    box.style.width = v[2] * sx + "px"; box.style.height = v[3] * sy + "px";
    box.hidden = false;
    return complete;
  };
  const announce = () => { const v = values(); label.textContent = show() ? describe(v) : noBox; };
  const setFields = (vals) => { fields.forEach((f, i) => { f.value = vals ? vals[i] : ""; }); announce(); };

  input.addEventListener("change", () => {
    const file = input.files[0];
    setFields(null);
    if (!file) { wrap.hidden = true; return; }
    img.src = URL.createObjectURL(file);
    wrap.hidden = false;
  });
  img.addEventListener("load", show);
  window.addEventListener("resize", show);
  fields.forEach((f) => f.addEventListener("input", announce));

  const point = (e) => {
    const r = img.getBoundingClientRect();
    return [Math.min(Math.max(e.clientX - r.left, 0), r.width), Math.min(Math.max(e.clientY - r.top, 0), r.height)];
  };
  const rect = (p) => [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.abs(p[0] - start[0]), Math.abs(p[1] - start[1])];
  const drawCss = ([x, y, w, h]) => {
    box.style.left = x + "px"; box.style.top = y + "px"; box.style.width = w + "px"; box.style.height = h + "px";
    box.hidden = false;
  };
  wrap.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 && e.pointerType === "mouse") return;
    start = point(e); pointer = e.pointerId;
    wrap.setPointerCapture(e.pointerId);
    e.preventDefault();
  });
  wrap.addEventListener("pointermove", (e) => { if (start && e.pointerId === pointer) drawCss(rect(point(e))); });
  const finish = (e) => {
    if (!start || e.pointerId !== pointer) return;
    const [x, y, w, h] = rect(point(e));
    start = null; pointer = null;
    if (w < 4 || h < 4) { setFields(null); return; }
    // The form takes the box in pixels of the original photo, not of the scaled preview.
    const [sx, sy] = scale();
    setFields([Math.round(x / sx), Math.round(y / sy), Math.round(w / sx), Math.round(h / sy)]);
  };
  wrap.addEventListener("pointerup", finish);
  wrap.addEventListener("pointercancel", (e) => { if (e.pointerId === pointer) { start = null; pointer = null; show(); } });
  clear.addEventListener("click", () => { setFields(null); fields[0].focus(); });
  announce();
})();
