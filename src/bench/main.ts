/**
 * `make bench`: the data plane per packet, where its time goes, the control plane, and the lab end
 * to end, in one run; prints the tables and writes docs/benchmarks.md and docs/bench-dataplane.svg.
 *
 *   node dist/bench/main.js                  (as root; `make bench` builds and installs wrk and haproxy first)
 *   BENCH_QUICK=1 node dist/bench/main.js    a fast pass: fewer, shorter runs (a minute or two)
 *   BENCH_PARTS=dataplane,profile,control,e2e   only these parts (default: all)
 *   BENCH_DOC=path                           where to write the Markdown (default docs/benchmarks.md;
 *                                            "-" writes nothing)
 *   BENCH_RENDER=build/bench/last-run.json   measure nothing: write the document again from a
 *                                            saved run (after a change to the report's text)
 *
 * Progress goes to stderr, the tables to stdout, every raw figure to build/bench/last-run.json. Exit status 0 when every part ran, 1 otherwise
 * (the document is written all the same, saying what failed).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_SIZES, runDataplane } from './dataplane.js';
import { runProfile } from './profile.js';
import { runControl } from './control.js';
import { runE2e } from './e2e.js';
import { cleanupObjects } from './floors.js';
import { machineInfo, renderMarkdown, renderTerminal, type BenchRun } from './report.js';
import { dataplaneSvg } from './svg.js';
import { requestStop, stopRequested } from './stop.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PARTS = ['dataplane', 'profile', 'control', 'e2e'] as const;
type Part = (typeof PARTS)[number];

const quick = process.env.BENCH_QUICK === '1';
const settings = quick
  ? { repeat: 200_000, rounds: 3, e2e: { durationS: 3, runs: 1, connections: 16, threads: 1 } }
  : { repeat: 1_000_000, rounds: 7, e2e: { durationS: 10, runs: 3, connections: 16, threads: 1 } };

const log = (line: string) => process.stderr.write(`${line}\n`);

function selectedParts(): Part[] {
  const raw = process.env.BENCH_PARTS;
  if (!raw) return [...PARTS];
  const asked = raw.split(',').map((p) => p.trim()).filter(Boolean);
  const bad = asked.filter((p) => !(PARTS as readonly string[]).includes(p));
  if (bad.length > 0) throw new Error(`BENCH_PARTS: unknown part(s) ${bad.join(', ')} (parts: ${PARTS.join(', ')})`);
  return asked as Part[];
}

/** docs/benchmarks.md (or BENCH_DOC) and the chart beside it. */
function writeDocuments(run: BenchRun): void {
  const docTarget = process.env.BENCH_DOC ?? path.join(REPO_ROOT, 'docs', 'benchmarks.md');
  if (docTarget !== '-') {
    const docDir = path.dirname(docTarget);
    fs.mkdirSync(docDir, { recursive: true });
    let chart: string | undefined;
    if (run.dataplane && run.dataplane.sizes.length > 0) {
      chart = 'bench-dataplane.svg';
      fs.writeFileSync(path.join(docDir, chart), dataplaneSvg(run.dataplane, `xdpvs data plane, ns per packet — ${run.machine.cpu}, ${run.machine.kernel}`));
    }
    fs.writeFileSync(docTarget, renderMarkdown(run, chart));
    log(`wrote ${path.relative(process.cwd(), docTarget)}${chart ? ` and ${path.relative(process.cwd(), path.join(docDir, chart))}` : ''} (${Math.round(run.durations.total / 1000)} s)`);
  }
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    log('bench: needs root (BPF, network namespaces, XDP); run it as root: sudo make bench');
    return 1;
  }
  if (process.env.BENCH_RENDER) {
    const saved = JSON.parse(fs.readFileSync(process.env.BENCH_RENDER, 'utf8')) as BenchRun;
    writeDocuments(saved);
    return 0;
  }
  const parts = selectedParts();
  const run: BenchRun = { machine: machineInfo(), quick, failures: {}, durations: {} };
  log(`xdpvs bench${quick ? ' (BENCH_QUICK=1)' : ''}: ${parts.join(', ')} on ${run.machine.cpu}, ${run.machine.cpus} CPUs, ${run.machine.kernel}`);
  const started = Date.now();
  for (const part of parts) {
    if (stopRequested()) break;
    const t0 = Date.now();
    try {
      if (part === 'dataplane') run.dataplane = await runDataplane({ repeat: settings.repeat, rounds: settings.rounds, sizes: DEFAULT_SIZES, log });
      if (part === 'profile') run.profile = await runProfile({ repeat: settings.repeat, rounds: settings.rounds, log });
      if (part === 'control') run.control = await runControl({ log });
      if (part === 'e2e') {
        run.e2e = await runE2e({ ...settings.e2e, log });
        if (run.e2e.error) run.failures.e2e = run.e2e.error;
      }
    } catch (err) {
      run.failures[part] = (err as Error).message;
      log(`${part} failed: ${(err as Error).stack ?? (err as Error).message}`);
    } finally {
      run.durations[part] = Date.now() - t0;
    }
  }
  cleanupObjects();
  run.durations.total = Date.now() - started;
  if (stopRequested()) {
    log('bench: interrupted; everything it set up has been removed, nothing written');
    return 130;
  }

  process.stdout.write(renderTerminal(run));
  // the raw figures, for a closer look (build/ is not tracked)
  const raw = path.join(REPO_ROOT, 'build', 'bench', 'last-run.json');
  fs.mkdirSync(path.dirname(raw), { recursive: true });
  fs.writeFileSync(raw, `${JSON.stringify(run, null, 1)}\n`);
  writeDocuments(run);
  return Object.keys(run.failures).length > 0 ? 1 : 0;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (!stopRequested()) log(`\nbench: ${sig}: stopping after the current step and cleaning up`);
    requestStop(sig);
  });
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    log(`bench: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
