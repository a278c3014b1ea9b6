import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { InvalidArgumentError, type Command } from 'commander';
import { UserError } from '../../errors.js';
import { execArgv, labDown, labInfo, labUp, readTopology, type LabInfo } from '../../lab/lab.js';
import { DEFAULT_PREFIX, DEFAULT_REAL_SERVERS, MAX_REAL_SERVERS, type LabHost } from '../../lab/topology.js';

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function wholeNumber(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('not a whole number');
  return n;
}

function formatInfo(info: LabInfo): string {
  const hosts: Array<LabHost & { pid?: number | null }> = [info.client, info.director, ...info.realServers];
  const rows = [
    ['HOST', 'NAMESPACE', 'IFACE', 'MAC', 'IPV4', ...(info.ipv6 ? ['IPV6'] : []), 'SWITCH PORT', 'PID'],
    ...hosts.map((h) => [
      h.role, h.namespace, h.interface, h.mac, h.ipv4, ...(info.ipv6 ? [h.ipv6 ?? '-'] : []), h.switchPort,
      h.pid === undefined ? '' : String(h.pid ?? 'not running'),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const table = rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i]!)).join('  ')}`.trimEnd());
  const vips = [...info.vips.ipv4, ...info.vips.ipv6].join(', ');
  return [
    `lab "${info.prefix}": ${plural(info.realServers.length, 'real server')}, ${info.ipv6 ? 'IPv4 and IPv6' : 'IPv4'}`,
    ...table,
    `  switch: bridge ${info.switch.bridge} in ${info.switch.namespace}`,
    `  VIPs: ${vips} (on the director's ${info.director.interface}, on each real server's lo)`,
    `  real servers answer: HTTP on TCP ${info.ports.tcp.join(', ')}, UDP ${info.ports.udp.join(', ')}`,
    `  state: ${info.stateDir}`,
  ].join('\n');
}

export function register(program: Command): void {
  const lab = program
    .command('lab')
    .description('the LVS-DR lab on this machine: a switch, a client, the director and real servers in network namespaces')
    .enablePositionalOptions();

  lab
    .command('up')
    .description('create the lab (or make the running one whole again)')
    .option('--real-servers <n>', `number of real servers (1-${MAX_REAL_SERVERS})`, wholeNumber, DEFAULT_REAL_SERVERS)
    .option('--ipv6', 'give every host and VIP an IPv6 address too', false)
    .option('--name <prefix>', 'prefix of every namespace name', DEFAULT_PREFIX)
    .action(async (opts: { realServers: number; ipv6: boolean; name: string }) => {
      const result = await labUp({ prefix: opts.name, realServers: opts.realServers, ipv6: opts.ipv6 });
      if (result.replaced) process.stdout.write(`replaced the lab "${opts.name}" that had other options\n`);
      else if (result.created.length === 0 && result.startedServers.length === 0) {
        process.stdout.write(`the lab "${opts.name}" was already up\n`);
      }
      process.stdout.write(`${formatInfo(labInfo(opts.name))}\n`);
    });

  lab
    .command('down')
    .description('remove the lab: its namespaces, every process in them, its state dir')
    .option('--name <prefix>', 'prefix of every namespace name', DEFAULT_PREFIX)
    .action(async (opts: { name: string }) => {
      const { namespaces, processes } = await labDown(opts.name);
      process.stdout.write(
        namespaces.length === 0 && processes.length === 0
          ? `no lab "${opts.name}" to remove\n`
          : `removed the lab "${opts.name}": ${plural(namespaces.length, 'namespace')}, ${plural(processes.length, 'process', 'processes')}\n`,
      );
    });

  lab
    .command('exec')
    .description('run a command in the namespace of client, director, switch or rsN (/sys/fs/bpf stays the host\'s)')
    .argument('<role>', 'client, director, switch, rs1, rs2, ...')
    .argument('<command...>', 'the command and its arguments, after --')
    .usage('[--name PREFIX] <role> -- <command...>')
    .option('--name <prefix>', 'prefix of every namespace name', DEFAULT_PREFIX)
    .passThroughOptions()
    .action((role: string, args: string[], opts: { name: string }) => {
      // options after <role> pass through untouched, `--` included
      const command = args[0] === '--' ? args.slice(1) : args;
      const argv = execArgv(readTopology(opts.name), role, command);
      const r = spawnSync(argv[0]!, argv.slice(1), { stdio: 'inherit' });
      if (r.error) throw new UserError(`could not run ${argv[0]}: ${r.error.message}`);
      const status = r.status ?? 128 + (os.constants.signals[r.signal as NodeJS.Signals] ?? 0);
      if (status !== 0) throw new UserError(`${command[0]} exited with status ${status} in ${role}`, [], status);
    });

  lab
    .command('info')
    .description('print the lab\'s namespaces, interfaces, addresses, MACs and VIPs')
    .option('--name <prefix>', 'prefix of every namespace name', DEFAULT_PREFIX)
    .option('--json', 'print JSON', false)
    .action((opts: { name: string; json: boolean }) => {
      const info = labInfo(opts.name);
      process.stdout.write(opts.json ? `${JSON.stringify(info, null, 2)}\n` : `${formatInfo(info)}\n`);
    });
}
