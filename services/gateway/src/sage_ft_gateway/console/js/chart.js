// Loss curves with uPlot (vendored by `make install`): train and validation loss by step, and on a second axis DPO's
// reward accuracy or reinforcement fine-tuning's mean reward. The container's data-points attribute counts the steps
// plotted.
const SERIES = [
  { key: "train_loss", label: "train loss", stroke: "#2563eb", scale: "loss" },
  { key: "valid_loss", label: "validation loss", stroke: "#dc2626", scale: "loss" },
  { key: "reward_accuracy", label: "reward accuracy", stroke: "#16a34a", scale: "acc" },
  { key: "train_reward_mean", label: "reward", stroke: "#9333ea", scale: "reward" },
  { key: "valid_reward_mean", label: "validation reward", stroke: "#ea580c", scale: "reward" },
];

export function lossChart(container) {
  const points = new Map(); // step -> {train_loss, valid_loss, reward_accuracy}
  let plot = null;
  let shown = "";
  let pending = false;

  // the series that have data: a run without validation or DPO shows no empty legend entries for them
  function active() {
    return SERIES.filter((s) => [...points.values()].some((p) => p[s.key] !== undefined));
  }

  function data(series) {
    const steps = [...points.keys()].sort((a, b) => a - b);
    return [steps, ...series.map((s) => steps.map((x) => points.get(x)[s.key] ?? null))];
  }

  function build(series) {
    const width = Math.max(280, container.clientWidth || 600);
    const axes = [{ label: "step" }, { scale: "loss", label: "loss" }];
    if (series.some((s) => s.scale === "acc")) axes.push({ scale: "acc", side: 1, label: "accuracy", grid: { show: false } });
    if (series.some((s) => s.scale === "reward")) axes.push({ scale: "reward", side: 1, label: "reward", grid: { show: false } });
    plot = new window.uPlot({ width, height: 260, axes, legend: { live: false },
      series: [{ label: "step" }, ...series.map((s) => ({ label: s.label, stroke: s.stroke, width: 2, scale: s.scale,
        spanGaps: true, points: { show: s.key.startsWith("valid_") } }))],
      scales: { x: { time: false }, acc: { range: [0, 1] },
        // rewards are mostly in [0, 1]: show that span at least; a flat loss (GRPO's is often 0) gets a unit span
        reward: { range: (u, min, max) => [Math.min(0, min ?? 0), Math.max(1, max ?? 1)] },
        loss: { range: (u, min, max) => (max > min ? [min, max] : [(min ?? 0) - 0.5, (max ?? 0) + 0.5]) } } },
      data(series), container);
  }

  function redraw() {
    pending = false;
    const series = active();
    container.dataset.points = String([...points.values()].filter((p) => p.train_loss !== undefined).length);
    container.dataset.series = series.map((s) => s.key).join(" ");
    if (!window.uPlot) {
      container.textContent = "The chart library is missing: run `make install` (it vendors uPlot).";
      return;
    }
    if (plot && container.dataset.series !== shown) { plot.destroy(); plot = null; }
    shown = container.dataset.series;
    if (!plot) build(series);
    else plot.setData(data(series));
  }

  const resize = new ResizeObserver(() => {
    if (plot) plot.setSize({ width: Math.max(280, container.clientWidth), height: 260 });
  });
  resize.observe(container);

  return {
    add(metrics) {
      if (metrics.step === undefined) return;
      const point = points.get(metrics.step) || {};
      for (const s of SERIES) if (typeof metrics[s.key] === "number") point[s.key] = metrics[s.key];
      points.set(metrics.step, point);
      if (!pending) { pending = true; requestAnimationFrame(redraw); }
    },
    destroy() { resize.disconnect(); if (plot) plot.destroy(); },
  };
}
