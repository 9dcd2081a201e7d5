// The Vary (Region) mask editor: rectangle, lasso and brush over the image, undo and clear; on submit the shapes are
// drawn white on black at the image's own size and sent as a PNG data URL in the form's "mask" field.
(function () {
  "use strict";
  const canvas = document.getElementById("overlay");
  const form = document.getElementById("region-form");
  const maskField = document.getElementById("mask");
  const sizeInput = document.getElementById("brush-size");
  const context = canvas.getContext("2d");
  const shapes = [];
  let tool = "rect";
  let drawing = null;

  function point(event) {
    // pointer position in the image's own pixels (the canvas is shown scaled)
    const box = canvas.getBoundingClientRect();
    return [
      (event.clientX - box.left) * (canvas.width / box.width),
      (event.clientY - box.top) * (canvas.height / box.height),
    ];
  }

  function brushSize() {
    const box = canvas.getBoundingClientRect();
    return Number(sizeInput.value) * (canvas.width / box.width);
  }

  function trace(ctx, shape, colour) {
    ctx.fillStyle = colour;
    ctx.strokeStyle = colour;
    if (shape.tool === "rect") {
      const [x0, y0] = shape.points[0];
      const [x1, y1] = shape.points[shape.points.length - 1];
      ctx.fillRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    } else if (shape.tool === "lasso") {
      if (shape.points.length < 2) return;
      ctx.beginPath();
      ctx.moveTo(shape.points[0][0], shape.points[0][1]);
      for (const [x, y] of shape.points.slice(1)) ctx.lineTo(x, y);
      ctx.closePath();
      ctx.fill();
    } else {
      ctx.lineWidth = shape.size;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      ctx.beginPath();
      ctx.moveTo(shape.points[0][0], shape.points[0][1]);
      for (const [x, y] of shape.points) ctx.lineTo(x, y);
      ctx.stroke();
    }
  }

  function render() {
    context.clearRect(0, 0, canvas.width, canvas.height);
    for (const shape of shapes) trace(context, shape, "rgba(255, 40, 140, 0.5)");
    if (drawing) trace(context, drawing, "rgba(255, 40, 140, 0.5)");
  }

  canvas.addEventListener("pointerdown", function (event) {
    canvas.setPointerCapture(event.pointerId);
    drawing = { tool: tool, points: [point(event)], size: brushSize() };
    render();
  });
  canvas.addEventListener("pointermove", function (event) {
    if (!drawing) return;
    drawing.points.push(point(event));
    render();
  });
  function finish() {
    if (drawing && drawing.points.length > 1) shapes.push(drawing);
    drawing = null;
    render();
  }
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);

  for (const button of document.querySelectorAll("[data-tool]")) {
    button.addEventListener("click", function () {
      tool = button.dataset.tool;
      for (const other of document.querySelectorAll("[data-tool]")) other.classList.toggle("active", other === button);
    });
  }
  document.getElementById("undo").addEventListener("click", function () {
    shapes.pop();
    render();
  });
  document.getElementById("clear").addEventListener("click", function () {
    shapes.length = 0;
    render();
  });

  form.addEventListener("submit", function () {
    const mask = document.createElement("canvas");
    mask.width = canvas.width;
    mask.height = canvas.height;
    const ctx = mask.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, mask.width, mask.height);
    for (const shape of shapes) trace(ctx, shape, "#fff");
    maskField.value = mask.toDataURL("image/png");
  });
  window.regionEditor = { shapes: shapes, render: render };
})();
