import { Option, type Command } from 'commander';
import { UserError } from '../../errors.js';
import { parseVips } from '../../realserver/plan.js';
import { apply, check, print, remove } from '../../realserver/realserver.js';

const ACTIONS = ['check', 'print', 'apply', 'remove'] as const;

/** `xdpvs realserver`: the LVS-DR settings of a real server (VIPs on lo, ARP sysctls). */
export function register(program: Command): void {
  const cmd = program
    .command('realserver')
    .description('on a real server: put the VIPs on lo and set arp_ignore=1/arp_announce=2 (--apply), check them (default), print the commands, or undo (--remove)')
    .requiredOption('--vip <ips>', 'the VIPs, comma-separated (IPv4 and/or IPv6)')
    .option('--iface <iface>', 'the interface the director\'s traffic comes in on (default: the route to the first IPv4 VIP, i.e. usually the default route\'s)');
  for (const action of ACTIONS) {
    const help = {
      check: 'report each wrong or missing setting with the command that fixes it; exit 1 if any (the default)',
      print: 'print the commands --apply would run (only those needed)',
      apply: 'make every setting right; running it again changes nothing',
      remove: 'take the VIPs off lo and restore the sysctls --apply changed',
    }[action];
    cmd.addOption(new Option(`--${action}`, help).conflicts(ACTIONS.filter((a) => a !== action)));
  }
  cmd.addHelpText(
    'after',
    [
      '',
      'The settings are not persistent: run `xdpvs realserver --vip ... --apply` at boot (for example',
      'from a systemd unit before the service starts). --apply records the sysctls\' previous values',
      'in /run/xdpvs-realserver/ (XDPVS_REALSERVER_ROOT) for --remove.',
    ].join('\n'),
  );
  cmd.action((o: { vip: string; iface?: string; check?: boolean; print?: boolean; apply?: boolean; remove?: boolean }) => {
    const opts = { vips: parseVips(o.vip), iface: o.iface };
    const report = o.apply ? apply(opts) : o.print ? print(opts) : o.remove ? remove(opts) : check(opts);
    process.stdout.write(`${report.lines.join('\n')}\n`);
    if (!report.ok) {
      throw new UserError(`${report.wrong} setting${report.wrong === 1 ? ' is' : 's are'} wrong on this real server`, [
        `fix: xdpvs realserver --vip ${o.vip}${o.iface ? ` --iface ${o.iface}` : ''} --apply`,
      ]);
    }
  });
}
