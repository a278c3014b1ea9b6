/**
 * The data-plane chart of docs/benchmarks.md, as a small hand-written SVG: ns per packet of
 * every case, one bar per size, on a log scale, with the two floors and the design's targets
 * drawn across.
 */
import { CASES, type DataplaneResult } from './dataplane.js';

const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1', '#edc948', '#9c755f'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

const SHORT: Record<string, string> = {
  est4: 'established v4',
  est6: 'established v6',
  vlan: 'established, VLAN',
  estMany: 'established, new flow each pkt',
  synRecorded: 'SYN, repeated',
  synFirst: 'first SYN',
  udp: 'UDP',
  notVip: 'not for a VIP',
};

export function dataplaneSvg(r: DataplaneResult, title: string): string {
  const sizes = r.sizes;
  const width = 1000;
  const height = 520;
  const m = { left: 64, right: 16, top: 48, bottom: 140 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const values = sizes.flatMap((s) => CASES.map((c) => s.cases[c.id].ns.median)).filter((v) => v > 0);
  const floorPass = Math.min(...sizes.map((s) => s.floors.pass.median));
  const floorSwap = Math.min(...sizes.map((s) => s.floors.macSwap.median));
  const lo = Math.max(1, Math.min(floorPass, ...values) * 0.7);
  const hi = Math.max(...values, floorSwap * 2) * 1.3;
  const y = (v: number) => m.top + plotH - (Math.log(Math.max(v, lo)) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) * plotH;
  const group = plotW / CASES.length;
  const bar = Math.min(18, (group - 12) / Math.max(1, sizes.length));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  out.push(`<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);
  // grid
  for (const v of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]) {
    if (v < lo || v > hi) continue;
    out.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${m.left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#555">${v}</text>`);
  }
  out.push(`<text transform="translate(16 ${m.top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#333">ns per packet (log scale)</text>`);
  // bars
  CASES.forEach((c, i) => {
    const x0 = m.left + i * group + (group - bar * sizes.length) / 2;
    sizes.forEach((s, k) => {
      const v = s.cases[c.id].ns.median;
      const top = y(v);
      out.push(`<rect x="${(x0 + k * bar).toFixed(1)}" y="${top.toFixed(1)}" width="${(bar - 1).toFixed(1)}" height="${(m.top + plotH - top).toFixed(1)}" fill="${COLORS[k % COLORS.length]}"><title>${esc(`${SHORT[c.id]}, ${s.size.services} services / ${s.size.backends} backends: ${v.toFixed(1)} ns`)}</title></rect>`);
    });
    const cx = m.left + i * group + group / 2;
    out.push(`<text x="${cx.toFixed(1)}" y="${m.top + plotH + 16}" text-anchor="middle" fill="#333">${esc(SHORT[c.id]!.split(', ')[0]!)}</text>`);
    const rest = SHORT[c.id]!.split(', ').slice(1).join(', ');
    if (rest) out.push(`<text x="${cx.toFixed(1)}" y="${m.top + plotH + 30}" text-anchor="middle" fill="#333">${esc(rest)}</text>`);
  });
  // floors across the whole chart, targets across the cases they apply to
  const lines: Array<{ color: string; dash: string; label: string }> = [];
  const hline = (v: number, color: string, dash: string, label: string, from: number, to: number) => {
    const x1 = m.left + from * group;
    const x2 = m.left + to * group;
    out.push(`<line x1="${x1.toFixed(1)}" x2="${x2.toFixed(1)}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="${color}" stroke-width="1.5" stroke-dasharray="${dash}"/>`);
    lines.push({ color, dash, label });
  };
  const all = CASES.length;
  hline(floorPass, '#333', '2 2', `floor: XDP_PASS ${floorPass.toFixed(1)} ns`, 0, all);
  hline(floorSwap, '#333', '6 3', `floor: MAC swap ${floorSwap.toFixed(1)} ns`, 0, all);
  const targeted = (floor: 'pass' | 'macSwap') => CASES.map((c, i) => (c.target?.floor === floor ? i : -1)).filter((i) => i >= 0);
  for (const [floor, base, label] of [
    ['macSwap', floorSwap, 'target: established ≤ 2× MAC swap'],
    ['pass', floorPass, 'target: not for a VIP ≤ 1.3× XDP_PASS'],
  ] as const) {
    const idx = targeted(floor);
    if (idx.length === 0) continue;
    const ratio = CASES[idx[0]!]!.target!.ratio;
    hline(base * ratio, '#c00', floor === 'pass' ? '2 2' : '6 3', label, Math.min(...idx), Math.max(...idx) + 1);
  }
  // legend: the lines, then the sizes
  let lx = m.left;
  for (const l of lines) {
    const ly0 = height - 64;
    out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${ly0 + 6}" y2="${ly0 + 6}" stroke="${l.color}" stroke-width="1.5" stroke-dasharray="${l.dash}"/>`);
    out.push(`<text x="${lx + 28}" y="${ly0 + 10}" fill="${l.color}" font-size="11">${esc(l.label)}</text>`);
    lx += 44 + l.label.length * 5.9;
  }
  const ly = height - 40;
  sizes.forEach((s, k) => {
    const lx = m.left + k * 150;
    out.push(`<rect x="${lx}" y="${ly}" width="12" height="12" fill="${COLORS[k % COLORS.length]}"/>`);
    out.push(`<text x="${lx + 16}" y="${ly + 10}">${esc(`${s.size.services.toLocaleString('en-US')} svc / ${s.size.backends.toLocaleString('en-US')} be`)}</text>`);
  });
  out.push(`<text x="${m.left}" y="${height - 10}" fill="#555" font-size="11">${esc(`median of ${r.rounds} interleaved runs of ${r.repeat.toLocaleString('en-US')} packets (BPF_PROG_TEST_RUN); floors: the lowest over the sizes`)}</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
