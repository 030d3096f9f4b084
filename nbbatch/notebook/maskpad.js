// The panel's mask pad: the selected picture with a brush over it. White is repainted.
// The mask is drawn at the picture's own size and sent back as a PNG data URL when a stroke ends.
const SIDE = 256;

function render({ model, el }) {
  const pad = document.createElement("canvas");
  pad.width = pad.height = SIDE;
  pad.className = "nbbatch-maskpad-canvas";
  pad.style.cssText = "cursor: crosshair; touch-action: none; border: 1px solid var(--jp-border-color1, #bdbdbd)";
  const view = pad.getContext("2d");
  const mask = document.createElement("canvas");
  const ink = mask.getContext("2d");
  const picture = new Image();
  const clear = document.createElement("button");
  clear.textContent = "Clear mask";
  clear.className = "nbbatch-maskpad-clear jupyter-button";

  function redraw() {
    view.clearRect(0, 0, SIDE, SIDE);
    if (picture.complete && picture.naturalWidth) view.drawImage(picture, 0, 0, SIDE, SIDE);
    view.globalAlpha = 0.6;
    view.globalCompositeOperation = "screen"; // the mask's white lightens the picture, its black leaves it be
    view.drawImage(mask, 0, 0, SIDE, SIDE);
    view.globalCompositeOperation = "source-over";
    view.globalAlpha = 1;
  }
  function reset() {
    mask.width = model.get("width");
    mask.height = model.get("height");
    ink.fillStyle = "black";
    ink.fillRect(0, 0, mask.width, mask.height);
    redraw();
  }
  function load() {
    reset();
    picture.src = model.get("picture") || "";
  }
  let last = null; // the stroke's previous point, in the mask's pixels
  function paint(event) {
    const box = pad.getBoundingClientRect();
    const point = [
      ((event.clientX - box.left) / box.width) * mask.width,
      ((event.clientY - box.top) / box.height) * mask.height,
    ];
    ink.strokeStyle = "white";
    ink.lineCap = "round";
    ink.lineWidth = 2 * (model.get("brush") / SIDE) * mask.width;
    ink.beginPath();
    ink.moveTo(...(last || point));
    ink.lineTo(...point);
    ink.stroke();
    last = point;
    redraw();
  }
  let drawing = false;
  pad.addEventListener("pointerdown", (event) => {
    drawing = true;
    last = null;
    pad.setPointerCapture(event.pointerId);
    paint(event);
  });
  pad.addEventListener("pointermove", (event) => drawing && paint(event));
  pad.addEventListener("pointerup", () => {
    drawing = false;
    model.set("mask", mask.toDataURL("image/png"));
    model.save_changes();
  });
  clear.addEventListener("click", () => {
    reset();
    model.set("mask", "");
    model.save_changes();
  });
  picture.onload = redraw;
  model.on("change:picture", load);
  load();
  el.append(pad, clear);
}

export default { render };
