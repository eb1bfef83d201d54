// The upload page: preview the chosen photo and let the shopper draw a box around the dress
// with a mouse, a finger or a pen (pointer events). The box goes to the form in pixels of the
// original photo; without a box (or without JavaScript) the whole photo is searched.
(() => {
  const input = document.getElementById("id_image"), img = document.getElementById("preview");
  const wrap = document.getElementById("preview-wrap"), box = document.getElementById("box");
  const label = document.getElementById("box-label"), clear = document.getElementById("clear-box");
  if (!input || !wrap) return;
  const fields = ["left", "top", "width", "height"].map((n) => document.getElementById("id_box_" + n));
  const noBox = "No box: the whole photo is searched.";
  let start = null, pointer = null;
  // "Clear box" is offered only while there is a box to clear.
  const setFields = (vals) => { fields.forEach((f, i) => { f.value = vals ? vals[i] : ""; }); clear.hidden = !vals; };
  const reset = () => { setFields(null); box.hidden = true; label.textContent = noBox; };
  input.addEventListener("change", () => {
    const file = input.files[0];
    reset();
    if (!file) { wrap.hidden = true; return; }
    img.src = URL.createObjectURL(file);
    wrap.hidden = false;
  });
  const point = (e) => {
    const r = img.getBoundingClientRect();
    return [Math.min(Math.max(e.clientX - r.left, 0), r.width), Math.min(Math.max(e.clientY - r.top, 0), r.height)];
  };
  const rect = (p) => [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.abs(p[0] - start[0]), Math.abs(p[1] - start[1])];
  const draw = ([x, y, w, h]) => {
    // CSSOM writes, not a style attribute: the Content-Security-Policy allows these.
    box.style.left = x + "px"; box.style.top = y + "px"; box.style.width = w + "px"; box.style.height = h + "px";
    box.hidden = false;
  };
  wrap.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 && e.pointerType === "mouse") return;
    start = point(e); pointer = e.pointerId;
    wrap.setPointerCapture(e.pointerId);
    e.preventDefault();
  });
  wrap.addEventListener("pointermove", (e) => { if (start && e.pointerId === pointer) draw(rect(point(e))); });
  const finish = (e) => {
    if (!start || e.pointerId !== pointer) return;
    const [x, y, w, h] = rect(point(e));
    start = null; pointer = null;
    if (w < 4 || h < 4) { reset(); return; }
    // The form takes the box in pixels of the original photo, not of the scaled preview.
    const sx = img.naturalWidth / img.width, sy = img.naturalHeight / img.height;
    const vals = [Math.round(x * sx), Math.round(y * sy), Math.round(w * sx), Math.round(h * sy)];
    setFields(vals);
    label.textContent = `Box: ${vals[2]}×${vals[3]} px at (${vals[0]}, ${vals[1]}).`;
  };
  wrap.addEventListener("pointerup", finish);
  wrap.addEventListener("pointercancel", (e) => { if (e.pointerId === pointer) { start = null; pointer = null; reset(); } });
  clear.addEventListener("click", (e) => { e.preventDefault(); reset(); });
})();
