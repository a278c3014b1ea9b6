// The data-plane benchmark with tiny counts: every case runs on the generated program and is
// checked by the bench itself (verdicts, the backend chosen, conn-table entries, counters), and
// the report has a row for each. No timing assertions: at these counts the figures are noise.
import t from 'tap';
import { CASES, FLOOR_LABELS, runDataplane } from '../src/bench/dataplane.js';
import { machineInfo, renderMarkdown, renderTerminal } from '../src/bench/report.js';
import { dataplaneSvg } from '../src/bench/svg.js';

t.test('a tiny data-plane run measures every case and reports it', async (t) => {
  const sizes = [
    { services: 1, backends: 10 },
    { services: 100, backends: 1000 },
  ];
  const r = await runDataplane({ repeat: 1000, rounds: 1, sizes });
  t.equal(r.sizes.length, sizes.length, 'one result per size');
  for (const s of r.sizes) {
    const at = `${s.size.services} services / ${s.size.backends} backends`;
    for (const floor of [s.floors.pass, s.floors.macSwap]) {
      t.ok(Number.isFinite(floor.median) && Math.abs(floor.median) < 1e6, `${at}: a floor figure is a number`);
    }
    t.ok(s.program.xlatedInsns > 0 && s.program.jitedBytes > 0, `${at}: the program's size is known`);
    t.equal(s.programs, s.size.services === 1 ? 3 : 1, `${at}: a program per service kind where one service cannot be all`);
    for (const c of CASES) {
      const x = s.cases[c.id];
      t.ok(x, `${at}: ${c.id} measured`);
      t.ok(Number.isFinite(x.ns.median) && Math.abs(x.ns.median) < 1e6, `${at}: ${c.id} ns/packet is a number`);
      t.ok(Number.isFinite(x.ratioPass) && Number.isFinite(x.ratioMacSwap), `${at}: ${c.id} ratios are numbers`);
      t.ok(x.kernelNs >= 0, `${at}: ${c.id} kernel average read`);
      t.equal(x.meets === undefined, c.target === undefined, `${at}: ${c.id} judged against a target exactly when it has one`);
    }
    t.ok(s.synFirstRecorded >= 0 && s.synFirstRecorded <= 1, `${at}: the recorded share of first SYNs is a share`);
  }
  const run = { machine: machineInfo(), quick: true, dataplane: r, failures: {}, durations: { dataplane: 1 } };
  const text = renderTerminal(run);
  const md = renderMarkdown(run, 'bench-dataplane.svg');
  for (const label of [...CASES.map((c) => c.label), FLOOR_LABELS.pass, FLOOR_LABELS.macSwap]) {
    t.ok(text.includes(label), `the terminal table has a row "${label}"`);
    t.ok(md.includes(`| ${label} |`), `the Markdown table has a row "${label}"`);
  }
  t.match(md, /\| CPU \| .+, \d+ CPUs \|/, 'the document names the machine');
  t.match(md, /\| kernel \| Linux /, 'and the kernel');
  const svg = dataplaneSvg(r, 'smoke');
  t.match(svg, /^<svg /, 'the chart is an SVG');
  t.equal((svg.match(/<rect x=/g) ?? []).length, CASES.length * sizes.length + sizes.length, 'a bar per case and size, and a legend swatch per size');
});
