import fs from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { parseServicesFile } from '../../config/validate.js';
import { planProgram } from '../../plan.js';
import { buildProgram } from '../../runtime/datapath.js';
import { loadServices } from '../../runtime/load.js';
import { unloadInterface } from '../../runtime/unload.js';
import { readState } from '../../runtime/state.js';
import { formatMacChange, macChanges } from '../../runtime/macs.js';
import { endpoint } from '../../codegen/program.js';
import { generateProgram } from '../../codegen/program.js';

const plural = (n: number, one: string): string => `${n} ${one}${n === 1 ? '' : 's'}`;

/** validate, compile, load, unload: the commands that take a services file to the kernel and back. */
export function register(program: Command): void {
  program
    .command('validate')
    .description('check a services file and print what it declares')
    .argument('<file>', 'services.json')
    .action((file: string) => {
      const config = parseServicesFile(file);
      const backends = config.services.reduce((n, s) => n + s.backends.length, 0);
      process.stdout.write(`${file}: valid, ${plural(config.services.length, 'service')}, ${plural(backends, 'backend')}\n`);
    });

  program
    .command('compile')
    .description('generate the XDP program for a services file and compile it with clang, without loading it')
    .argument('<file>', 'services.json')
    .option('-o, --out <dir>', 'directory for xdpvs.c and xdpvs.o', '.')
    .option('--emit-c', 'only write the generated C (no clang)')
    .action((file: string, o: { out: string; emitC?: boolean }) => {
      const { plan } = planProgram(parseServicesFile(file), file);
      fs.mkdirSync(o.out, { recursive: true });
      if (o.emitC) {
        const c = path.join(o.out, 'xdpvs.c');
        fs.writeFileSync(c, generateProgram(plan));
        process.stdout.write(`${c}\n`);
        return;
      }
      process.stdout.write(`${buildProgram(plan, o.out)}\n`);
    });

  program
    .command('load')
    .description('validate, compile, load and attach the services on an interface (again: replace atomically, keeping flows and counters)')
    .argument('<file>', 'services.json')
    .requiredOption('-i, --interface <iface>', "the director's interface")
    .addOption(new Option('--mode <mode>', 'XDP attach mode').choices(['native', 'generic', 'auto']).default('native'))
    .action(async (file: string, o: { interface: string; mode: 'native' | 'generic' | 'auto' }) => {
      const before = readState(o.interface);
      const { state, plan, replaced, reloaded } = await loadServices({ file, iface: o.interface, mode: o.mode });
      const backends = plan.services.reduce((n, s) => n + s.backends.length, 0);
      process.stdout.write(
        `${!replaced ? 'loaded' : reloaded ? 'replaced' : 'updated'} ${plural(plan.services.length, 'service')} with ${plural(backends, 'backend')} on ${state.iface} ` +
          `(program ${state.progId}, ${state.mode} mode${replaced && !reloaded ? '; same program, new tables' : ''})\n`,
      );
      for (const s of plan.services) {
        process.stdout.write(`  ${s.service.name.padEnd(16)} ${s.service.protocol.toUpperCase()} ${endpoint(s.service.vip.address, s.service.port).padEnd(24)} ${s.service.scheduler} -> ${s.backends.map((b) => b.backend.ip).join(', ') || '(no backends)'}\n`);
      }
      for (const c of macChanges(before?.macs, state.macs)) process.stdout.write(`${formatMacChange(c)}\n`);
    });

  program
    .command('unload')
    .description('detach the program and remove every pin and state file xdpvs made for the interface')
    .requiredOption('-i, --interface <iface>', "the director's interface")
    .action((o: { interface: string }) => {
      const { detached, removed } = unloadInterface(o.interface);
      process.stdout.write(`${detached ? 'detached from' : 'nothing attached on'} ${o.interface}; removed ${removed.join(', ') || 'nothing'}\n`);
    });
}
