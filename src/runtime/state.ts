import fs from 'node:fs';
import path from 'node:path';
import type { Allocation } from '../plan.js';
import type { ServicesConfig } from '../config/types.js';
import { validateServices } from '../config/validate.js';
import { runDir } from '../paths.js';
import { UserError } from '../errors.js';

/**
 * What `load` leaves under /run/xdpvs/<iface>/ for later commands: the services as applied,
 * the ids it gave them and the MACs it used. The maps are the truth for counters and flows;
 * this file is the truth for names and configuration.
 */
export interface LoadedState {
  version: 1;
  iface: string;
  ifindex: number;
  mode: 'native' | 'generic';
  progId: number;
  /** the services file it was loaded from */
  source: string;
  /** the file's JSON, as validated */
  services: unknown;
  allocation: Allocation;
  /** backendKey -> MAC written to the backends map */
  macs: Record<string, string>;
  /** backendKey -> the health checker's verdict (the daemon's); absent means up */
  health?: Record<string, 'up' | 'down'>;
  loadedAt: string;
}

const stateFile = (iface: string): string => path.join(runDir(iface), 'state.json');

export function readState(iface: string): LoadedState | undefined {
  try {
    return JSON.parse(fs.readFileSync(stateFile(iface), 'utf8')) as LoadedState;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UserError(`cannot read ${stateFile(iface)}: ${(err as Error).message}`);
  }
}

/** The state of a loaded interface, or a clear error when nothing is loaded there. */
export function requireState(iface: string): LoadedState {
  const state = readState(iface);
  if (!state) throw new UserError(`nothing is loaded on ${iface}`, [`load services first: xdpvs load FILE -i ${iface}`]);
  return state;
}

export function stateConfig(state: LoadedState): ServicesConfig {
  return validateServices(state.services, `${stateFile(state.iface)} (services)`);
}

/** Written to a temporary file and renamed, so a reader never sees half a state. */
export function writeState(state: LoadedState): void {
  fs.mkdirSync(runDir(state.iface), { recursive: true });
  const tmp = `${stateFile(state.iface)}.${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n');
  fs.renameSync(tmp, stateFile(state.iface));
}

/** Interfaces with something loaded, for commands run without -i. */
export function loadedInterfaces(): string[] {
  const root = path.dirname(runDir('x'));
  try {
    return fs.readdirSync(root).filter((d) => fs.existsSync(stateFile(d)));
  } catch {
    return [];
  }
}

/** The interface a reading command works on: the one given, or the only one loaded. */
export function resolveInterface(iface: string | undefined): string {
  if (iface) return iface;
  const loaded = loadedInterfaces();
  if (loaded.length === 1) return loaded[0]!;
  if (loaded.length === 0) throw new UserError('nothing is loaded on any interface', ['load services first: xdpvs load FILE -i IFACE']);
  throw new UserError(`services are loaded on several interfaces (${loaded.join(', ')}): say which with -i`);
}
