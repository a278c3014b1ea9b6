/**
 * `xdpvs realserver --vip ... [--check|--print|--apply|--remove]`: each action returns the lines
 * to print and whether everything is right; the CLI prints them and sets the exit status.
 */
import { UserError } from '../errors.js';
import {
  ARP_ANNOUNCE,
  ARP_IGNORE,
  KERNEL_DEFAULT,
  arpKeys,
  evaluate,
  stepCommand,
  stepDone,
  stepsOf,
  sysctlId,
  sysctlName,
  vipList,
  type ArpSysctl,
  type Finding,
  type RsVip,
  type SysctlKey,
} from './plan.js';
import {
  deleteRecord,
  interfaceExists,
  outgoingInterface,
  readRecord,
  readSnapshot,
  readSysctl,
  recordFile,
  runStep,
  writeRecord,
  writeSysctl,
  type ApplyRecord,
} from './system.js';

export interface RealServerOptions {
  vips: RsVip[];
  /** --iface: the outgoing interface; default from the routing table */
  iface?: string;
}

export interface Report {
  lines: string[];
  /** everything is as it should be (check), or the action did what it had to */
  ok: boolean;
  /** settings that are wrong (check) */
  wrong: number;
}

interface Context {
  iface: string | null;
  findings: Finding[];
}

function inspect(o: RealServerOptions): Context {
  const iface = outgoingInterface(o.vips, o.iface);
  const snap = readSnapshot(iface ? arpKeys(iface) : []);
  return { iface, findings: evaluate(o.vips, iface, snap) };
}

const cli = (o: RealServerOptions, action: string): string =>
  `xdpvs realserver --vip ${vipList(o.vips)}${o.iface ? ` --iface ${o.iface}` : ''} ${action}`;

function scope(o: RealServerOptions, iface: string | null): string {
  const vips = o.vips.map((v) => `${v.address}/${v.prefix}`).join(', ');
  return iface === null
    ? `VIPs ${vips} on lo (IPv6 only: no ARP sysctl needed)`
    : `VIPs ${vips} on lo, ARP sysctls on all and ${iface}`;
}

/** --check: each setting, OK or WRONG with the commands that fix it. */
export function check(o: RealServerOptions): Report {
  const { iface, findings } = inspect(o);
  const lines = [`real server check: ${scope(o, iface)}`];
  for (const f of findings) {
    lines.push(`  ${f.ok ? 'OK   ' : 'WRONG'}  ${f.text}`);
    for (const s of f.steps) lines.push(`           fix: ${stepCommand(s)}`);
    if (!f.ok && f.steps.length === 0) lines.push('           fix: none known (is IPv4 enabled on this interface?)');
  }
  const wrong = findings.filter((f) => !f.ok).length;
  lines.push(
    wrong === 0
      ? `all ${findings.length} settings are right`
      : `${wrong} of ${findings.length} settings wrong: run \`${cli(o, '--apply')}\` (or the commands above)`,
  );
  return { lines, ok: wrong === 0, wrong };
}

/** --print: the commands --apply would run, in its order; a comment when there are none. */
export function print(o: RealServerOptions): Report {
  const { iface, findings } = inspect(o);
  const steps = stepsOf(findings);
  const lines = steps.length === 0 ? [`# nothing to change: ${scope(o, iface)} are already right`] : steps.map(stepCommand);
  return { lines, ok: true, wrong: findings.filter((f) => !f.ok).length };
}

/** --apply: makes every setting right, recording the sysctls' values before it changed them. */
export function apply(o: RealServerOptions): Report {
  const { iface, findings } = inspect(o);
  const steps = stepsOf(findings);
  const previous = readRecord();
  const vipTexts = o.vips.map((v) => `${v.address}/${v.prefix}`);
  if (steps.length === 0) {
    // nothing changes on the system; a record of an earlier --apply learns these VIPs too
    if (previous && vipTexts.some((v) => !previous.vips.includes(v))) {
      writeRecord({ ...previous, vips: [...new Set([...previous.vips, ...vipTexts])], updatedAt: new Date().toISOString() });
    }
    return { lines: [`nothing to change: ${scope(o, iface)} are already right`], ok: true, wrong: 0 };
  }
  const unfixable = findings.filter((f) => !f.ok && f.steps.length === 0);
  if (unfixable.length > 0) throw new UserError(`cannot fix: ${unfixable.map((f) => f.text).join('; ')}`);

  // the record first: a run that stops half-way still knows what was there before it
  const record: ApplyRecord = previous ?? { version: 1, iface, vips: [], sysctls: {}, updatedAt: '' };
  for (const s of steps) {
    if (s.kind === 'sysctl' && !(sysctlId(s.key) in record.sysctls)) record.sysctls[sysctlId(s.key)] = s.from;
  }
  record.iface = iface ?? record.iface;
  record.vips = [...new Set([...record.vips, ...vipTexts])];
  record.updatedAt = new Date().toISOString();
  writeRecord(record);

  const lines: string[] = [];
  for (const s of steps) {
    runStep(s);
    lines.push(`changed: ${stepDone(s)}`);
  }
  const after = inspect(o).findings.filter((f) => !f.ok);
  if (after.length > 0) {
    throw new UserError(`after --apply, ${after.length} setting(s) are still wrong`, after.map((f) => f.text));
  }
  lines.push(`${steps.length} change${steps.length === 1 ? '' : 's'}; ${scope(o, iface)} are right now`);
  lines.push(`undo with: ${cli(o, '--remove')} (the previous values are in ${recordFile()})`);
  return { lines, ok: true, wrong: 0 };
}

function keyOf(id: string): SysctlKey {
  const dot = id.lastIndexOf('.');
  return { conf: id.slice(0, dot), name: id.slice(dot + 1) as ArpSysctl };
}

/**
 * --remove: takes the VIPs off lo and, once no VIP that --apply put on lo is left, sets the
 * sysctls back to what they were before --apply (the kernel defaults 0/0 without a record).
 */
export function remove(o: RealServerOptions): Report {
  const record = readRecord();
  const lines: string[] = [];
  const snap = readSnapshot([]);
  const removed = new Set<string>();
  for (const vip of o.vips) {
    const onLo = snap.addresses.filter((a) => a.ifname === 'lo' && a.family === vip.family && a.address === vip.address);
    if (onLo.length === 0) lines.push(`${vip.address} was not on lo`);
    for (const a of onLo) {
      runStep({ kind: 'addr-del', addr: a, reason: 'removed' });
      lines.push(`removed ${a.address}/${a.prefixlen} from lo`);
    }
    removed.add(vip.address);
  }

  const addressOf = (v: string) => v.slice(0, v.lastIndexOf('/'));
  const stillOnLo = new Set(readSnapshot([]).addresses.filter((a) => a.ifname === 'lo').map((a) => a.address));
  const remaining = (record?.vips ?? []).filter((v) => !removed.has(addressOf(v)) && stillOnLo.has(addressOf(v)));
  if (record && remaining.length > 0) {
    writeRecord({ ...record, vips: remaining, updatedAt: new Date().toISOString() });
    lines.push(`ARP sysctls left as they are: ${remaining.join(', ')} still on lo (remove ${remaining.length === 1 ? 'it' : 'them'} too to restore them)`);
    return { lines, ok: true, wrong: 0 };
  }

  if (record) {
    const ids = Object.keys(record.sysctls);
    if (ids.length === 0) lines.push('the ARP sysctls were already right before --apply: left as they are');
    for (const id of ids) {
      const key = keyOf(id);
      if (key.conf !== 'all' && !interfaceExists(key.conf)) {
        lines.push(`${sysctlName(key)}: interface ${key.conf} is gone, nothing to restore`);
        continue;
      }
      const before = record.sysctls[id] ?? KERNEL_DEFAULT[key.name];
      const cur = readSysctl(key);
      if (cur === before) lines.push(`${sysctlName(key)} = ${before}, as before --apply`);
      else {
        writeSysctl(key, before);
        lines.push(`restored ${sysctlName(key)}: ${cur ?? 'unset'} -> ${before} (its value before --apply)`);
      }
    }
    deleteRecord();
    return { lines, ok: true, wrong: 0 };
  }

  // no record: --apply never ran here (or /run was cleared); the kernel's defaults are the best guess
  const iface = o.iface !== undefined || o.vips.some((v) => v.family === 4) ? outgoingInterface(o.vips, o.iface) : null;
  if (iface === null) {
    lines.push('no ARP sysctl to restore for IPv6 VIPs');
    return { lines, ok: true, wrong: 0 };
  }
  lines.push(`no record of the values before --apply (${recordFile()} does not exist): setting the kernel defaults, ${ARP_IGNORE}=${KERNEL_DEFAULT.arp_ignore} and ${ARP_ANNOUNCE}=${KERNEL_DEFAULT.arp_announce}`);
  for (const key of arpKeys(iface)) {
    const cur = readSysctl(key);
    const to = KERNEL_DEFAULT[key.name];
    if (cur === to) lines.push(`${sysctlName(key)} = ${to} already`);
    else {
      writeSysctl(key, to);
      lines.push(`set ${sysctlName(key)}: ${cur ?? 'unset'} -> ${to} (kernel default)`);
    }
  }
  return { lines, ok: true, wrong: 0 };
}
