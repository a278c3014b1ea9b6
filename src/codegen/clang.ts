import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { bpfDir } from '../paths.js';
import { UserError } from '../errors.js';

/** The include path for asm/types.h on Debian's multiarch layout. */
const SYSTEM_INCLUDES = ['/usr/include/x86_64-linux-gnu'];

/** Compiles generated C into a BPF object beside it; returns the object's path. */
export function compileProgram(cFile: string, clang = process.env.XDPVS_CLANG ?? 'clang'): string {
  const object = cFile.replace(/\.c$/, '') + '.o';
  const args = ['-O2', '-g', '-target', 'bpf', '-Wall', '-Wno-unused-function', `-I${bpfDir}`, ...SYSTEM_INCLUDES.map((d) => `-I${d}`), '-c', cFile, '-o', object];
  const r = spawnSync(clang, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) {
    throw new UserError(`cannot run ${clang}: ${r.error.message}`, ['install clang (make deps does it on Debian)']);
  }
  if (r.status !== 0) {
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
    throw new UserError(`clang failed to compile ${path.basename(cFile)}`, lines.slice(0, 20));
  }
  if (!fs.existsSync(object)) throw new UserError(`clang produced no ${object}`);
  return object;
}
