import { InvalidArgumentError, type Command } from 'commander';
import { changeBackend, summarize, type BackendAction, type BackendChange } from '../../runtime/backend.js';
import { formatMacChange } from '../../runtime/macs.js';

interface BackendOptions {
  interface: string;
  weight?: number;
  mac?: string;
  save: boolean;
}

function wholeNumber(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('a whole number, 0-65535');
  return n;
}

const ACTIONS: Array<{ action: BackendAction; description: string; weight?: string; mac?: boolean }> = [
  {
    action: 'add',
    description: 'add a real server to a service (as ipvsadm -a)',
    weight: 'its weight, 0-65535 (default 1)',
    mac: true,
  },
  {
    action: 'remove',
    description: "remove a real server from a service (as ipvsadm -d); its flows move to other real servers on their next packet (TCP ones get reset there)",
  },
  {
    action: 'set',
    description: "change a real server's weight and/or MAC (as ipvsadm -e)",
    weight: 'the new weight, 0-65535 (0 drains)',
    mac: true,
  },
  {
    action: 'drain',
    description: 'set a real server\'s weight to 0: no new connections, established ones stay',
  },
];

/**
 * `xdpvs backend add|remove|set|drain -i IFACE SERVICE IP`: change one real server of a loaded
 * service live; see src/runtime/backend.ts.
 */
export function register(program: Command): void {
  const backend = program
    .command('backend')
    .description("change a service's real servers on a loaded interface, live: tables are swapped atomically under the running program, established flows stay");
  for (const a of ACTIONS) {
    const cmd = backend
      .command(a.action)
      .description(a.description)
      .argument('<service>', 'the service, by name')
      .argument('<ip>', "the real server's IP address")
      .requiredOption('-i, --interface <iface>', "the director's interface");
    if (a.weight) cmd.option('--weight <w>', a.weight, wholeNumber);
    if (a.mac) cmd.option('--mac <mac>', "the real server's MAC (default: from the neighbour table of the interface)");
    cmd
      .option('--no-save', 'apply and record the change, but do not write it into the services file it was loaded from')
      .action(async (service: string, ip: string, o: BackendOptions) => {
        const change: BackendChange = { action: a.action, service, ip, weight: o.weight, mac: o.mac };
        const r = await changeBackend(o.interface, change, o.save);
        process.stdout.write(`${summarize(change, r)}\n`);
        for (const c of r.macs) process.stdout.write(`${formatMacChange(c)}\n`);
        if (r.saved?.warning) {
          process.stderr.write(`xdpvs: warning: ${r.saved.warning}\n`);
          process.stderr.write(`  the change is applied and recorded on ${o.interface}, but a later \`xdpvs load ${r.previous.source}\` would undo it\n`);
        }
      });
  }
}
