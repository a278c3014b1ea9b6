import { InvalidArgumentError, type Command } from 'commander';
import { resolveInterface } from '../../runtime/state.js';
import { collectStats, withRates, type StatsReport, type StatsSample, type StatsTotals } from '../../runtime/read.js';
import { formatStatsTable } from '../format.js';

interface StatsOptions {
  interface?: string;
  json?: boolean;
  rate?: boolean;
  watch?: boolean;
  interval: number;
  exact?: boolean;
}

const CLEAR = '\x1b[2J\x1b[H';

function seconds(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value.trim()) || !(n > 0) || n > 3600) throw new InvalidArgumentError('seconds between 0 and 3600, e.g. 1 or 0.5');
  return n;
}

/** Waits ms, or less when `stop` resolves first. */
function sleep(ms: number, stop: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))), stop]).finally(() => clearTimeout(timer));
}

function render(o: StatsOptions, cur: StatsSample, prev: StatsSample | undefined): string {
  let report: StatsReport = cur.report;
  let totalsPerSecond: StatsTotals | undefined;
  if (o.rate && prev) ({ report, totalsPerSecond } = withRates(cur, prev));
  if (o.json) return JSON.stringify(report, null, o.watch ? undefined : 2);
  return formatStatsTable(report, { rate: o.rate, exact: o.exact, totalsPerSecond, drops: cur.drops });
}

export function register(program: Command): void {
  program
    .command('stats')
    .description('counters per service and real server, as `ipvsadm -L -n --stats` (--rate: per second, as `ipvsadm --rate`)')
    .option('-i, --interface <iface>', "the director's interface (default: the only one with services loaded)")
    .option('--json', 'print JSON (with --watch: one line per interval)')
    .option('--rate', 'per-second rates over --interval, as ipvsadm --rate')
    .option('--watch', 'redraw every --interval until interrupted (Ctrl-C)')
    .option('--interval <seconds>', 'seconds between the samples of --rate and the redraws of --watch', seconds, 1)
    .option('--exact', 'whole numbers, without K/M/G/T (as ipvsadm --exact)')
    .action(async (o: StatsOptions) => {
      const iface = resolveInterface(o.interface);
      const ms = o.interval * 1000;
      if (!o.watch) {
        let prev: StatsSample | undefined;
        if (o.rate) {
          prev = collectStats(iface);
          await new Promise((resolve) => setTimeout(resolve, ms));
        }
        process.stdout.write(`${render(o, collectStats(iface), prev)}\n`);
        return;
      }

      // --watch: until SIGINT, which ends it normally (exit 0)
      let stopped = false;
      let onSignal = (): void => undefined;
      const stop = new Promise<void>((resolve) => {
        onSignal = () => {
          stopped = true;
          resolve();
        };
      });
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        let prev: StatsSample | undefined;
        if (o.rate) {
          prev = collectStats(iface);
          await sleep(ms, stop);
        }
        while (!stopped) {
          const cur = collectStats(iface);
          const body = render(o, cur, prev);
          const title = `Every ${o.interval}s: xdpvs stats on ${iface}${o.rate ? ' (per second)' : ''}    ${new Date().toISOString()}`;
          process.stdout.write(o.json ? `${body}\n` : `${CLEAR}${title}\n\n${body}\n`);
          prev = cur;
          await sleep(ms, stop);
        }
      } finally {
        process.removeListener('SIGINT', onSignal);
        process.removeListener('SIGTERM', onSignal);
      }
    });
}
