// P7's chart: per-build cost by condition for each tool, as grouped bars (SVG, no
// dependencies): one trivial build, and a batch's time per leaf.
import type { ConditionResult, Tool } from "./conditions.js";
import { TOOLS } from "./conditions.js";
import type { GuixMedians } from "./guix.js";

const COLOURS: Record<Tool, string> = { offload: "#2a7ab0", "nix 2.8": "#c0c0c0", "nix 2.34": "#7a7a7a" };
const GUIX_COLOUR = "#b0702a";
const LEAVES = 10;

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;");
}

/** With `guix`: a third panel, guix-daemon in the fast lab (a): offload and `guix offload`, the same two measures. */
export function conditionsChart(results: readonly ConditionResult[], guix?: GuixMedians): string {
  const panels = [
    { title: "one trivial build (ms)", value: (r: ConditionResult, tool: Tool) => r.trivial[tool] },
    { title: `${LEAVES}-leaf batch, ms per leaf`, value: (r: ConditionResult, tool: Tool) => r.batch[tool] / LEAVES },
  ];
  const bar = 18;
  const group = bar * TOOLS.length + 24;
  const panelWidth = 80 + results.length * group;
  const height = 300;
  const plot = 200;
  const parts: string[] = [];
  panels.forEach((panel, p) => {
    const x0 = p * (panelWidth + 20);
    const max = Math.max(1, ...results.flatMap((r) => TOOLS.map((tool) => panel.value(r, tool))));
    parts.push(`<text x="${x0 + 60}" y="18" font-size="13" font-weight="bold">${escape(panel.title)}</text>`);
    parts.push(`<line x1="${x0 + 55}" y1="${30 + plot}" x2="${x0 + panelWidth}" y2="${30 + plot}" stroke="#333"/>`);
    for (const fraction of [0, 0.5, 1]) {
      const y = 30 + plot - fraction * plot;
      parts.push(`<text x="${x0 + 50}" y="${y + 4}" font-size="10" text-anchor="end">${Math.round(max * fraction)}</text>`);
    }
    results.forEach((result, i) => {
      const gx = x0 + 60 + i * group;
      TOOLS.forEach((tool, t) => {
        const value = panel.value(result, tool);
        const h = (value / max) * plot;
        parts.push(
          `<rect x="${gx + t * bar}" y="${(30 + plot - h).toFixed(1)}" width="${bar - 2}" height="${h.toFixed(1)}" fill="${COLOURS[tool]}"><title>${escape(`${tool}: ${Math.round(value)} ms`)}</title></rect>`,
        );
      });
      parts.push(`<text x="${gx + (bar * TOOLS.length) / 2}" y="${48 + plot}" font-size="11" text-anchor="middle">${escape(result.key)}</text>`);
    });
  });
  let width = panels.length * (panelWidth + 20);
  if (guix) {
    const x0 = width;
    const bars = [
      { label: "trivial", offload: guix.trivial.offload, other: guix.trivial.guix },
      { label: "per leaf", offload: guix.perLeaf.offload, other: guix.perLeaf.guix },
    ];
    const max = Math.max(...bars.flatMap((b) => [b.offload, b.other]));
    parts.push(`<text x="${x0 + 60}" y="18" font-size="13" font-weight="bold">guix-daemon, fast lab (a), ms</text>`);
    parts.push(`<line x1="${x0 + 55}" y1="${30 + plot}" x2="${x0 + 60 + bars.length * 60}" y2="${30 + plot}" stroke="#333"/>`);
    parts.push(`<text x="${x0 + 50}" y="${34}" font-size="10" text-anchor="end">${Math.round(max)}</text>`);
    bars.forEach((b, i) => {
      const gx = x0 + 60 + i * 60;
      [
        [b.offload, COLOURS.offload, "offload"],
        [b.other, GUIX_COLOUR, "guix offload"],
      ].forEach(([value, colour, tool], t) => {
        const h = ((value as number) / max) * plot;
        parts.push(
          `<rect x="${gx + t * bar}" y="${(30 + plot - h).toFixed(1)}" width="${bar - 2}" height="${h.toFixed(1)}" fill="${colour}"><title>${escape(`${tool}: ${Math.round(value as number)} ms`)}</title></rect>`,
        );
      });
      parts.push(`<text x="${gx + bar}" y="${48 + plot}" font-size="11" text-anchor="middle">${b.label}</text>`);
    });
    parts.push(`<rect x="${60 + TOOLS.length * 110}" y="${height - 22}" width="12" height="12" fill="${GUIX_COLOUR}"/>`);
    parts.push(`<text x="${76 + TOOLS.length * 110}" y="${height - 12}" font-size="11">guix offload</text>`);
    width += 60 + bars.length * 60 + 20;
  }
  TOOLS.forEach((tool, t) => {
    parts.push(`<rect x="${60 + t * 110}" y="${height - 22}" width="12" height="12" fill="${COLOURS[tool]}"/>`);
    parts.push(`<text x="${76 + t * 110}" y="${height - 12}" font-size="11">${escape(tool)}</text>`);
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${parts.join("\n")}\n</svg>\n`;
}
