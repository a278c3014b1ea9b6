/**
 * Terminal tables in the shape of ipvsadm's (`-L -n`, `--stats`, `--rate`), so that operators'
 * eyes and scripts carry over: the same column names in the same order, the same widths where
 * the values fit (an address column of 28, numbers right-aligned in 9), the same K/M/G/T
 * abbreviation of large numbers as its print_largenum (unless --exact). What ipvsadm lacks
 * (service names, backend state and MAC) comes as extra columns after its own. Where a value is
 * longer than ipvsadm's column (IPv6 addresses), the column grows for every row, so the table
 * stays aligned where ipvsadm's would not.
 */
import type { DropReasons, StatsBackend, StatsReport, StatsService, StatsTotals, StatusReport } from '../runtime/read.js';

export type Align = 'left' | 'right';

export interface ColumnSpec {
  align?: Align;
  /** the column is at least this wide */
  min?: number;
}

/** The width of each column: its longest cell, at least its `min`. */
export function columnWidths(rows: readonly (readonly string[])[], columns: readonly ColumnSpec[]): number[] {
  const n = Math.max(columns.length, ...rows.map((r) => r.length));
  return Array.from({ length: n }, (_, i) => Math.max(columns[i]?.min ?? 0, ...rows.map((r) => (r[i] ?? '').length)));
}

/**
 * Aligns rows into columns separated by `sep` (one space by default). Cells are padded to their
 * column's width on the side their alignment says; trailing white space is trimmed, so a left-
 * aligned last column or empty trailing cells leave nothing at the end of a line.
 */
export function alignColumns(rows: readonly (readonly string[])[], columns: readonly ColumnSpec[], sep = ' '): string[] {
  const widths = columnWidths(rows, columns);
  return rows.map((row) =>
    widths
      .map((w, i) => {
        const cell = row[i] ?? '';
        return columns[i]?.align === 'right' ? cell.padStart(w) : cell.padEnd(w);
      })
      .join(sep)
      .trimEnd(),
  );
}

/** `10.0.0.1:80`, `[fd00::1]:80` (ipvsadm -n). Port 0 (a service on all ports) shows as `:0`, as there. */
export function hostPort(ip: string, port: number): string {
  return `${ip.includes(':') ? `[${ip}]` : ip}:${port}`;
}

/** `TCP`, `UDP` */
export const protoName = (protocol: string): string => protocol.toUpperCase();

/**
 * A counter as ipvsadm's print_largenum shows it: plain below 100 million, then thousands (K)
 * up to a billion, millions (M), billions (G), trillions (T), truncated. `exact` (ipvsadm -X)
 * always prints the whole number. The caller pads; ipvsadm's columns are 8 wide plus a space.
 */
export function largeNum(n: number, exact = false): string {
  const v = Math.max(0, Math.floor(n));
  if (exact || v < 1e8) return String(v);
  if (v < 1e9) return `${Math.floor(v / 1e3)}K`;
  if (v < 1e11) return `${Math.floor(v / 1e6)}M`;
  if (v < 1e14) return `${Math.floor(v / 1e9)}G`;
  return `${Math.floor(v / 1e12)}T`;
}

/** A whole-number rate, as ipvsadm prints its (kernel-estimated, integer) rates. */
const rateNum = (n: number | undefined): number => Math.max(0, Math.round(n ?? 0));

/** ipvsadm's widths: an address column of 28 after `  -> `, the service column 33. */
const ADDRESS_WIDTH = 28;
const BACKEND_PREFIX = '  -> ';
const SERVICE_WIDTH = BACKEND_PREFIX.length + ADDRESS_WIDTH;

// ---------------------------------------------------------------------------------------------
// status: ipvsadm -L -n
// ---------------------------------------------------------------------------------------------

/** The service line as ipvsadm prints it: `TCP  10.0.0.1:80 wlc persistent 300 mask 255.255.255.0`. */
export function serviceLine(s: { protocol: string; vip: string; port: number; scheduler: string; persistence: number; persistenceNetmask?: number }): string {
  let line = `${protoName(s.protocol)}  ${hostPort(s.vip, s.port)} ${s.scheduler}`;
  if (s.persistence > 0) {
    line += ` persistent ${s.persistence}`;
    const v6 = s.vip.includes(':');
    const mask = s.persistenceNetmask ?? (v6 ? 128 : 32);
    if (v6 && mask !== 128) line += ` mask ${mask}`;
    if (!v6 && mask !== 32) line += ` mask ${dottedMask(mask)}`;
  }
  return line;
}

/** 24 -> 255.255.255.0 (ipvsadm shows IPv4 persistence masks dotted). */
export function dottedMask(prefix: number): string {
  const bits = prefix <= 0 ? 0 : (0xffffffff << (32 - Math.min(32, prefix))) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 0xff).join('.');
}

/**
 * The `-L -n` table: ipvsadm's two header lines, a service line per service (free-form, as
 * there) and a backend line per backend in ipvsadm's columns. Extra columns start where
 * ipvsadm's backend line ends: the service's Name under the first, the backend's State and MAC.
 */
export function formatStatusTable(report: Pick<StatusReport, 'services'>): string {
  const backendRows: string[][] = [
    [`${BACKEND_PREFIX}RemoteAddress:Port`, 'Forward', 'Weight', 'ActiveConn', 'InActConn', 'State', 'MAC'],
  ];
  for (const s of report.services) {
    for (const b of s.backends) {
      backendRows.push([
        `${BACKEND_PREFIX}${hostPort(b.ip, b.port)}`,
        b.forward,
        String(b.weight),
        String(b.activeConnections),
        String(b.inactiveConnections),
        b.state,
        b.mac,
      ]);
    }
  }
  // ipvsadm: "  -> %-28s %-7s %-6d %-10u %-10u"
  const columns: ColumnSpec[] = [{ min: SERVICE_WIDTH }, { min: 7 }, { min: 6 }, { min: 10 }, { min: 10 }, { min: 5 }, {}];
  const widths = columnWidths(backendRows, columns);
  const extrasAt = widths.slice(0, 5).reduce((a, w) => a + w + 1, 0);
  const backendLines = alignColumns(backendRows, columns);
  const withExtra = (left: string, extra: string): string => (extra ? `${left.padEnd(extrasAt - 1)} ${extra}` : left);

  const out = [withExtra('Prot LocalAddress:Port Scheduler Flags', 'Name'), backendLines[0]!];
  let i = 1;
  for (const s of report.services) {
    out.push(withExtra(serviceLine(s), s.name));
    for (let j = 0; j < s.backends.length; j++) out.push(backendLines[i++]!);
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// stats: ipvsadm -L -n --stats / --rate
// ---------------------------------------------------------------------------------------------

export interface StatsTableOptions {
  /** --rate: per-second columns (the report must carry rates) */
  rate?: boolean;
  /** --exact: whole numbers, no K/M/G/T */
  exact?: boolean;
  /** --rate: the totals line per second */
  totalsPerSecond?: StatsTotals;
  /** the drop reasons behind totals.dropped, shown when there are drops */
  drops?: DropReasons;
}

export const DR_FOOTNOTE =
  'OutPkts and OutBytes stay 0 in direct routing: replies go from the real servers straight to the clients, never through the director.';
export const DR_RATE_FOOTNOTE =
  'OutPPS and OutBPS stay 0 in direct routing: replies go from the real servers straight to the clients, never through the director.';

function statsCells(e: StatsService | StatsBackend, o: StatsTableOptions, backend: boolean): string[] {
  if (!o.rate) return [e.connections, e.packets, 0, e.bytes, 0].map((n) => largeNum(n, o.exact));
  const cps = rateNum(e.connectionsPerSecond);
  const pps = rateNum(e.packetsPerSecond);
  const bps = rateNum(e.bytesPerSecond);
  // ipvsadm prints a backend's CPS, InPPS and OutPPS with %8u, everything else with print_largenum
  return backend ? [String(cps), String(pps), '0', largeNum(bps, o.exact), '0'] : [cps, pps, 0, bps, 0].map((n) => largeNum(n, o.exact));
}

/**
 * The `--stats` (or `--rate`) table: ipvsadm's header and columns, then the extras (Name for a
 * service, State and MAC for a backend), then a footnote on the Out* columns and the totals.
 */
export function formatStatsTable(report: StatsReport, o: StatsTableOptions = {}): string {
  const heads = o.rate ? ['CPS', 'InPPS', 'OutPPS', 'InBPS', 'OutBPS'] : ['Conns', 'InPkts', 'OutPkts', 'InBytes', 'OutBytes'];
  const rows: string[][] = [
    ['Prot LocalAddress:Port', ...heads, 'Name'],
    [`${BACKEND_PREFIX}RemoteAddress:Port`, '', '', '', '', '', 'State', 'MAC'],
  ];
  for (const s of report.services) {
    rows.push([`${protoName(s.protocol)}  ${hostPort(s.vip, s.port)}`, ...statsCells(s, o, false), s.name]);
    for (const b of s.backends) rows.push([`${BACKEND_PREFIX}${hostPort(b.ip, s.port)}`, ...statsCells(b, o, true), b.state, b.mac]);
  }
  // ipvsadm: "%-33s" then "%9llu" per number: a column of 8 after a one-space separator
  const num: ColumnSpec = { align: 'right', min: 8 };
  const lines = alignColumns(rows, [{ min: SERVICE_WIDTH }, num, num, num, num, num, { min: 5 }, {}]);
  const totals = o.rate ? totalsLine('Totals per second', o.totalsPerSecond ?? { packets: 0, forwarded: 0, passed: 0, dropped: 0 }, rateNum) : totalsLine('Totals', report.totals, (n) => n, o.drops);
  return [...lines, '', o.rate ? DR_RATE_FOOTNOTE : DR_FOOTNOTE, totals].join('\n');
}

function totalsLine(label: string, t: StatsTotals, n: (v: number) => number, drops?: DropReasons): string {
  let why = '';
  if (drops && t.dropped > 0) {
    const parts = [
      drops.fragment > 0 ? `${drops.fragment} IP fragments` : '',
      drops.noBackend > 0 ? `${drops.noBackend} with no backend to take them` : '',
      drops.other > 0 ? `${drops.other} other` : '',
    ].filter(Boolean);
    why = ` (${parts.join(', ')})`;
  }
  // the parts are shown rounded (rates): the whole is their sum, so the line adds up
  const [forwarded, passed, dropped] = [n(t.forwarded), n(t.passed), n(t.dropped)];
  return `${label}: ${forwarded + passed + dropped} packets: ${forwarded} forwarded, ${passed} passed to the kernel, ${dropped} dropped${why}`;
}
