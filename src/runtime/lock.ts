import fs from 'node:fs';
import path from 'node:path';
import { runRoot } from '../paths.js';
import { UserError } from '../errors.js';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * Runs fn holding the interface's apply lock, so a `backend` change, a `load` and a daemon's
 * reload never interleave (each reads the state, then writes maps and state). The lock is a
 * file holding the owner's pid; one left by a process that died is taken over.
 */
export async function withApplyLock<T>(iface: string, fn: () => Promise<T>, waitMs = 60_000): Promise<T> {
  fs.mkdirSync(runRoot, { recursive: true });
  const file = path.join(runRoot, `${iface}.lock`);
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(fs.readFileSync(file, 'utf8').trim());
      if (!owner || !alive(owner)) {
        fs.rmSync(file, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new UserError(`another xdpvs (pid ${owner}) is changing ${iface}; try again when it is done`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(file, { force: true });
    try {
      fs.rmdirSync(runRoot); // only when nothing else is there: unload leaves no trace
    } catch {
      // other interfaces are loaded
    }
  }
}
