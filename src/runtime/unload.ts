import fs from 'node:fs';
import { ifindexOf, xdpDetach, xdpQuery } from '../libbpf.js';
import { pinDir, pinRoot, runDir, runRoot } from '../paths.js';
import { UserError } from '../errors.js';
import { readState } from './state.js';

/**
 * `xdpvs unload`: detaches xdpvs's program and removes every pin and state file it made for the
 * interface. A program that is not xdpvs's is left alone. Works also when the interface is gone.
 */
export function unloadInterface(iface: string): { detached: boolean; removed: string[] } {
  const state = readState(iface);
  const removed = [pinDir(iface), runDir(iface)].filter((d) => fs.existsSync(d));
  if (!state && removed.length === 0) throw new UserError(`nothing is loaded on ${iface}`);
  let detached = false;
  let ifindex = 0;
  try {
    ifindex = ifindexOf(iface);
  } catch {
    // the interface is gone, and its program with it: only the pins remain to remove
  }
  if (ifindex !== 0) {
    const attached = xdpQuery(ifindex);
    if (attached.progId !== 0 && state && attached.progId === state.progId) {
      xdpDetach(ifindex, attached.mode === 'generic' ? 'generic' : 'native');
      detached = true;
    }
  }
  for (const d of removed) fs.rmSync(d, { recursive: true, force: true });
  for (const root of [pinRoot, runRoot]) removeIfEmpty(root);
  return { detached, removed };
}

function removeIfEmpty(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    // not empty (another interface is loaded) or already gone
  }
}
