// The P6 chart: per graph, each policy's makespan as a multiple of the lower bound (1.0 = no
// schedule can do better), as grouped horizontal bars in a self-contained SVG.
export interface ChartGroup {
  label: string;
  bars: { label: string; value: number }[];
}

const COLORS = ["#2b6cb0", "#c05621", "#718096", "#2f855a"];
const BAR = 14;
const GAP = 10;
const LEFT = 150;
const WIDTH = 720;

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

export function barChart(title: string, groups: readonly ChartGroup[], axisLabel: string): string {
  const series = groups[0]?.bars.map((b) => b.label) ?? [];
  const max = Math.ceil(Math.max(...groups.flatMap((g) => g.bars.map((b) => b.value))) * 2) / 2;
  const plot = WIDTH - LEFT - 60;
  const x = (value: number) => LEFT + (value / max) * plot;
  const groupHeight = series.length * BAR + GAP;
  const top = 60;
  const height = top + groups.length * groupHeight + 50;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${escape(title)}</text>`,
  ];
  series.forEach((name, i) => {
    parts.push(`<rect x="${LEFT + i * 150}" y="30" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`);
    parts.push(`<text x="${LEFT + i * 150 + 16}" y="40">${escape(name)}</text>`);
  });
  for (let tick = 0; tick <= max + 1e-9; tick += 0.5) {
    parts.push(`<line x1="${x(tick)}" y1="${top - 4}" x2="${x(tick)}" y2="${height - 40}" stroke="${tick === 1 ? "#000" : "#ddd"}"/>`);
    parts.push(`<text x="${x(tick)}" y="${height - 26}" text-anchor="middle">${tick.toFixed(1)}</text>`);
  }
  parts.push(`<text x="${LEFT + plot / 2}" y="${height - 8}" text-anchor="middle">${escape(axisLabel)}</text>`);
  groups.forEach((group, g) => {
    const y0 = top + g * groupHeight;
    parts.push(`<text x="${LEFT - 8}" y="${y0 + (series.length * BAR) / 2 + 4}" text-anchor="end">${escape(group.label)}</text>`);
    group.bars.forEach((bar, i) => {
      const y = y0 + i * BAR;
      parts.push(`<rect x="${LEFT}" y="${y}" width="${Math.max(0, x(bar.value) - LEFT)}" height="${BAR - 2}" fill="${COLORS[i % COLORS.length]}"/>`);
      parts.push(`<text x="${x(bar.value) + 4}" y="${y + BAR - 4}">${bar.value.toFixed(2)}</text>`);
    });
  });
  parts.push("</svg>", "");
  return parts.join("\n");
}
