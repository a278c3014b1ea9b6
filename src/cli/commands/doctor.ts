import type { Command } from 'commander';
import { UserError } from '../../errors.js';
import { formatFindings } from '../../doctor/checks.js';
import { runDoctor } from '../../doctor/doctor.js';
import { resolveInterface } from '../../runtime/state.js';

/** `xdpvs doctor`: what could keep the director from balancing, each finding with what to do. */
export function register(program: Command): void {
  program
    .command('doctor')
    .description('on the director: check the program, its pins, the VIPs, the backends\' MACs, who else answers ARP/ND for a VIP, and what would break XDP_TX; exit 1 on any FAIL')
    .option('-i, --interface <iface>', "the director's interface (default: the only one with services loaded)")
    .option('--json', 'print the findings as JSON')
    .option('--no-probe', 'do not ask the segment (no temporary macvlan): for switch ports that allow only known MACs')
    .addHelpText(
      'after',
      [
        '',
        'To ask the segment who answers for the VIPs and backends, doctor puts a macvlan (xdpvsdoc0)',
        'on the interface inside a temporary network namespace, sends ARP/ND from it and records the',
        'answers with tcpdump; the namespace and the macvlan are gone when doctor ends. Its frames come',
        'from a new random MAC: where the switch port limits the MACs it learns (port security), use',
        '--no-probe.',
      ].join('\n'),
    )
    .action(async (o: { interface?: string; json?: boolean; probe: boolean }) => {
      const report = await runDoctor(resolveInterface(o.interface), { probe: o.probe });
      if (o.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else {
        const c = report.counts;
        process.stdout.write(
          [`xdpvs doctor: ${report.summary}`, ...formatFindings(report.findings), `${c.FAIL} FAIL, ${c.WARN} WARN, ${c.OK} OK`].join('\n') + '\n',
        );
      }
      if (report.counts.FAIL > 0) {
        throw new UserError(`doctor found ${report.counts.FAIL} problem${report.counts.FAIL === 1 ? '' : 's'} on ${report.interface}`);
      }
    });
}
