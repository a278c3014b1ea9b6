import type { Command } from 'commander';
import { resolveInterface } from '../../runtime/state.js';
import { collectStatus, type StatusReport } from '../../runtime/read.js';
import { formatStatusTable } from '../format.js';

/** The program, where it runs and what it was loaded from, then the ipvsadm -L -n table. */
export function formatStatus(r: StatusReport): string {
  const program = `${r.programId}, ${r.mode} mode${r.attached ? '' : `, NOT attached to ${r.interface} any more`}`;
  return [
    `Interface: ${r.interface} (ifindex ${r.ifindex})`,
    `Program:   ${program}`,
    `Loaded:    ${r.loadedAt} from ${r.source}`,
    `Timeouts:  tcp ${r.timeouts.tcp} s, tcpfin ${r.timeouts.tcpFin} s, udp ${r.timeouts.udp} s`,
    '',
    formatStatusTable(r),
  ].join('\n');
}

export function register(program: Command): void {
  program
    .command('status')
    .description('what is loaded: the program and its attach mode, then services and real servers as `ipvsadm -L -n` shows them')
    .option('-i, --interface <iface>', "the director's interface (default: the only one with services loaded)")
    .option('--json', 'print JSON')
    .action((o: { interface?: string; json?: boolean }) => {
      const report = collectStatus(resolveInterface(o.interface));
      process.stdout.write(o.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatStatus(report)}\n`);
    });
}
