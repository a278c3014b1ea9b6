/**
 * `xdpvs backend add|remove|set|drain`: one real server of one service changed on a loaded
 * interface, as `ipvsadm -a|-d|-e` does for IPVS.
 *
 * The change is made to the services the state recorded (the JSON the running program was built
 * from), validated like a file, and applied with `applyServices`. Backends live in maps, so
 * this swaps the service's scheduling table atomically under the running program; only when the
 * service's table must change size class (more than 10, 20, 40 ... backends) is a new program
 * compiled, and then it replaces the running one atomically. Either way the connection table
 * stays, so established flows keep their real server (a removed backend's flows are rescheduled
 * on their next packet). The state records the change, so `status` agrees; and it is written back
 * into the services file the state was loaded from, so a later `xdpvs load FILE` agrees too.
 */
import fs from 'node:fs';
import path from 'node:path';
import { validateServices } from '../config/validate.js';
import { canonicalIp, formatMac, parseMac } from '../net/addr.js';
import { ifindexOf, xdpQuery } from '../libbpf.js';
import { ringClassFor, ringSize } from '../sched/ring.js';
import { UserError } from '../errors.js';
import { applyServices, type LoadResult } from './load.js';
import { requireState, type LoadedState } from './state.js';
import { macChanges, type MacChange } from './macs.js';

export type BackendAction = 'add' | 'remove' | 'set' | 'drain';
export const BACKEND_ACTIONS: readonly BackendAction[] = ['add', 'remove', 'set', 'drain'];

export interface BackendChange {
  action: BackendAction;
  /** the service's name */
  service: string;
  ip: string;
  /** add (default 1) and set */
  weight?: number;
  /** add and set */
  mac?: string;
}

/** A backend entry of the services JSON, as written in the file. */
type RawBackend = Record<string, unknown> & { ip?: unknown; weight?: unknown; mac?: unknown };
type RawService = Record<string, unknown> & { name?: unknown; backends?: unknown };

export interface BackendEdit {
  /** the whole services document with the change made (a copy: the input is untouched) */
  raw: unknown;
  /** the service's place in `services` */
  serviceIndex: number;
  /** the backend's place in its service's `backends` (where it was, for remove) */
  backendIndex: number;
  /** the entry before (absent for add) and after (absent for remove) */
  before?: RawBackend;
  after?: RawBackend;
  /** backends of the service before and after */
  countBefore: number;
  countAfter: number;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The weight an entry schedules with (the file's default is 1). */
export const weightOf = (b: RawBackend | undefined): number => (typeof b?.weight === 'number' ? b.weight : 1);

/** Checks what the command line gave, before anything is read. */
export function checkChange(change: BackendChange, iface = 'IFACE'): void {
  if (canonicalIp(change.ip) === null) throw new UserError(`${JSON.stringify(change.ip)} is not an IPv4 or IPv6 address`);
  if (change.action === 'set' && change.weight === undefined && change.mac === undefined) {
    throw new UserError('nothing to set', [`give --weight W and/or --mac M, e.g. xdpvs backend set -i ${iface} ${change.service} ${change.ip} --weight 2`]);
  }
  if ((change.action === 'remove' || change.action === 'drain') && (change.weight !== undefined || change.mac !== undefined)) {
    throw new UserError(`backend ${change.action} takes no --weight or --mac`, change.action === 'drain' ? ['drain sets the weight to 0; to set another weight: xdpvs backend set --weight W'] : []);
  }
}

/**
 * The services document `raw` with one backend changed. `where` says in messages whose services
 * these are ("on eth0", "in services.json"). Throws a UserError for an unknown service, an
 * unknown backend (remove, set, drain) or one that is already there (add).
 */
export function editServices(raw: unknown, change: BackendChange, where: string, iface = 'IFACE'): BackendEdit {
  checkChange(change, iface);
  const ip = canonicalIp(change.ip)!;
  // a MAC in canonical form when it is one; otherwise as given, for validation to name it
  const mac = change.mac === undefined ? undefined : parseMac(change.mac) ? formatMac(parseMac(change.mac)!) : change.mac;
  const doc = structuredClone(raw) as unknown;
  const services = isObject(doc) && Array.isArray(doc.services) ? (doc.services as unknown[]) : undefined;
  if (!services) throw new UserError(`no services ${where}: the document has no "services" array`);
  const names = services.map((s) => (isObject(s) && typeof s.name === 'string' ? s.name : '?'));
  const serviceIndex = names.indexOf(change.service);
  if (serviceIndex < 0) {
    throw new UserError(`no service named ${JSON.stringify(change.service)} ${where}`, [
      names.length === 0 ? 'there are no services' : `services: ${names.join(', ')}`,
    ]);
  }
  const service = services[serviceIndex] as RawService;
  if (!Array.isArray(service.backends)) throw new UserError(`services[${serviceIndex}] (${change.service}) ${where} has no "backends" array`);
  const backends = service.backends as RawBackend[];
  const ipOf = (b: RawBackend) => (typeof b?.ip === 'string' ? (canonicalIp(b.ip) ?? b.ip) : undefined);
  const backendIndex = backends.findIndex((b) => ipOf(b) === ip);
  const countBefore = backends.length;
  const known = () => [backends.length === 0 ? `${change.service} has no backends` : `its backends: ${backends.map((b) => ipOf(b) ?? '?').join(', ')}`];

  if (change.action === 'add') {
    if (backendIndex >= 0) {
      const b = backends[backendIndex]!;
      throw new UserError(`${change.service} already has the backend ${ip} ${where} (weight ${weightOf(b)})`, [
        `to change it: xdpvs backend set -i ${iface} ${change.service} ${ip} --weight W`,
      ]);
    }
    const after: RawBackend = { ip, weight: change.weight ?? 1, ...(mac !== undefined ? { mac } : {}) };
    backends.push(after);
    return { raw: doc, serviceIndex, backendIndex: backends.length - 1, after, countBefore, countAfter: backends.length };
  }
  if (backendIndex < 0) throw new UserError(`${change.service} has no backend ${ip} ${where}`, known());
  const before = structuredClone(backends[backendIndex]!);
  if (change.action === 'remove') {
    backends.splice(backendIndex, 1);
    return { raw: doc, serviceIndex, backendIndex, before, countBefore, countAfter: backends.length };
  }
  const after = backends[backendIndex]!;
  if (change.action === 'drain') after.weight = 0;
  if (change.action === 'set' && change.weight !== undefined) after.weight = change.weight;
  if (change.action === 'set' && mac !== undefined) after.mac = mac;
  return { raw: doc, serviceIndex, backendIndex, before, after, countBefore, countAfter: backends.length };
}

/** What a change did, in words: `added 10.200.0.14 to web (weight 1)`. */
export function describeEdit(change: BackendChange, edit: BackendEdit): string {
  const ip = canonicalIp(change.ip)!;
  const mac = (b: RawBackend | undefined) => (typeof b?.mac === 'string' ? b.mac : 'from the neighbour table');
  switch (change.action) {
    case 'add':
      return `added ${ip} to ${change.service} (weight ${weightOf(edit.after)}${typeof edit.after?.mac === 'string' ? `, MAC ${edit.after.mac}` : ''})`;
    case 'remove':
      return `removed ${ip} from ${change.service}`;
    case 'drain':
      return `drained ${ip} in ${change.service} (weight ${weightOf(edit.before)} -> 0)`;
    case 'set': {
      const parts = [
        ...(change.weight !== undefined ? [`weight ${weightOf(edit.before)} -> ${weightOf(edit.after)}`] : []),
        ...(change.mac !== undefined ? [`MAC ${mac(edit.before)} -> ${mac(edit.after)}`] : []),
      ];
      return `set ${ip} in ${change.service}: ${parts.join(', ')}`;
    }
  }
}

export interface SaveResult {
  file: string;
  written: boolean;
  /** why it was not written, when it should have been */
  warning?: string;
}

/**
 * Makes the same change in the services file (its current contents, so whatever else it holds
 * stays as it is), written as 2-space JSON through a temporary file and a rename, keeping the
 * file's mode. Never throws: a file that cannot be read, parsed, changed or written is a warning.
 */
export function saveToFile(file: string, change: BackendChange): SaveResult {
  let target = file;
  try {
    target = fs.realpathSync(file);
    const text = fs.readFileSync(target, 'utf8');
    let raw: unknown;
    try {
      raw = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
    } catch (err) {
      return { file, written: false, warning: `${file} is not valid JSON any more (${(err as Error).message})` };
    }
    const edit = editServices(raw, change, `in ${file}`);
    const tmp = path.join(path.dirname(target), `.${path.basename(target)}.xdpvs-${process.pid}`);
    try {
      fs.writeFileSync(tmp, JSON.stringify(edit.raw, null, 2) + '\n', { mode: fs.statSync(target).mode & 0o7777 });
      fs.renameSync(tmp, target);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    return { file, written: true };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      err instanceof UserError
        ? [err.message, ...err.details].join('; ')
        : e.code === 'ENOENT'
          ? 'no such file'
          : e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS'
            ? `not writable (${e.code})`
            : e.message;
    return { file, written: false, warning: `could not update ${target}: ${why}` };
  }
}

export interface BackendResult {
  edit: BackendEdit;
  previous: LoadedState;
  load: LoadResult;
  /** the service's table size before and after, in slots */
  slots: { before: number; after: number };
  saved?: SaveResult;
  macs: MacChange[];
}

/**
 * Changes one backend on a loaded interface: edit, validate, apply, then (unless `save` is
 * false) write the change into the services file. A change that fails validation or applying
 * leaves the running program, its maps, the state and the file as they were.
 */
export async function changeBackend(iface: string, change: BackendChange, save = true): Promise<BackendResult> {
  checkChange(change, iface);
  const previous = requireState(iface);
  const attached = xdpQuery(ifindexOf(iface)).progId;
  if (attached !== previous.progId) {
    throw new UserError(
      attached === 0
        ? `the program xdpvs loaded on ${iface} (id ${previous.progId}) is not attached any more`
        : `${iface} runs XDP program ${attached}, not the one xdpvs loaded (id ${previous.progId})`,
      [`load the services again: xdpvs load ${previous.source} -i ${iface}`],
    );
  }
  const edit = editServices(previous.services, change, `on ${iface}`, iface);
  const config = validateServices(edit.raw, `${iface}: the services after \`backend ${change.action}\``);
  const load = await applyServices({ config, raw: edit.raw, source: previous.source, iface, mode: previous.mode });
  const saved = save ? saveToFile(previous.source, change) : undefined;
  return {
    edit,
    previous,
    load,
    slots: { before: ringSize(ringClassFor(edit.countBefore)), after: ringSize(ringClassFor(edit.countAfter)) },
    saved,
    macs: macChanges(previous.macs, load.state.macs),
  };
}

/** The one-line summary of a change. */
export function summarize(change: BackendChange, r: BackendResult): string {
  const what = `${describeEdit(change, r.edit)} on ${r.load.state.iface}`;
  let how: string;
  if (!r.load.reloaded) {
    how = `updated: same program, new tables (program ${r.load.state.progId})`;
  } else {
    const why =
      r.slots.before !== r.slots.after
        ? `its table ${r.slots.after > r.slots.before ? 'grows' : 'shrinks'} from ${r.slots.before} to ${r.slots.after} slots`
        : 'the generated program differed from the running one';
    how = `reloaded: ${why}, so a new program (${r.load.state.progId}) replaced program ${r.previous.progId} atomically`;
  }
  const saved = r.saved === undefined ? `not saved to ${r.previous.source} (--no-save)` : r.saved.written ? `saved to ${r.saved.file}` : `NOT saved to ${r.saved.file}`;
  return `${what}: ${how}; ${saved}`;
}
