/**
 * services.json → ServicesConfig. Every problem in the file is collected (not just the first) and
 * reported as one UserError whose details are one line per problem, each starting with the JSON
 * path of the offending value: `services[0].backends[1].ip: "10.200.0.300" is not an IPv4 or IPv6 address`.
 *
 * The accepted keys, their types, ranges and defaults live in one table, FIELDS, which both drives
 * the checks here and is compared against schema/services.schema.json by the tests.
 */
import { readFileSync } from 'node:fs';
import { UserError } from '../errors.js';
import {
  formatIp,
  formatMac,
  isMulticastOrBroadcastIp,
  isUnspecifiedIp,
  isV4MappedIp,
  parseIp,
  parseMac,
  type ParsedIp,
} from '../net/addr.js';
import {
  DEFAULT_CONN_TABLE_SIZE,
  DEFAULT_CONN_RECORD_RATE,
  DEFAULT_HEALTH_CHECK,
  DEFAULT_HTTP_PATH,
  DEFAULT_HTTP_STATUS,
  DEFAULT_SCHEDULER,
  DEFAULT_TIMEOUTS,
  HEALTH_CHECK_TYPES,
  MAX_BACKENDS_TOTAL,
  MAX_CONN_TABLE_SIZE,
  MAX_SERVICE_NAME_LENGTH,
  MAX_SERVICES,
  MIN_CONN_TABLE_SIZE,
  PROTOCOLS,
  SCHEDULERS,
  type Backend,
  type HealthCheck,
  type HealthCheckType,
  type Protocol,
  type Scheduler,
  type Service,
  type ServicesConfig,
  type Timeouts,
} from './types.js';

// ---------------------------------------------------------------------------------------------
// The one table of the file format

/** The kinds of JSON object in services.json; `config` is the top level. */
export type ObjectKind = 'config' | 'service' | 'backend' | 'healthCheck' | 'timeouts';

/** One key of one kind of object, in JSON Schema vocabulary so it can be compared with the schema. */
export interface FieldSpec {
  type: 'string' | 'integer' | 'number' | 'array' | 'object';
  required?: boolean;
  /** a constant default; defaults that depend on other fields are applied in code */
  default?: string | number;
  enum?: readonly string[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  pattern?: string;
  maxLength?: number;
  /** strings: which address syntax (checked in code, `format` in the schema) */
  format?: 'ip' | 'mac';
  /** arrays: the kind of object each element is */
  items?: ObjectKind;
  /** objects: which kind of object */
  ref?: ObjectKind;
  /** how to describe an expected value in messages, when the generic description is not enough */
  what?: string;
}

const U32_MAX = 4294967295;

export const FIELDS = {
  config: {
    /** ignored; lets editors find the schema (`"$schema": "node_modules/xdpvs/schema/services.schema.json"`) */
    $schema: { type: 'string' },
    services: { type: 'array', required: true, items: 'service' },
    timeouts: { type: 'object', ref: 'timeouts' },
    connTableSize: {
      type: 'integer',
      minimum: MIN_CONN_TABLE_SIZE,
      maximum: MAX_CONN_TABLE_SIZE,
      default: DEFAULT_CONN_TABLE_SIZE,
    },
    connRecordRate: { type: 'integer', minimum: 1, maximum: U32_MAX, default: DEFAULT_CONN_RECORD_RATE },
  },
  service: {
    name: {
      type: 'string',
      required: true,
      pattern: '^[a-z0-9-]+$',
      maxLength: MAX_SERVICE_NAME_LENGTH,
      what: `a name of a-z, 0-9 and "-", at most ${MAX_SERVICE_NAME_LENGTH} characters`,
    },
    vip: { type: 'string', required: true, format: 'ip' },
    port: { type: 'integer', required: true, minimum: 0, maximum: 65535 },
    protocol: { type: 'string', required: true, enum: PROTOCOLS },
    scheduler: { type: 'string', enum: SCHEDULERS, default: DEFAULT_SCHEDULER },
    persistence: { type: 'integer', minimum: 0, maximum: U32_MAX, default: 0 },
    persistenceNetmask: { type: 'integer', minimum: 0, maximum: 128 },
    backends: { type: 'array', required: true, items: 'backend' },
    healthCheck: { type: 'object', ref: 'healthCheck' },
  },
  backend: {
    ip: { type: 'string', required: true, format: 'ip' },
    weight: { type: 'integer', minimum: 0, maximum: 65535, default: 1 },
    mac: { type: 'string', format: 'mac' },
  },
  healthCheck: {
    type: { type: 'string', enum: HEALTH_CHECK_TYPES, default: DEFAULT_HEALTH_CHECK.type },
    port: { type: 'integer', minimum: 1, maximum: 65535 },
    path: {
      type: 'string',
      pattern: '^/[\\x21-\\x7e]*$',
      default: DEFAULT_HTTP_PATH,
      what: 'a path starting with "/", printable ASCII without spaces',
    },
    expectStatus: { type: 'integer', minimum: 100, maximum: 599, default: DEFAULT_HTTP_STATUS },
    interval: { type: 'number', exclusiveMinimum: 0, maximum: 3600, default: DEFAULT_HEALTH_CHECK.interval },
    timeout: { type: 'number', exclusiveMinimum: 0, maximum: 3600, default: DEFAULT_HEALTH_CHECK.timeout },
    rise: { type: 'integer', minimum: 1, maximum: 100, default: DEFAULT_HEALTH_CHECK.rise },
    fall: { type: 'integer', minimum: 1, maximum: 100, default: DEFAULT_HEALTH_CHECK.fall },
  },
  timeouts: {
    tcp: { type: 'integer', minimum: 1, maximum: U32_MAX, default: DEFAULT_TIMEOUTS.tcp },
    tcpFin: { type: 'integer', minimum: 1, maximum: U32_MAX, default: DEFAULT_TIMEOUTS.tcpFin },
    udp: { type: 'integer', minimum: 1, maximum: U32_MAX, default: DEFAULT_TIMEOUTS.udp },
  },
} as const satisfies Record<ObjectKind, Record<string, FieldSpec>>;

type Key<K extends ObjectKind> = keyof (typeof FIELDS)[K] & string;

// ---------------------------------------------------------------------------------------------
// Public API

/** Reads and validates a services file; every failure is a UserError naming the file. */
export function parseServicesFile(path: string): ServicesConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOENT'
        ? 'no such file'
        : e.code === 'EACCES'
          ? 'permission denied'
          : e.code === 'EISDIR'
            ? 'is a directory, expected a JSON file'
            : `cannot read: ${e.message}`;
    throw new UserError(`${path}: ${why}`);
  }
  return parseServicesText(text, path);
}

/**
 * Parses and validates the text of a services file. A JSON syntax error is reported as
 * `SOURCE:LINE:COLUMN: invalid JSON: REASON` with the offending line and a caret as details;
 * keys that occur twice in one object (which JSON.parse would silently collapse) are errors.
 */
export function parseServicesText(text: string, source = 'services.json'): ServicesConfig {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    const found = locateJsonError(text, (err as Error).message);
    const { line, column } = lineColumn(text, found.offset);
    throw new UserError(`${source}:${line}:${column}: invalid JSON: ${found.reason}`, excerpt(text, line, column));
  }
  const dupErrors = duplicateKeys(text).map(
    (d) => `${d.path}: key appears more than once (line ${d.first} and line ${d.again}); JSON keeps only the last`,
  );
  return finish(check(raw, dupErrors), source);
}

/** Validates an already parsed document and fills in every default. */
export function validateServices(raw: unknown, source = 'services.json'): ServicesConfig {
  return finish(check(raw, []), source);
}

function finish(result: { config?: ServicesConfig; errors: string[] }, source: string): ServicesConfig {
  if (result.errors.length > 0 || !result.config) {
    const n = result.errors.length;
    throw new UserError(`${source}: ${n} error${n === 1 ? '' : 's'}`, result.errors);
  }
  return result.config;
}

// ---------------------------------------------------------------------------------------------
// Messages

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function child(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  if (IDENT.test(key)) return path === '' ? key : `${path}.${key}`;
  return `${path}[${JSON.stringify(key)}]`;
}

function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** "found ..." text for a value of the wrong type. */
function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${show(v)}`;
}

function expected(spec: FieldSpec): string {
  if (spec.what) return spec.what;
  switch (spec.type) {
    case 'array':
      return 'an array';
    case 'object':
      return 'an object';
    case 'string':
      if (spec.enum) return `one of ${spec.enum.map((e) => JSON.stringify(e)).join(', ')}`;
      if (spec.format === 'ip') return 'an IPv4 or IPv6 address string';
      if (spec.format === 'mac') return 'a MAC address string like "02:00:00:00:00:12"';
      return 'a string';
    case 'integer':
    case 'number': {
      const noun = spec.type === 'integer' ? 'an integer' : 'a number';
      if (spec.exclusiveMinimum !== undefined) {
        return `${noun} > ${spec.exclusiveMinimum}${spec.maximum !== undefined ? ` and <= ${spec.maximum}` : ''}`;
      }
      if (spec.minimum !== undefined && spec.maximum !== undefined) return `${noun} ${spec.minimum}-${spec.maximum}`;
      if (spec.minimum !== undefined) return `${noun} >= ${spec.minimum}`;
      return noun;
    }
  }
}

/** Optimal-string-alignment distance (Levenshtein plus adjacent transpositions). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = [];
  for (let i = 0; i <= a.length; i++) d.push([i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The closest candidate (ignoring case) within edit distance 1, or 2 for candidates of six or more
 * characters, so that `weigth` finds `weight` but `icmp` does not pretend to be `tcp`.
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  if (word.length > 64) return undefined;
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d <= (c.length >= 6 ? 2 : 1) && d < c.length && d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best;
}

/** Keys people plausibly write that have no place in the format, with the reason. */
const NOT_SUPPORTED: Partial<Record<ObjectKind, Record<string, string>>> = {
  backend: {
    port: 'direct routing cannot change the destination port: backends receive packets on the service port',
  },
};

/** The message for a key that `kind` does not have, with the most useful hint available. */
function unknownKey(kind: ObjectKind, key: string, path: string): string {
  const notes = NOT_SUPPORTED[kind];
  if (notes && has(notes, key)) return `unknown key (${notes[key]})`;
  const known = Object.keys(FIELDS[kind]);
  const guess = closest(key, known);
  if (guess) return `unknown key (did you mean ${JSON.stringify(guess)}?)`;
  // a key of an object nested one level down, written at the wrong level
  const nested = (Object.entries(FIELDS[kind]) as Array<[string, FieldSpec]>).flatMap(([f, spec]) => {
    const sub = spec.items ?? spec.ref;
    if (!sub) return [];
    return [{ keys: Object.keys(FIELDS[sub]), where: spec.items ? `each entry of ${child(path, f)}` : child(path, f) }];
  });
  for (const n of nested) {
    if (n.keys.includes(key)) return `unknown key (${JSON.stringify(key)} belongs in ${n.where})`;
  }
  for (const n of nested) {
    const g = closest(key, n.keys);
    if (g) return `unknown key (did you mean ${JSON.stringify(g)}? It belongs in ${n.where})`;
  }
  return `unknown key, expected one of: ${known.join(', ')}`;
}

// ---------------------------------------------------------------------------------------------
// Checking

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function has(o: Obj, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, key);
}

class Checker {
  readonly errors: string[] = [];

  err(path: string, msg: string): void {
    this.errors.push(`${path === '' ? '(top level)' : path}: ${msg}`);
  }

  /** Checks that `v` is an object of `kind` with no unknown keys; returns it or undefined. */
  object(v: unknown, kind: ObjectKind, path: string): Obj | undefined {
    if (!isObj(v)) {
      this.err(path, `expected an object, found ${describe(v)}`);
      return undefined;
    }
    const known = Object.keys(FIELDS[kind]);
    for (const key of Object.keys(v)) {
      if (!known.includes(key)) this.err(child(path, key), unknownKey(kind, key, path));
    }
    return v;
  }

  /**
   * The value of one field after the table's type, range, enum and pattern checks, with the
   * table's default when absent. undefined = absent without default, or invalid (already reported).
   */
  field<K extends ObjectKind>(o: Obj, kind: K, key: Key<K>, path: string): unknown {
    const spec = FIELDS[kind][key] as FieldSpec;
    const p = child(path, key);
    if (!has(o, key) || o[key] === undefined) {
      if (spec.required) this.err(p, `missing (expected ${expected(spec)})`);
      return spec.default;
    }
    const v = o[key];
    const wrongType = (): undefined => {
      this.err(p, `expected ${expected(spec)}, found ${describe(v)}`);
      return undefined;
    };
    switch (spec.type) {
      case 'array':
        return Array.isArray(v) ? v : wrongType();
      case 'object':
        return isObj(v) ? v : wrongType();
      case 'string': {
        if (typeof v !== 'string') return wrongType();
        if (spec.enum && !spec.enum.includes(v)) {
          const guess = closest(v, spec.enum);
          this.err(
            p,
            `${show(v)} is not one of ${spec.enum.map((e) => JSON.stringify(e)).join(', ')}` +
              (guess ? ` (did you mean ${JSON.stringify(guess)}?)` : ''),
          );
          return undefined;
        }
        if (spec.maxLength !== undefined && v.length > spec.maxLength) {
          this.err(p, `${show(v)} is ${v.length} characters long, at most ${spec.maxLength} are allowed`);
          return undefined;
        }
        if (spec.pattern !== undefined && !new RegExp(spec.pattern).test(v)) {
          this.err(p, v === '' ? `must not be empty (expected ${expected(spec)})` : `${show(v)} is not ${expected(spec)}`);
          return undefined;
        }
        return v;
      }
      case 'integer':
      case 'number': {
        if (typeof v !== 'number' || !Number.isFinite(v) || (spec.type === 'integer' && !Number.isInteger(v))) {
          return wrongType();
        }
        const low =
          (spec.minimum !== undefined && v < spec.minimum) ||
          (spec.exclusiveMinimum !== undefined && v <= spec.exclusiveMinimum);
        if (low || (spec.maximum !== undefined && v > spec.maximum)) {
          this.err(p, `${v} is out of range (expected ${expected(spec)})`);
          return undefined;
        }
        return v;
      }
    }
  }

  /** An address field: syntax, then the addresses that can never be a VIP or a real server. */
  address(v: unknown, path: string): ParsedIp | undefined {
    if (typeof v !== 'string') return undefined;
    const ip = parseIp(v);
    if (!ip) {
      this.err(path, `${show(v)} is not an IPv4 or IPv6 address`);
      return undefined;
    }
    if (isV4MappedIp(ip.bytes)) {
      this.err(path, `${show(v)} is an IPv4-mapped IPv6 address, write ${show(formatIp(ip.bytes.subarray(12)))}`);
      return undefined;
    }
    if (isUnspecifiedIp(ip.bytes)) {
      this.err(path, `${show(v)} is the unspecified address`);
      return undefined;
    }
    if (isMulticastOrBroadcastIp(ip.bytes)) {
      this.err(path, `${show(v)} is a multicast or broadcast address`);
      return undefined;
    }
    return ip;
  }
}

interface SeenService {
  path: string;
  name: string | undefined;
}

function check(raw: unknown, preErrors: string[]): { config?: ServicesConfig; errors: string[] } {
  const c = new Checker();
  c.errors.push(...preErrors);
  const top = c.object(raw, 'config', '');
  if (!top) return { errors: c.errors };

  c.field(top, 'config', '$schema', '');
  const rawServices = c.field(top, 'config', 'services', '') as unknown[] | undefined;
  const connTableSize = c.field(top, 'config', 'connTableSize', '') as number | undefined;
  const connRecordRate = c.field(top, 'config', 'connRecordRate', '') as number | undefined;
  const timeouts = checkTimeouts(c, top);

  const services: Service[] = [];
  if (rawServices) {
    if (rawServices.length > MAX_SERVICES) {
      c.err('services', `${rawServices.length} services, at most ${MAX_SERVICES} are supported`);
    }
    const names = new Map<string, string>();
    const endpoints = new Map<string, SeenService>();
    let backendsTotal = 0;
    rawServices.forEach((s, i) => {
      const svc = checkService(c, s, child('services', i), names, endpoints);
      if (svc) services.push(svc);
      if (isObj(s) && Array.isArray(s.backends)) backendsTotal += s.backends.length;
    });
    if (backendsTotal > MAX_BACKENDS_TOTAL) {
      c.err('services', `${backendsTotal} backends in all, at most ${MAX_BACKENDS_TOTAL} are supported`);
    }
  }

  if (c.errors.length > 0 || !rawServices || connTableSize === undefined || connRecordRate === undefined || !timeouts) return { errors: c.errors };
  return { config: { services, timeouts, connTableSize, connRecordRate }, errors: [] };
}

function checkTimeouts(c: Checker, top: Obj): Timeouts | undefined {
  if (!has(top, 'timeouts')) return { ...DEFAULT_TIMEOUTS };
  const t = c.object(top.timeouts, 'timeouts', 'timeouts');
  if (!t) return undefined;
  const tcp = c.field(t, 'timeouts', 'tcp', 'timeouts') as number | undefined;
  const tcpFin = c.field(t, 'timeouts', 'tcpFin', 'timeouts') as number | undefined;
  const udp = c.field(t, 'timeouts', 'udp', 'timeouts') as number | undefined;
  if (tcp === undefined || tcpFin === undefined || udp === undefined) return undefined;
  return { tcp, tcpFin, udp };
}

function checkService(
  c: Checker,
  raw: unknown,
  path: string,
  names: Map<string, string>,
  endpoints: Map<string, SeenService>,
): Service | undefined {
  const before = c.errors.length;
  const o = c.object(raw, 'service', path);
  if (!o) return undefined;

  const name = c.field(o, 'service', 'name', path) as string | undefined;
  if (name !== undefined) {
    const first = names.get(name);
    if (first !== undefined) c.err(child(path, 'name'), `${show(name)} is already used by ${first}`);
    else names.set(name, path);
  }

  const vipRaw = c.field(o, 'service', 'vip', path);
  const vip = c.address(vipRaw, child(path, 'vip'));
  const port = c.field(o, 'service', 'port', path) as number | undefined;
  const protocol = c.field(o, 'service', 'protocol', path) as Protocol | undefined;
  const scheduler = c.field(o, 'service', 'scheduler', path) as Scheduler | undefined;
  const persistence = c.field(o, 'service', 'persistence', path) as number | undefined;

  if (vip && port !== undefined && protocol !== undefined) {
    const address = formatIp(vip.bytes);
    const key = `${address} ${port} ${protocol}`;
    const first = endpoints.get(key);
    if (first) {
      const firstName = first.name !== undefined ? ` (${show(first.name)})` : '';
      c.err(
        path,
        `vip ${show(address)} port ${port} protocol ${show(protocol)} is already defined by ${first.path}${firstName}`,
      );
    } else {
      endpoints.set(key, { path, name });
    }
  }

  let persistenceNetmask = c.field(o, 'service', 'persistenceNetmask', path) as number | undefined;
  if (vip) {
    const bits = vip.family === 4 ? 32 : 128;
    if (!has(o, 'persistenceNetmask')) persistenceNetmask = bits;
    else if (persistenceNetmask !== undefined && persistenceNetmask > bits) {
      c.err(
        child(path, 'persistenceNetmask'),
        `${persistenceNetmask} is out of range for an IPv${vip.family} VIP (expected an integer 0-${bits})`,
      );
    }
  }

  const backendsRaw = c.field(o, 'service', 'backends', path) as unknown[] | undefined;
  const backends: Backend[] = [];
  if (backendsRaw) {
    const seen = new Map<string, string>();
    backendsRaw.forEach((b, i) => {
      const be = checkBackend(c, b, child(child(path, 'backends'), i), vip, vipRaw, child(path, 'vip'), seen);
      if (be) backends.push(be);
    });
  }

  const healthCheck = checkHealthCheck(c, o, path, port);

  if (c.errors.length !== before) return undefined;
  return {
    name: name!,
    vip: { family: vip!.family, address: formatIp(vip!.bytes), bytes: vip!.bytes },
    port: port!,
    protocol: protocol!,
    scheduler: scheduler!,
    persistence: persistence!,
    persistenceNetmask: persistenceNetmask!,
    backends,
    healthCheck: healthCheck!,
  };
}

function checkBackend(
  c: Checker,
  raw: unknown,
  path: string,
  vip: ParsedIp | undefined,
  vipRaw: unknown,
  vipPath: string,
  seen: Map<string, string>,
): Backend | undefined {
  const before = c.errors.length;
  const o = c.object(raw, 'backend', path);
  if (!o) return undefined;
  const ipPath = child(path, 'ip');
  const ipRaw = c.field(o, 'backend', 'ip', path);
  const ip = c.address(ipRaw, ipPath);
  const weight = c.field(o, 'backend', 'weight', path) as number | undefined;
  const macRaw = c.field(o, 'backend', 'mac', path) as string | undefined;

  if (ip) {
    const canonical = formatIp(ip.bytes);
    const given = (ipRaw as string) === canonical ? show(ipRaw) : `${show(ipRaw)} (${canonical})`;
    if (vip && vip.family !== ip.family) {
      c.err(ipPath, `${given} is IPv${ip.family} but the VIP ${show(vipRaw)} (${vipPath}) is IPv${vip.family}`);
    } else if (vip && vip.bytes.equals(ip.bytes)) {
      c.err(ipPath, `${given} is the service's own VIP (${vipPath}); a backend must be another host`);
    }
    const first = seen.get(canonical);
    if (first !== undefined) c.err(ipPath, `${given} duplicates ${first}`);
    else seen.set(canonical, ipPath);
  }

  let mac: string | undefined;
  if (macRaw !== undefined) {
    const bytes = parseMac(macRaw);
    if (!bytes) {
      c.err(child(path, 'mac'), `${show(macRaw)} is not a MAC address like "02:00:00:00:00:12"`);
    } else if ((bytes[0]! & 1) === 1 || bytes.every((b) => b === 0)) {
      c.err(child(path, 'mac'), `${show(macRaw)} is not a unicast MAC address`);
    } else {
      mac = formatMac(bytes);
    }
  }

  if (c.errors.length !== before || !ip || weight === undefined) return undefined;
  const be: Backend = { ip: formatIp(ip.bytes), family: ip.family, bytes: ip.bytes, weight };
  if (mac !== undefined) be.mac = mac;
  return be;
}

function checkHealthCheck(c: Checker, svc: Obj, svcPath: string, servicePort: number | undefined): HealthCheck | undefined {
  const path = child(svcPath, 'healthCheck');
  const portPath = child(path, 'port');
  const needPort = `missing, required because ${child(svcPath, 'port')} is 0 (all ports); give a port or use "type": "none"`;
  if (!has(svc, 'healthCheck')) {
    if (servicePort === undefined) return undefined;
    if (servicePort === 0) {
      c.err(portPath, needPort);
      return undefined;
    }
    return { ...DEFAULT_HEALTH_CHECK, port: servicePort };
  }
  const before = c.errors.length;
  const o = c.object(svc.healthCheck, 'healthCheck', path);
  if (!o) return undefined;

  const type = c.field(o, 'healthCheck', 'type', path) as HealthCheckType | undefined;
  let port = c.field(o, 'healthCheck', 'port', path) as number | undefined;
  const hcPath = c.field(o, 'healthCheck', 'path', path) as string | undefined;
  const expectStatus = c.field(o, 'healthCheck', 'expectStatus', path) as number | undefined;
  const interval = c.field(o, 'healthCheck', 'interval', path) as number | undefined;
  const timeout = c.field(o, 'healthCheck', 'timeout', path) as number | undefined;
  const rise = c.field(o, 'healthCheck', 'rise', path) as number | undefined;
  const fall = c.field(o, 'healthCheck', 'fall', path) as number | undefined;

  if (type !== undefined && type !== 'none' && !has(o, 'port') && servicePort !== undefined) {
    if (servicePort === 0) c.err(portPath, needPort);
    else port = servicePort;
  }
  if (type !== undefined && type !== 'http') {
    for (const k of ['path', 'expectStatus'] as const) {
      if (has(o, k)) c.err(child(path, k), `only allowed when type is "http", not ${show(type)}`);
    }
  }
  if (interval !== undefined && timeout !== undefined && timeout > interval) {
    c.err(child(path, 'timeout'), `${timeout} must not exceed interval ${interval}`);
  }

  if (c.errors.length !== before || type === undefined) return undefined;
  const hc: HealthCheck = { type, interval: interval!, timeout: timeout!, rise: rise!, fall: fall! };
  if (port !== undefined) hc.port = port;
  if (type === 'http') {
    hc.path = hcPath!;
    hc.expectStatus = expectStatus!;
  }
  return hc;
}

// ---------------------------------------------------------------------------------------------
// JSON text: where a syntax error is, and keys that occur twice

class JsonSyntax extends Error {
  constructor(
    readonly offset: number,
    readonly reason: string,
  ) {
    super(reason);
  }
}

interface DuplicateKey {
  path: string;
  first: number;
  again: number;
}

/** A strict JSON scanner (RFC 8259) that tracks the path of every value. */
class JsonScanner {
  private i = 0;
  private depth = 0;
  readonly duplicates: DuplicateKey[] = [];

  constructor(private readonly t: string) {}

  run(): void {
    this.value('');
    this.ws();
    if (this.i < this.t.length) this.fail(`expected end of file after the JSON value, found ${this.what()}`);
  }

  private fail(reason: string, at = this.i): never {
    throw new JsonSyntax(at, reason);
  }

  private ws(): void {
    const t = this.t;
    while (this.i < t.length && (t[this.i] === ' ' || t[this.i] === '\t' || t[this.i] === '\n' || t[this.i] === '\r')) {
      this.i++;
    }
  }

  /** A description of what is at the cursor, for "found ..." messages. */
  private what(): string {
    const t = this.t;
    if (this.i >= t.length) return 'end of file';
    const ch = t[this.i]!;
    if (ch === '/' && (t[this.i + 1] === '/' || t[this.i + 1] === '*')) return 'a comment (JSON has no comments)';
    const word = /[A-Za-z_$][A-Za-z0-9_$]*/y;
    word.lastIndex = this.i;
    const m = word.exec(t);
    if (m) return `"${m[0].length > 20 ? `${m[0].slice(0, 20)}...` : m[0]}"`;
    const code = ch.charCodeAt(0);
    if (code < 0x20 || code === 0x7f) return `control character U+${code.toString(16).padStart(4, '0').toUpperCase()}`;
    return `'${ch}'`;
  }

  private value(path: string): void {
    this.ws();
    const t = this.t;
    const ch = t[this.i];
    if (ch === '{') return this.object(path);
    if (ch === '[') return this.array(path);
    if (ch === '"') {
      this.string();
      return;
    }
    if (ch === '-' || (ch !== undefined && ch >= '0' && ch <= '9')) return this.number();
    for (const lit of ['true', 'false', 'null']) {
      if (t.startsWith(lit, this.i) && !/[A-Za-z0-9_$]/.test(t[this.i + lit.length] ?? '')) {
        this.i += lit.length;
        return;
      }
    }
    if (ch === "'") this.fail('strings must be in double quotes');
    if (ch !== undefined && /[A-Za-z_$]/.test(ch)) {
      this.fail(`expected a value, found ${this.what()} (strings must be in double quotes)`);
    }
    this.fail(`expected a value, found ${this.what()}`);
  }

  private enter(): void {
    if (++this.depth > 1000) this.fail('nested too deeply');
    this.i++;
    this.ws();
  }

  private object(path: string): void {
    this.enter();
    const t = this.t;
    const seen = new Map<string, number>();
    if (t[this.i] === '}') {
      this.i++;
      this.depth--;
      return;
    }
    let comma = -1;
    for (;;) {
      this.ws();
      if (t[this.i] !== '"') {
        if (t[this.i] === '}' && comma >= 0) this.fail("trailing comma before '}'", comma);
        if (t[this.i] === "'") this.fail('property names must be in double quotes');
        this.fail(`expected a double-quoted property name, found ${this.what()}`);
      }
      const keyAt = this.i;
      const key = this.string();
      this.ws();
      if (t[this.i] !== ':') this.fail(`expected ':' after property name, found ${this.what()}`);
      this.i++;
      const p = child(path, key);
      const first = seen.get(key);
      if (first !== undefined) this.duplicates.push({ path: p, first, again: keyAt });
      else seen.set(key, keyAt);
      this.value(p);
      this.ws();
      if (t[this.i] === ',') {
        comma = this.i++;
        continue;
      }
      if (t[this.i] === '}') {
        this.i++;
        this.depth--;
        return;
      }
      this.fail(`expected ',' or '}' after property value, found ${this.what()}`);
    }
  }

  private array(path: string): void {
    this.enter();
    const t = this.t;
    if (t[this.i] === ']') {
      this.i++;
      this.depth--;
      return;
    }
    let comma = -1;
    for (let n = 0; ; n++) {
      this.ws();
      if (t[this.i] === ']' && comma >= 0) this.fail("trailing comma before ']'", comma);
      this.value(child(path, n));
      this.ws();
      if (t[this.i] === ',') {
        comma = this.i++;
        continue;
      }
      if (t[this.i] === ']') {
        this.i++;
        this.depth--;
        return;
      }
      this.fail(`expected ',' or ']' after array element, found ${this.what()}`);
    }
  }

  private string(): string {
    const t = this.t;
    const start = this.i++;
    let out = '';
    for (;;) {
      if (this.i >= t.length) this.fail('unterminated string', start);
      const ch = t[this.i]!;
      if (ch === '"') {
        this.i++;
        return out;
      }
      if (ch === '\n' || ch === '\r') this.fail('unterminated string (line break inside a string)', start);
      if (ch.charCodeAt(0) < 0x20) this.fail(`${this.what()} inside a string must be escaped`);
      if (ch !== '\\') {
        out += ch;
        this.i++;
        continue;
      }
      const e = t[this.i + 1];
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e !== undefined && simple[e] !== undefined) {
        out += simple[e];
        this.i += 2;
      } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(t.slice(this.i + 2, this.i + 6))) {
        out += String.fromCharCode(parseInt(t.slice(this.i + 2, this.i + 6), 16));
        this.i += 6;
      } else {
        this.fail(`invalid escape ${JSON.stringify(t.slice(this.i, this.i + 2))} in string`);
      }
    }
  }

  private number(): void {
    const re = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
    re.lastIndex = this.i;
    const m = re.exec(this.t);
    const next = m ? this.t[this.i + m[0].length] : undefined;
    if (!m || (next !== undefined && /[0-9.eE+\-xX]/.test(next))) {
      const tok = /[-+0-9A-Za-z.]*/y;
      tok.lastIndex = this.i;
      this.fail(`invalid number ${JSON.stringify(tok.exec(this.t)![0])}`);
    }
    this.i += m[0].length;
  }
}

/** Where and why JSON.parse failed: from the scanner, else from V8's message. */
function locateJsonError(text: string, v8Message: string): { offset: number; reason: string } {
  try {
    new JsonScanner(text).run();
  } catch (err) {
    if (err instanceof JsonSyntax) return { offset: err.offset, reason: err.reason };
    if (!(err instanceof RangeError)) throw err;
  }
  const pos = /at position (\d+)/.exec(v8Message);
  return {
    offset: pos ? Math.min(Number(pos[1]), text.length) : text.length,
    reason: v8Message.replace(/ in JSON at position \d+.*$/, ''),
  };
}

function duplicateKeys(text: string): Array<{ path: string; first: string; again: string }> {
  const s = new JsonScanner(text);
  try {
    s.run();
  } catch {
    return []; // JSON.parse accepted it; nothing reliable to add
  }
  const at = (offset: number): string => {
    const { line, column } = lineColumn(text, offset);
    return `${line}:${column}`;
  };
  return s.duplicates.map((d) => ({ path: d.path, first: at(d.first), again: at(d.again) }));
}

/** The line of an error and a caret under its column; long (minified) lines are cut around it. */
function excerpt(text: string, line: number, column: number): [string, string] {
  let src = text.split('\n')[line - 1]?.replace(/\r$/, '') ?? '';
  let col = column;
  const WIDTH = 100;
  if (src.length > WIDTH) {
    const start = Math.max(0, col - 1 - WIDTH / 2);
    const cut = src.slice(start, start + WIDTH);
    src = (start > 0 ? '...' : '') + cut + (start + WIDTH < src.length ? '...' : '');
    col = col - start + (start > 0 ? 3 : 0);
  }
  return [src, src.slice(0, col - 1).replace(/[^\t]/g, ' ') + '^'];
}

/** 1-based line and column (in UTF-16 units) of an offset. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}
