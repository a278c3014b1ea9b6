/**
 * The one module that knows libbpf's C ABI (the system libbpf.so.1, written against libbpf 1.1).
 *
 * Everything that talks to the kernel's BPF subsystem goes through here: opening and loading
 * ELF objects, map and program file descriptors, pinning, test runs and XDP attachment.
 * No other file in xdpvs should import koffi.
 *
 * Conventions of libbpf 1.x that this module relies on:
 *  - int-returning APIs return a negative errno on failure (and also set errno);
 *  - pointer-returning APIs return NULL and set errno;
 *  - every `*_opts` struct starts with `size_t sz`, which must be set to sizeof(struct) — the
 *    layouts below are those of libbpf 1.1's bpf.h / libbpf.h (checked against the C compiler).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import koffi from 'koffi';
import { UserError } from './errors.js';

// ---------------------------------------------------------------------------------------------
// Constants (values from linux/bpf.h and linux/if_link.h)
// ---------------------------------------------------------------------------------------------

/** Map update flags. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
export const BPF_F_LOCK = 4;

/** Map creation flags (the ones xdpvs may use). */
export const BPF_F_NO_PREALLOC = 1 << 0;
export const BPF_F_NUMA_NODE = 1 << 2;
export const BPF_F_RDONLY_PROG = 1 << 7;
export const BPF_F_WRONLY_PROG = 1 << 8;
/** On an inner map (and the outer map's inner template): allow inner maps of other max_entries. */
export const BPF_F_INNER_MAP = 1 << 12;

/** enum bpf_map_type, by the names xdpvs uses. */
export const MapType = {
  hash: 1,
  array: 2,
  prog_array: 3,
  perf_event_array: 4,
  percpu_hash: 5,
  percpu_array: 6,
  lru_hash: 9,
  lru_percpu_hash: 10,
  lpm_trie: 11,
  array_of_maps: 12,
  hash_of_maps: 13,
  devmap: 14,
  cpumap: 16,
  xskmap: 17,
  devmap_hash: 25,
  ringbuf: 27,
  bloom_filter: 30,
} as const;
export type MapTypeName = keyof typeof MapType;

/** enum bpf_prog_type (a few). */
export const ProgType = { socket_filter: 1, sched_cls: 3, xdp: 6 } as const;

/** XDP verdicts (enum xdp_action). */
export const XdpAction = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;

const XDP_FLAGS_SKB_MODE = 1 << 1;
const XDP_FLAGS_DRV_MODE = 1 << 2;
const XDP_FLAGS_HW_MODE = 1 << 3;
const XDP_FLAGS_REPLACE = 1 << 4;
/* enum XDP_ATTACHED_* (IFLA_XDP_ATTACHED) */
const XDP_ATTACHED_NONE = 0;
const XDP_ATTACHED_DRV = 1;
const XDP_ATTACHED_SKB = 2;
const XDP_ATTACHED_HW = 3;
const XDP_ATTACHED_MULTI = 4;

/* enum libbpf_print_level: LIBBPF_WARN = 0, LIBBPF_INFO = 1, LIBBPF_DEBUG = 2 */
const LIBBPF_INFO = 1;
const LIBBPF_DEBUG = 2;

const CLONE_NEWNET = 0x40000000;
/** Kernel-internal errno that leaks out of BPF syscalls ("Unknown error 524"). */
const ENOTSUPP = 524;

const E = os.constants.errno;

// ---------------------------------------------------------------------------------------------
// C declarations
// ---------------------------------------------------------------------------------------------

const libbpf = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');

const bpf_object = koffi.opaque();
const bpf_map = koffi.opaque();
const bpf_program = koffi.opaque();
const objectPtr = koffi.pointer(bpf_object);
const mapPtr = koffi.pointer(bpf_map);
const programPtr = koffi.pointer(bpf_program);
const u32InOut = koffi.inout(koffi.pointer('uint32_t'));

/** struct bpf_map_create_opts (bpf.h, libbpf 1.1) — 48 bytes */
const MapCreateOpts = koffi.struct({
  sz: 'size_t',
  btf_fd: 'uint32_t',
  btf_key_type_id: 'uint32_t',
  btf_value_type_id: 'uint32_t',
  btf_vmlinux_value_type_id: 'uint32_t',
  inner_map_fd: 'uint32_t',
  map_flags: 'uint32_t',
  map_extra: 'uint64_t',
  numa_node: 'uint32_t',
  map_ifindex: 'uint32_t',
});

/** struct bpf_map_batch_opts (bpf.h) — 24 bytes */
const MapBatchOpts = koffi.struct({
  sz: 'size_t',
  elem_flags: 'uint64_t',
  flags: 'uint64_t',
});

/** struct bpf_test_run_opts (bpf.h, libbpf 1.1) — 80 bytes */
const TestRunOpts = koffi.struct({
  sz: 'size_t',
  data_in: 'void *',
  data_out: 'void *',
  data_size_in: 'uint32_t',
  data_size_out: 'uint32_t',
  ctx_in: 'void *',
  ctx_out: 'void *',
  ctx_size_in: 'uint32_t',
  ctx_size_out: 'uint32_t',
  retval: 'uint32_t',
  repeat: 'int',
  duration: 'uint32_t',
  flags: 'uint32_t',
  cpu: 'uint32_t',
  batch_size: 'uint32_t',
});

/** struct bpf_xdp_attach_opts (libbpf.h) — 16 bytes (trailing `size_t :0`) */
const XdpAttachOpts = koffi.struct({
  sz: 'size_t',
  old_prog_fd: 'int',
});

/** struct bpf_xdp_query_opts (libbpf.h, libbpf 1.1) — 32 bytes (trailing `size_t :0`) */
const XdpQueryOpts = koffi.struct({
  sz: 'size_t',
  prog_id: 'uint32_t',
  drv_prog_id: 'uint32_t',
  hw_prog_id: 'uint32_t',
  skb_prog_id: 'uint32_t',
  attach_mode: 'uint8_t',
  _pad: koffi.array('uint8_t', 7),
});

/** struct bpf_map_info (linux/bpf.h, as of 6.1 uapi) — 88 bytes; newer kernels only append. */
const BpfMapInfo = koffi.struct({
  type: 'uint32_t',
  id: 'uint32_t',
  key_size: 'uint32_t',
  value_size: 'uint32_t',
  max_entries: 'uint32_t',
  map_flags: 'uint32_t',
  name: koffi.array('char', 16),
  ifindex: 'uint32_t',
  btf_vmlinux_value_type_id: 'uint32_t',
  netns_dev: 'uint64_t',
  netns_ino: 'uint64_t',
  btf_id: 'uint32_t',
  btf_key_type_id: 'uint32_t',
  btf_value_type_id: 'uint32_t',
  _pad: 'uint32_t',
  map_extra: 'uint64_t',
});

/** struct bpf_prog_info (linux/bpf.h, as of 6.1 uapi) — 232 bytes. Pointer members stay 0. */
const BpfProgInfo = koffi.struct({
  type: 'uint32_t',
  id: 'uint32_t',
  tag: koffi.array('uint8_t', 8),
  jited_prog_len: 'uint32_t',
  xlated_prog_len: 'uint32_t',
  jited_prog_insns: 'uint64_t',
  xlated_prog_insns: 'uint64_t',
  load_time: 'uint64_t',
  created_by_uid: 'uint32_t',
  nr_map_ids: 'uint32_t',
  map_ids: 'uint64_t',
  name: koffi.array('char', 16),
  ifindex: 'uint32_t',
  gpl_compatible: 'uint32_t', // bitfield :1, then 31 bits of padding
  netns_dev: 'uint64_t',
  netns_ino: 'uint64_t',
  nr_jited_ksyms: 'uint32_t',
  nr_jited_func_lens: 'uint32_t',
  jited_ksyms: 'uint64_t',
  jited_func_lens: 'uint64_t',
  btf_id: 'uint32_t',
  func_info_rec_size: 'uint32_t',
  func_info: 'uint64_t',
  nr_func_info: 'uint32_t',
  nr_line_info: 'uint32_t',
  line_info: 'uint64_t',
  jited_line_info: 'uint64_t',
  nr_jited_line_info: 'uint32_t',
  line_info_rec_size: 'uint32_t',
  jited_line_info_rec_size: 'uint32_t',
  nr_prog_tags: 'uint32_t',
  prog_tags: 'uint64_t',
  run_time_ns: 'uint64_t',
  run_cnt: 'uint64_t',
  recursion_misses: 'uint64_t',
  verified_insns: 'uint32_t',
  attach_btf_obj_id: 'uint32_t',
  attach_btf_id: 'uint32_t',
  _pad: 'uint32_t',
});

for (const [type, size] of [
  [MapCreateOpts, 48],
  [MapBatchOpts, 24],
  [TestRunOpts, 80],
  [XdpAttachOpts, 16],
  [XdpQueryOpts, 32],
  [BpfMapInfo, 88],
  [BpfProgInfo, 232],
] as const) {
  if (koffi.sizeof(type) !== size) throw new Error(`libbpf.ts: struct layout mismatch (${koffi.sizeof(type)} != ${size})`);
}

/** typedef int (*libbpf_print_fn_t)(enum libbpf_print_level level, const char *fmt, va_list ap); */
const PrintFn = koffi.proto('int', ['int', 'void *', 'void *']);

const C = {
  // libbpf.h
  libbpf_set_print: libbpf.func('libbpf_set_print', 'void *', [koffi.pointer(PrintFn)]),
  libbpf_strerror: libbpf.func('libbpf_strerror', 'int', ['int', 'void *', 'size_t']),
  libbpf_num_possible_cpus: libbpf.func('libbpf_num_possible_cpus', 'int', []),
  bpf_object__open_file: libbpf.func('bpf_object__open_file', objectPtr, ['str', 'void *']),
  bpf_object__load: libbpf.func('bpf_object__load', 'int', [objectPtr]),
  bpf_object__close: libbpf.func('bpf_object__close', 'void', [objectPtr]),
  bpf_object__find_map_by_name: libbpf.func('bpf_object__find_map_by_name', mapPtr, [objectPtr, 'str']),
  bpf_object__next_map: libbpf.func('bpf_object__next_map', mapPtr, [objectPtr, mapPtr]),
  bpf_object__find_program_by_name: libbpf.func('bpf_object__find_program_by_name', programPtr, [objectPtr, 'str']),
  bpf_object__next_program: libbpf.func('bpf_object__next_program', programPtr, [objectPtr, programPtr]),
  bpf_map__name: libbpf.func('bpf_map__name', 'str', [mapPtr]),
  bpf_map__fd: libbpf.func('bpf_map__fd', 'int', [mapPtr]),
  bpf_map__reuse_fd: libbpf.func('bpf_map__reuse_fd', 'int', [mapPtr, 'int']),
  bpf_map__set_max_entries: libbpf.func('bpf_map__set_max_entries', 'int', [mapPtr, 'uint32_t']),
  bpf_map__type: libbpf.func('bpf_map__type', 'int', [mapPtr]),
  bpf_map__key_size: libbpf.func('bpf_map__key_size', 'uint32_t', [mapPtr]),
  bpf_map__value_size: libbpf.func('bpf_map__value_size', 'uint32_t', [mapPtr]),
  bpf_map__max_entries: libbpf.func('bpf_map__max_entries', 'uint32_t', [mapPtr]),
  bpf_map__map_flags: libbpf.func('bpf_map__map_flags', 'uint32_t', [mapPtr]),
  bpf_program__name: libbpf.func('bpf_program__name', 'str', [programPtr]),
  bpf_program__fd: libbpf.func('bpf_program__fd', 'int', [programPtr]),
  bpf_program__set_log_level: libbpf.func('bpf_program__set_log_level', 'int', [programPtr, 'uint32_t']),
  bpf_program__set_log_buf: libbpf.func('bpf_program__set_log_buf', 'int', [programPtr, 'void *', 'size_t']),
  bpf_xdp_attach: libbpf.func('bpf_xdp_attach', 'int', ['int', 'int', 'uint32_t', koffi.pointer(XdpAttachOpts)]),
  bpf_xdp_detach: libbpf.func('bpf_xdp_detach', 'int', ['int', 'uint32_t', koffi.pointer(XdpAttachOpts)]),
  bpf_xdp_query: libbpf.func('bpf_xdp_query', 'int', ['int', 'int', koffi.inout(koffi.pointer(XdpQueryOpts))]),
  // bpf.h
  bpf_map_create: libbpf.func('bpf_map_create', 'int', ['int', 'str', 'uint32_t', 'uint32_t', 'uint32_t', koffi.pointer(MapCreateOpts)]),
  bpf_map_lookup_elem: libbpf.func('bpf_map_lookup_elem', 'int', ['int', 'void *', 'void *']),
  bpf_map_update_elem: libbpf.func('bpf_map_update_elem', 'int', ['int', 'void *', 'void *', 'uint64_t']),
  bpf_map_delete_elem: libbpf.func('bpf_map_delete_elem', 'int', ['int', 'void *']),
  bpf_map_get_next_key: libbpf.func('bpf_map_get_next_key', 'int', ['int', 'void *', 'void *']),
  bpf_map_lookup_batch: libbpf.func('bpf_map_lookup_batch', 'int', ['int', 'void *', 'void *', 'void *', 'void *', u32InOut, koffi.pointer(MapBatchOpts)]),
  bpf_map_update_batch: libbpf.func('bpf_map_update_batch', 'int', ['int', 'void *', 'void *', u32InOut, koffi.pointer(MapBatchOpts)]),
  bpf_obj_pin: libbpf.func('bpf_obj_pin', 'int', ['int', 'str']),
  bpf_obj_get: libbpf.func('bpf_obj_get', 'int', ['str']),
  bpf_map_get_fd_by_id: libbpf.func('bpf_map_get_fd_by_id', 'int', ['uint32_t']),
  bpf_prog_get_fd_by_id: libbpf.func('bpf_prog_get_fd_by_id', 'int', ['uint32_t']),
  bpf_obj_get_info_by_fd: libbpf.func('bpf_obj_get_info_by_fd', 'int', ['int', 'void *', u32InOut]),
  bpf_prog_test_run_opts: libbpf.func('bpf_prog_test_run_opts', 'int', ['int', koffi.inout(koffi.pointer(TestRunOpts))]),
  // libc
  vsnprintf: libc.func('vsnprintf', 'int', ['void *', 'size_t', 'void *', 'void *']),
  if_nametoindex: libc.func('if_nametoindex', 'uint32_t', ['str']),
  setns: libc.func('setns', 'int', ['int', 'int']),
};

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(E)) if (!errnoNames.has(value)) errnoNames.set(value, name);
// prefer the names the kernel sources use for aliased values
for (const name of ['EAGAIN', 'EOPNOTSUPP', 'EDEADLK'] as const) if (E[name] !== undefined) errnoNames.set(E[name], name);
errnoNames.set(ENOTSUPP, 'ENOTSUPP');

/** Text for a (positive) errno, including libbpf's own LIBBPF_ERRNO__* codes. */
export function strerror(errno: number): string {
  if (errno === ENOTSUPP) return 'Operation not supported';
  const buf = Buffer.alloc(256);
  C.libbpf_strerror(errno, buf, buf.length);
  const end = buf.indexOf(0);
  return buf.toString('utf8', 0, end < 0 ? buf.length : end);
}

/** Symbolic name of an errno value ("E2BIG"), or undefined for libbpf's private codes. */
export function errnoName(errno: number): string | undefined {
  return errnoNames.get(errno);
}

/**
 * A failed libbpf (or BPF syscall) call. `message` reads like
 * `bpf_map_update_elem(conns): Argument list too long (E2BIG)`; `details` holds the warnings
 * libbpf printed during the call, if any.
 */
export class LibbpfError extends UserError {
  readonly errno: number;
  readonly code: string | undefined;
  readonly op: string;

  constructor(op: string, errno: number, opts: { subject?: string; details?: string[]; message?: string } = {}) {
    const code = errnoName(errno);
    const where = opts.subject !== undefined ? `${op}(${opts.subject})` : op;
    super(opts.message ?? `${where}: ${strerror(errno)}${code ? ` (${code})` : ` (errno ${errno})`}`, opts.details ?? []);
    this.name = 'LibbpfError';
    this.errno = errno;
    this.code = code;
    this.op = op;
  }
}

const NOISE = [/^processed \d+ insns/, /^verification time/, /^stack depth/, /^\s*$/];
const INSN = /^\d+: \([0-9a-f]{2}\)/;

/**
 * The kernel verifier refused a program. `log` is the whole verifier log (level 1),
 * `summary()` the part worth showing a person.
 */
export class VerifierError extends LibbpfError {
  /** The complete verifier log, as the kernel wrote it. */
  readonly log: string;
  /** Name of the program that was rejected. */
  readonly program: string;
  /** True if the kernel could not fit the whole log in the buffer (ENOSPC). */
  readonly truncated: boolean;
  /** libbpf's own messages during the load. */
  readonly libbpfMessages: string[];

  constructor(op: string, errno: number, program: string, log: string, libbpfMessages: string[], subject?: string) {
    const lines = VerifierError.meaningful(log);
    const last = lines.length ? lines[lines.length - 1]!.trim() : '';
    super(op, errno, { subject, details: [] });
    this.name = 'VerifierError';
    this.log = log;
    this.program = program;
    this.truncated = errno === E.ENOSPC;
    this.libbpfMessages = libbpfMessages;
    this.message = `${this.message}: program '${program}' rejected by the verifier${last ? `: ${last}` : ''}`;
    this.details.push(...this.summary().split('\n'), ...libbpfMessages);
  }

  /** The log's lines without the trailing statistics. */
  private static meaningful(log: string): string[] {
    const lines = log.split('\n');
    while (lines.length && NOISE.some((re) => re.test(lines[lines.length - 1]!))) lines.pop();
    return lines;
  }

  /**
   * The last meaningful lines of the log: the error, back to (and including) the instruction it
   * is about — at least the error line and the line before it, at most 5 lines — then
   * "(N lines omitted)". Like cilium/ebpf's VerifierError.
   */
  summary(): string {
    const lines = VerifierError.meaningful(this.log);
    if (lines.length === 0) return '(empty verifier log)';
    const total = this.log.split('\n').filter((l) => l.trim() !== '').length;
    let start = Math.max(0, lines.length - 2);
    for (let i = lines.length - 1; i >= Math.max(0, lines.length - 5); i--) {
      if (INSN.test(lines[i]!)) {
        start = Math.min(start, i);
        // the BTF source line ("; return data[12] ... @ file.c:12") right above, if any
        if (i > 0 && lines[i - 1]!.startsWith(';')) start = i - 1;
        break;
      }
    }
    const shown = lines.slice(start).map((l) => l.trimEnd());
    const omitted = total - shown.filter((l) => l.trim() !== '').length;
    if (omitted > 0) shown.push(`(${omitted} line${omitted === 1 ? '' : 's'} omitted)`);
    if (this.truncated) shown.push('(log truncated by the kernel)');
    return shown.join('\n');
  }
}

function check(ret: number, op: string, subject?: string, details?: string[]): number {
  if (ret < 0) throw new LibbpfError(op, -ret, { subject, details });
  return ret;
}

// ---------------------------------------------------------------------------------------------
// libbpf's print callback: messages go to the innermost capture, else WARN/INFO to stderr
// ---------------------------------------------------------------------------------------------

const debugLibbpf = !!process.env.XDPVS_LIBBPF_DEBUG;
const sinks: string[][] = [];
let printInstalled = false;
/** sizeof(va_list) on x86_64: one struct __va_list_tag; copying it is what va_copy does there. */
const VA_LIST_SIZE = 24;

function formatVa(fmt: unknown, ap: unknown): string {
  if (process.arch !== 'x64') return koffi.decode(fmt, 'char', -1) as string;
  // vsnprintf consumes the va_list: size the message on a copy, then format with the original.
  const copy = Buffer.from(new Uint8Array(koffi.view(ap, VA_LIST_SIZE)));
  const n = C.vsnprintf(null, 0, fmt, copy) as number;
  if (n < 0) return koffi.decode(fmt, 'char', -1) as string;
  const buf = Buffer.alloc(n + 1);
  C.vsnprintf(buf, n + 1, fmt, ap);
  return buf.toString('utf8', 0, n);
}

function onLibbpfPrint(level: number, fmt: unknown, ap: unknown): number {
  try {
    if (level === LIBBPF_DEBUG && !debugLibbpf) return 0;
    const text = formatVa(fmt, ap).replace(/\n+$/, '');
    const sink = sinks[sinks.length - 1];
    if (sink) sink.push(text);
    else if (level <= LIBBPF_INFO || debugLibbpf) process.stderr.write(`${text}\n`);
  } catch {
    /* never throw through C */
  }
  return 0;
}

function installPrint(): void {
  if (printInstalled) return;
  // registered once for the life of the process (libbpf keeps the pointer)
  C.libbpf_set_print(koffi.register(onLibbpfPrint, koffi.pointer(PrintFn)));
  printInstalled = true;
}

/** Runs fn, collecting libbpf's messages printed meanwhile. */
function capture<T>(fn: () => T): { result: T; messages: string[] } {
  installPrint();
  const messages: string[] = [];
  sinks.push(messages);
  try {
    return { result: fn(), messages };
  } finally {
    sinks.pop();
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

let possibleCpus: number | undefined;

/** Number of possible CPUs (the per-CPU value count of per-CPU maps). */
export function numPossibleCpus(): number {
  if (possibleCpus === undefined) possibleCpus = check(C.libbpf_num_possible_cpus(), 'libbpf_num_possible_cpus');
  return possibleCpus;
}

function fdKind(fd: number): 'map' | 'prog' | 'other' {
  try {
    const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    if (/^map_type:/m.test(info)) return 'map';
    if (/^prog_type:/m.test(info)) return 'prog';
  } catch {
    /* fall through */
  }
  return 'other';
}

function openFd(ret: number, op: string, subject: string, want: 'map' | 'prog'): number {
  const fd = check(ret, op, subject);
  const kind = fdKind(fd);
  if (kind !== want) {
    fs.closeSync(fd);
    throw new LibbpfError(op, E.EINVAL, { message: `${op}(${subject}): not a BPF ${want} (it is a ${kind === 'other' ? 'different object' : kind})` });
  }
  return fd;
}

function cString(chars: unknown): string {
  const s = String(chars ?? '');
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

const round8 = (n: number) => (n + 7) & ~7;
const PERCPU_TYPES = new Set<number>([MapType.percpu_hash, MapType.percpu_array, MapType.lru_percpu_hash, 21 /* percpu_cgroup_storage */]);
const BATCH_TYPES = new Set<number>([
  MapType.hash,
  MapType.lru_hash,
  MapType.percpu_hash,
  MapType.lru_percpu_hash,
  MapType.array,
  MapType.percpu_array,
]);
const MAP_TYPE_NAMES = new Map<number, string>(Object.entries(MapType).map(([k, v]) => [v, k]));
const PROG_TYPE_NAMES = new Map<number, string>(Object.entries(ProgType).map(([k, v]) => [v, k]));

// ---------------------------------------------------------------------------------------------
// Maps
// ---------------------------------------------------------------------------------------------

export interface MapInfo {
  id: number;
  /** enum bpf_map_type */
  type: number;
  /** "hash", "array", … or "type N" */
  typeName: string;
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface MapCreateOptions {
  type: MapTypeName | number;
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags?: number;
  /** For array_of_maps / hash_of_maps: a map of the kind the outer map will hold. */
  innerMapFd?: number | BpfMap;
}

/**
 * A BPF map file descriptor held by this process.
 *
 * Values of per-CPU maps (percpu_array, percpu_hash, lru_percpu_hash) are, in `lookup`,
 * `update` and `entries`, the kernel's layout: valueSize rounded up to 8 bytes, times
 * numPossibleCpus(); `lookupPerCpu`/`updatePerCpu` split and join them.
 *
 * Map-in-map (array_of_maps, hash_of_maps): `update(key, u32(innerFd))` installs an inner map;
 * `lookup(key)` returns the inner map's *id* as a u32 (use `BpfMap.fromId` to open it).
 */
export class BpfMap {
  private _fd: number;
  private meta: MapInfo | undefined;

  private constructor(
    fd: number,
    private readonly owned: boolean,
  ) {
    this._fd = fd;
  }

  /** Wraps an existing fd. With owned=false, close() leaves the fd open. */
  static fromFd(fd: number, owned = false): BpfMap {
    if (fdKind(fd) !== 'map') throw new LibbpfError('BpfMap.fromFd', E.EINVAL, { message: `fd ${fd} is not a BPF map` });
    return new BpfMap(fd, owned);
  }

  /** Opens a pinned map (bpf_obj_get). */
  static fromPin(pinPath: string): BpfMap {
    return new BpfMap(openFd(C.bpf_obj_get(pinPath), 'bpf_obj_get', pinPath, 'map'), true);
  }

  /** Opens a map by its kernel id (bpf_map_get_fd_by_id). */
  static fromId(id: number): BpfMap {
    return new BpfMap(check(C.bpf_map_get_fd_by_id(id), 'bpf_map_get_fd_by_id', String(id)), true);
  }

  /** Creates a new map (bpf_map_create). */
  static create(o: MapCreateOptions): BpfMap {
    const type = typeof o.type === 'number' ? o.type : MapType[o.type];
    if (type === undefined) throw new LibbpfError('bpf_map_create', E.EINVAL, { message: `bpf_map_create(${o.name}): unknown map type ${String(o.type)}` });
    const inner = o.innerMapFd instanceof BpfMap ? o.innerMapFd.fd : (o.innerMapFd ?? 0);
    const opts = {
      sz: koffi.sizeof(MapCreateOpts),
      btf_fd: 0,
      btf_key_type_id: 0,
      btf_value_type_id: 0,
      btf_vmlinux_value_type_id: 0,
      inner_map_fd: inner,
      map_flags: o.flags ?? 0,
      map_extra: 0,
      numa_node: 0,
      map_ifindex: 0,
    };
    const { result: fd, messages } = capture(() => C.bpf_map_create(type, o.name, o.keySize, o.valueSize, o.maxEntries, opts) as number);
    check(fd, 'bpf_map_create', o.name, messages);
    return new BpfMap(fd, true);
  }

  get fd(): number {
    if (this._fd < 0) throw new Error('BpfMap: used after close()');
    return this._fd;
  }

  /** bpf_obj_get_info_by_fd: always asks the kernel. */
  info(): MapInfo {
    const buf = Buffer.alloc(koffi.sizeof(BpfMapInfo));
    check(C.bpf_obj_get_info_by_fd(this.fd, buf, [buf.length]), 'bpf_obj_get_info_by_fd', `map fd ${this.fd}`);
    const i = koffi.decode(buf, BpfMapInfo) as Record<string, number | string>;
    const type = i.type as number;
    return {
      id: i.id as number,
      type,
      typeName: MAP_TYPE_NAMES.get(type) ?? `type ${type}`,
      name: cString(i.name),
      keySize: i.key_size as number,
      valueSize: i.value_size as number,
      maxEntries: i.max_entries as number,
      flags: i.map_flags as number,
    };
  }

  private get m(): MapInfo {
    return (this.meta ??= this.info());
  }

  private get label(): string {
    return this.m.name || `map id ${this.m.id}`;
  }

  get perCpu(): boolean {
    return PERCPU_TYPES.has(this.m.type);
  }

  /** Size of the value buffer the kernel reads/writes for one element. */
  get valueBufferSize(): number {
    return this.perCpu ? round8(this.m.valueSize) * numPossibleCpus() : this.m.valueSize;
  }

  private checkKey(key: Buffer, op: string): void {
    if (key.length !== this.m.keySize) {
      throw new LibbpfError(op, E.EINVAL, { message: `${op}(${this.label}): key is ${key.length} bytes, the map's keys are ${this.m.keySize}` });
    }
  }

  private checkValue(value: Buffer, op: string): void {
    if (value.length !== this.valueBufferSize) {
      throw new LibbpfError(op, E.EINVAL, {
        message: `${op}(${this.label}): value is ${value.length} bytes, the map's values are ${this.valueBufferSize}${this.perCpu ? ' (per-CPU)' : ''}`,
      });
    }
  }

  /** The value for key, or null if there is none. */
  lookup(key: Buffer): Buffer | null {
    this.checkKey(key, 'bpf_map_lookup_elem');
    const value = Buffer.alloc(this.valueBufferSize);
    const ret = C.bpf_map_lookup_elem(this.fd, key, value) as number;
    if (ret === -E.ENOENT) return null;
    check(ret, 'bpf_map_lookup_elem', this.label);
    return value;
  }

  /** Per-CPU maps: one Buffer (valueSize bytes) per possible CPU, or null. */
  lookupPerCpu(key: Buffer): Buffer[] | null {
    if (!this.perCpu) throw new LibbpfError('bpf_map_lookup_elem', E.EINVAL, { message: `bpf_map_lookup_elem(${this.label}): not a per-CPU map` });
    const all = this.lookup(key);
    return all && splitPerCpu(all, this.m.valueSize);
  }

  update(key: Buffer, value: Buffer, flags: number = BPF_ANY): void {
    this.checkKey(key, 'bpf_map_update_elem');
    this.checkValue(value, 'bpf_map_update_elem');
    check(C.bpf_map_update_elem(this.fd, key, value, flags), 'bpf_map_update_elem', this.label);
  }

  /** Per-CPU maps: sets each CPU's value (values.length must be numPossibleCpus()). */
  updatePerCpu(key: Buffer, values: Buffer[], flags: number = BPF_ANY): void {
    const stride = round8(this.m.valueSize);
    if (values.length !== numPossibleCpus() || values.some((v) => v.length !== this.m.valueSize)) {
      throw new LibbpfError('bpf_map_update_elem', E.EINVAL, {
        message: `bpf_map_update_elem(${this.label}): need ${numPossibleCpus()} values of ${this.m.valueSize} bytes`,
      });
    }
    const all = Buffer.alloc(stride * values.length);
    values.forEach((v, i) => v.copy(all, i * stride));
    this.update(key, all, flags);
  }

  /** Deletes key; false if it was not there. */
  delete(key: Buffer): boolean {
    this.checkKey(key, 'bpf_map_delete_elem');
    const ret = C.bpf_map_delete_elem(this.fd, key) as number;
    if (ret === -E.ENOENT) return false;
    check(ret, 'bpf_map_delete_elem', this.label);
    return true;
  }

  /**
   * All keys (bpf_map_get_next_key). For hash maps changed meanwhile the walk may restart;
   * it is bounded by max_entries and returns each key once.
   */
  keys(): Buffer[] {
    const keys: Buffer[] = [];
    const seen = new Set<string>();
    let prev: Buffer | null = null;
    for (let i = 0; i <= this.m.maxEntries; i++) {
      const next = Buffer.alloc(this.m.keySize);
      const ret = C.bpf_map_get_next_key(this.fd, prev, next) as number;
      if (ret === -E.ENOENT) break;
      check(ret, 'bpf_map_get_next_key', this.label);
      const hex = next.toString('hex');
      if (!seen.has(hex)) {
        seen.add(hex);
        keys.push(next);
      }
      prev = next;
    }
    return keys;
  }

  /**
   * All entries. Uses bpf_map_lookup_batch for hash, LRU hash and array maps (and their per-CPU
   * kinds), falling back to get_next_key + lookup for other types or kernels without it.
   */
  entries(): Array<[Buffer, Buffer]> {
    if (BATCH_TYPES.has(this.m.type)) {
      const viaBatch = this.entriesBatch();
      if (viaBatch) return viaBatch;
    }
    const out: Array<[Buffer, Buffer]> = [];
    for (const key of this.keys()) {
      const value = this.lookup(key);
      if (value) out.push([key, value]);
    }
    return out;
  }

  private entriesBatch(): Array<[Buffer, Buffer]> | null {
    const { keySize, maxEntries } = this.m;
    const vsz = this.valueBufferSize;
    const opts = { sz: koffi.sizeof(MapBatchOpts), elem_flags: 0, flags: 0 };
    // batch tokens: the kernel uses a u32 bucket/index for hash maps, key_size for generic maps
    const tokenSize = Math.max(keySize, 8);
    let inBatch: Buffer | null = null;
    let outBatch: Buffer = Buffer.alloc(tokenSize);
    let chunk = Math.max(1, Math.min(maxEntries, 256));
    const out: Array<[Buffer, Buffer]> = [];
    for (;;) {
      const keys = Buffer.alloc(chunk * keySize);
      const values = Buffer.alloc(chunk * vsz);
      const count = [chunk];
      const ret = C.bpf_map_lookup_batch(this.fd, inBatch, outBatch, keys, values, count, opts) as number;
      const err = ret < 0 ? -ret : 0;
      if (err && err !== E.ENOENT) {
        if (err === E.ENOSPC && count[0] === 0) {
          chunk *= 2; // a hash bucket holds more entries than the chunk
          continue;
        }
        if (out.length === 0 && inBatch === null && (err === E.EINVAL || err === E.EOPNOTSUPP || err === ENOTSUPP)) return null;
        check(ret, 'bpf_map_lookup_batch', this.label);
      }
      const n = count[0]!;
      for (let i = 0; i < n; i++) {
        out.push([Buffer.from(keys.subarray(i * keySize, (i + 1) * keySize)), Buffer.from(values.subarray(i * vsz, (i + 1) * vsz))]);
      }
      if (err === E.ENOENT) return out;
      [inBatch, outBatch] = [outBatch, inBatch ?? Buffer.alloc(tokenSize)];
    }
  }

  /** bpf_map_update_batch: all pairs in one syscall. */
  updateBatch(keys: Buffer[], values: Buffer[], flags: number = BPF_ANY): void {
    if (keys.length !== values.length) throw new Error('updateBatch: keys and values differ in length');
    if (keys.length === 0) return;
    keys.forEach((k) => this.checkKey(k, 'bpf_map_update_batch'));
    values.forEach((v) => this.checkValue(v, 'bpf_map_update_batch'));
    const opts = { sz: koffi.sizeof(MapBatchOpts), elem_flags: flags, flags: 0 };
    const count = [keys.length];
    check(C.bpf_map_update_batch(this.fd, Buffer.concat(keys), Buffer.concat(values), count, opts), 'bpf_map_update_batch', this.label);
  }

  /** bpf_obj_pin: path must be on a bpffs (e.g. under /sys/fs/bpf) and must not exist. */
  pin(pinPath: string): void {
    check(C.bpf_obj_pin(this.fd, pinPath), 'bpf_obj_pin', pinPath);
  }

  /** Closes the fd (if this object owns it). Idempotent. */
  close(): void {
    if (this._fd >= 0 && this.owned) fs.closeSync(this._fd);
    this._fd = -1;
  }
}

/** Splits a per-CPU value buffer (stride round8(valueSize)) into one Buffer per CPU. */
export function splitPerCpu(all: Buffer, valueSize: number): Buffer[] {
  const stride = round8(valueSize);
  const out: Buffer[] = [];
  for (let off = 0; off + valueSize <= all.length; off += stride) out.push(Buffer.from(all.subarray(off, off + valueSize)));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Programs
// ---------------------------------------------------------------------------------------------

export interface ProgInfo {
  id: number;
  /** enum bpf_prog_type */
  type: number;
  typeName: string;
  name: string;
  /** hex, as bpftool shows it */
  tag: string;
  jitedLen: number;
  xlatedLen: number;
}

export interface TestRunResult {
  retval: number;
  /** The frame after the program ran (data_out, trimmed to its final length). */
  data: Buffer;
  /** Average duration of one run in ns. */
  durationNs: number;
}

/** A BPF program file descriptor held by this process. */
export class BpfProgram {
  private _fd: number;

  private constructor(
    fd: number,
    private readonly owned: boolean,
  ) {
    this._fd = fd;
  }

  static fromFd(fd: number, owned = false): BpfProgram {
    if (fdKind(fd) !== 'prog') throw new LibbpfError('BpfProgram.fromFd', E.EINVAL, { message: `fd ${fd} is not a BPF program` });
    return new BpfProgram(fd, owned);
  }

  static fromPin(pinPath: string): BpfProgram {
    return new BpfProgram(openFd(C.bpf_obj_get(pinPath), 'bpf_obj_get', pinPath, 'prog'), true);
  }

  static fromId(id: number): BpfProgram {
    return new BpfProgram(check(C.bpf_prog_get_fd_by_id(id), 'bpf_prog_get_fd_by_id', String(id)), true);
  }

  get fd(): number {
    if (this._fd < 0) throw new Error('BpfProgram: used after close()');
    return this._fd;
  }

  info(): ProgInfo {
    const buf = Buffer.alloc(koffi.sizeof(BpfProgInfo));
    check(C.bpf_obj_get_info_by_fd(this.fd, buf, [buf.length]), 'bpf_obj_get_info_by_fd', `prog fd ${this.fd}`);
    const i = koffi.decode(buf, BpfProgInfo) as Record<string, unknown>;
    const type = i.type as number;
    return {
      id: i.id as number,
      type,
      typeName: PROG_TYPE_NAMES.get(type) ?? `type ${type}`,
      name: cString(i.name),
      tag: Buffer.from(i.tag as Uint8Array).toString('hex'),
      jitedLen: i.jited_prog_len as number,
      xlatedLen: i.xlated_prog_len as number,
    };
  }

  pin(pinPath: string): void {
    check(C.bpf_obj_pin(this.fd, pinPath), 'bpf_obj_pin', pinPath);
  }

  /**
   * BPF_PROG_TEST_RUN (bpf_prog_test_run_opts) with `data` as the packet. `repeat` runs it that
   * many times (the result is the last run's); `dataOutSize` bounds the output frame
   * (default: max(4096, data.length)).
   */
  testRun(data: Buffer, o: { repeat?: number; dataOutSize?: number } = {}): TestRunResult {
    const outSize = o.dataOutSize ?? Math.max(4096, data.length);
    // stable native memory: koffi gives these pointers to the struct members
    const dataIn = koffi.alloc('uint8_t', Math.max(1, data.length));
    const dataOut = koffi.alloc('uint8_t', Math.max(1, outSize));
    try {
      new Uint8Array(koffi.view(dataIn, data.length)).set(data);
      const opts = {
        sz: koffi.sizeof(TestRunOpts),
        data_in: dataIn,
        data_out: dataOut,
        data_size_in: data.length,
        data_size_out: outSize,
        ctx_in: null,
        ctx_out: null,
        ctx_size_in: 0,
        ctx_size_out: 0,
        retval: 0,
        repeat: o.repeat ?? 1,
        duration: 0,
        flags: 0,
        cpu: 0,
        batch_size: 0,
      };
      check(C.bpf_prog_test_run_opts(this.fd, opts), 'bpf_prog_test_run_opts', `prog fd ${this.fd}`);
      const len = Math.min(opts.data_size_out, outSize);
      return {
        retval: opts.retval,
        data: Buffer.from(new Uint8Array(koffi.view(dataOut, len))),
        durationNs: opts.duration,
      };
    } finally {
      koffi.free(dataIn);
      koffi.free(dataOut);
    }
  }

  close(): void {
    if (this._fd >= 0 && this.owned) fs.closeSync(this._fd);
    this._fd = -1;
  }
}

// ---------------------------------------------------------------------------------------------
// ELF objects
// ---------------------------------------------------------------------------------------------

export interface MapSpec {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** A map of a BpfObject (struct bpf_map *): configure before load, use after. */
export class BpfObjectMap {
  /** @internal */
  constructor(
    private readonly owner: BpfObject,
    private readonly ptr: unknown,
    readonly name: string,
  ) {}

  /** The map's definition as libbpf will create it (after setMaxEntries/reuseFd). */
  spec(): MapSpec {
    this.owner.assertOpen();
    return {
      type: C.bpf_map__type(this.ptr),
      keySize: C.bpf_map__key_size(this.ptr),
      valueSize: C.bpf_map__value_size(this.ptr),
      maxEntries: C.bpf_map__max_entries(this.ptr),
      flags: C.bpf_map__map_flags(this.ptr),
    };
  }

  /** Before load. */
  setMaxEntries(n: number): this {
    this.owner.assertOpen();
    check(C.bpf_map__set_max_entries(this.ptr, n), 'bpf_map__set_max_entries', this.name);
    return this;
  }

  /**
   * Before load: use this existing map (e.g. a pinned one) instead of creating it. libbpf dups
   * the fd, so the caller still owns (and may close) its own. libbpf 1.1 does not check that the
   * existing map matches the definition: compare `spec()` with `BpfMap.info()` first.
   */
  reuseFd(fd: number | BpfMap): this {
    this.owner.assertOpen();
    check(C.bpf_map__reuse_fd(this.ptr, fd instanceof BpfMap ? fd.fd : fd), 'bpf_map__reuse_fd', this.name);
    return this;
  }

  /** After load. Owned by the object: valid until BpfObject.close(). */
  get fd(): number {
    this.owner.assertOpen();
    const fd = C.bpf_map__fd(this.ptr) as number;
    if (fd < 0) throw new LibbpfError('bpf_map__fd', E.EINVAL, { message: `map '${this.name}' has no fd (object not loaded)` });
    return fd;
  }

  /** A BpfMap on this map's fd; valid until BpfObject.close() (its own close() is a no-op). */
  toMap(): BpfMap {
    return BpfMap.fromFd(this.fd, false);
  }
}

/** A program of a BpfObject (struct bpf_program *). */
export class BpfObjectProgram {
  /** @internal */
  constructor(
    private readonly owner: BpfObject,
    /** @internal */ readonly ptr: unknown,
    readonly name: string,
  ) {}

  /** The verifier log of a successful load() given logLevel > 0. */
  get log(): string | undefined {
    return this.owner.verifierLogs.get(this.name);
  }

  /** After load. Owned by the object: valid until BpfObject.close(). */
  get fd(): number {
    this.owner.assertOpen();
    const fd = C.bpf_program__fd(this.ptr) as number;
    if (fd < 0) throw new LibbpfError('bpf_program__fd', E.EINVAL, { message: `program '${this.name}' has no fd (object not loaded)` });
    return fd;
  }

  /** A BpfProgram on this program's fd; valid until BpfObject.close(). */
  toProgram(): BpfProgram {
    return BpfProgram.fromFd(this.fd, false);
  }
}

export interface LoadOptions {
  /**
   * Verifier log level. 0 (default): no log on success; on failure libbpf retries the program
   * at level 1 into our buffer, and load() throws a VerifierError carrying it.
   */
  logLevel?: number;
  /** Verifier log buffer size per program (default 16 MiB). */
  logSize?: number;
}

const DEFAULT_LOG_SIZE = 16 << 20;

/** A BPF ELF object (struct bpf_object *): open → configure maps → load → use fds → close. */
export class BpfObject {
  private ptr: unknown;
  private loaded = false;
  /** libbpf's messages (warnings, info) from open and load. */
  readonly messages: string[] = [];
  /** @internal program name → verifier log, after load({ logLevel > 0 }) */
  readonly verifierLogs = new Map<string, string>();

  private constructor(
    ptr: unknown,
    readonly path: string,
    messages: string[],
  ) {
    this.ptr = ptr;
    this.messages.push(...messages);
  }

  /** bpf_object__open_file */
  static open(file: string): BpfObject {
    const { result, messages } = capture(() => {
      const p = C.bpf_object__open_file(file, null);
      return { p, errno: koffi.errno() };
    });
    if (!result.p) throw new LibbpfError('bpf_object__open_file', result.errno || E.EINVAL, { subject: file, details: messages });
    return new BpfObject(result.p, file, messages);
  }

  /** @internal */
  assertOpen(): void {
    if (!this.ptr) throw new Error(`BpfObject(${this.path}): used after close()`);
  }

  private get label(): string {
    return path.basename(this.path);
  }

  /** Names of the object's maps (including libbpf's internal .rodata/.bss/.data maps). */
  mapNames(): string[] {
    this.assertOpen();
    const names: string[] = [];
    for (let m = C.bpf_object__next_map(this.ptr, null); m; m = C.bpf_object__next_map(this.ptr, m)) names.push(C.bpf_map__name(m));
    return names;
  }

  programNames(): string[] {
    return this.programs().map((p) => p.name);
  }

  private programs(): BpfObjectProgram[] {
    this.assertOpen();
    const progs: BpfObjectProgram[] = [];
    for (let p = C.bpf_object__next_program(this.ptr, null); p; p = C.bpf_object__next_program(this.ptr, p)) {
      progs.push(new BpfObjectProgram(this, p, C.bpf_program__name(p)));
    }
    return progs;
  }

  map(name: string): BpfObjectMap {
    this.assertOpen();
    const m = C.bpf_object__find_map_by_name(this.ptr, name);
    if (!m) {
      throw new LibbpfError('bpf_object__find_map_by_name', E.ENOENT, {
        message: `${this.label}: no map named '${name}' (maps: ${this.mapNames().join(', ') || 'none'})`,
      });
    }
    return new BpfObjectMap(this, m, name);
  }

  program(name: string): BpfObjectProgram {
    this.assertOpen();
    const p = C.bpf_object__find_program_by_name(this.ptr, name);
    if (!p) {
      throw new LibbpfError('bpf_object__find_program_by_name', E.ENOENT, {
        message: `${this.label}: no program named '${name}' (programs: ${this.programNames().join(', ') || 'none'})`,
      });
    }
    return new BpfObjectProgram(this, p, name);
  }

  /**
   * bpf_object__load: creates the maps and loads the programs. On a verifier rejection throws
   * VerifierError (full log, errno, libbpf's messages); on other failures LibbpfError.
   */
  load(o: LoadOptions = {}): void {
    this.assertOpen();
    if (this.loaded) throw new Error(`BpfObject(${this.path}): already loaded`);
    const logSize = o.logSize ?? DEFAULT_LOG_SIZE;
    const progs = this.programs();
    // koffi.alloc: libbpf keeps the pointer between set_log_buf and load, so it must not move
    const bufs = progs.map((p) => {
      const buf = koffi.alloc('char', logSize);
      new Uint8Array(koffi.view(buf, 1))[0] = 0;
      check(C.bpf_program__set_log_buf(p.ptr, buf, logSize), 'bpf_program__set_log_buf', p.name);
      if (o.logLevel) check(C.bpf_program__set_log_level(p.ptr, o.logLevel), 'bpf_program__set_log_level', p.name);
      return buf;
    });
    try {
      const { result: ret, messages } = capture(() => C.bpf_object__load(this.ptr) as number);
      this.messages.push(...messages);
      const logs = bufs.map((b) => koffi.decode(b, 'char', -1) as string);
      if (ret < 0) {
        const bad = progs.findIndex((p, i) => logs[i] !== '' && C.bpf_program__fd(p.ptr) < 0);
        if (bad >= 0) throw new VerifierError('bpf_object__load', -ret, progs[bad]!.name, logs[bad]!, messages, this.label);
        throw new LibbpfError('bpf_object__load', -ret, { subject: this.label, details: messages });
      }
      if (o.logLevel) progs.forEach((p, i) => this.verifierLogs.set(p.name, logs[i]!));
      this.loaded = true;
    } finally {
      for (let i = 0; i < progs.length; i++) {
        C.bpf_program__set_log_buf(progs[i]!.ptr, null, 0);
        koffi.free(bufs[i]);
      }
    }
  }

  /** bpf_object__close: closes all the object's map and program fds (pins stay). */
  close(): void {
    if (this.ptr) C.bpf_object__close(this.ptr);
    this.ptr = null;
  }
}

// ---------------------------------------------------------------------------------------------
// XDP
// ---------------------------------------------------------------------------------------------

export type XdpAttachMode = 'native' | 'generic' | 'auto';
export type XdpMode = 'native' | 'generic' | 'offload';

export interface XdpQueryResult {
  /** The attached program's id (0 if none); with several modes, the native one's, else generic's. */
  progId: number;
  mode: XdpMode | null;
  nativeProgId: number;
  genericProgId: number;
  offloadProgId: number;
}

const MODE_FLAGS: Record<'native' | 'generic', number> = { native: XDP_FLAGS_DRV_MODE, generic: XDP_FLAGS_SKB_MODE };

const fdOf = (p: number | BpfProgram): number => (p instanceof BpfProgram ? p.fd : p);

/**
 * bpf_xdp_attach. With `replaceProgFd` the swap is atomic (XDP_FLAGS_REPLACE + old_prog_fd) and
 * fails with EEXIST if the attached program is not that one. 'auto' tries native, then generic
 * (with replaceProgFd: the mode the current program is attached in). Returns the mode used.
 */
export function xdpAttach(
  ifindex: number,
  progFd: number | BpfProgram,
  o: { mode?: XdpAttachMode; replaceProgFd?: number | BpfProgram } = {},
): { mode: 'native' | 'generic' } {
  const fd = fdOf(progFd);
  const old = o.replaceProgFd === undefined ? undefined : fdOf(o.replaceProgFd);
  const opts = { sz: koffi.sizeof(XdpAttachOpts), old_prog_fd: old ?? 0 };
  // libbpf prints the kernel's extack text ("Kernel error message: ...") as a warning
  const attach = (mode: 'native' | 'generic') => {
    const flags = MODE_FLAGS[mode] | (old !== undefined ? XDP_FLAGS_REPLACE : 0);
    const { result: ret, messages } = capture(() => C.bpf_xdp_attach(ifindex, fd, flags, opts) as number);
    return { ret, messages };
  };
  const subject = `ifindex ${ifindex}`;
  let mode = o.mode ?? 'auto';
  if (mode === 'auto' && old !== undefined) {
    const cur = xdpQuery(ifindex).mode;
    if (cur === 'native' || cur === 'generic') mode = cur;
  }
  if (mode !== 'auto') {
    const { ret, messages } = attach(mode);
    check(ret, 'bpf_xdp_attach', `${subject}, ${mode}`, messages);
    return { mode };
  }
  const native = attach('native');
  if (native.ret >= 0) return { mode: 'native' };
  const n = -native.ret;
  if (n === E.EPERM || n === E.EBADF || n === E.ENODEV) check(native.ret, 'bpf_xdp_attach', `${subject}, native`, native.messages);
  const generic = attach('generic');
  if (generic.ret >= 0) return { mode: 'generic' };
  throw new LibbpfError('bpf_xdp_attach', -generic.ret, {
    subject: `${subject}, generic`,
    details: [...generic.messages, `native mode failed first: ${strerror(n)} (${errnoName(n) ?? n})`, ...native.messages],
  });
}

/**
 * bpf_xdp_detach. 'auto' detaches whatever mode is attached. With `expectedProgFd`, only if
 * that program is the attached one (else EEXIST).
 */
export function xdpDetach(ifindex: number, mode: XdpAttachMode = 'auto', o: { expectedProgFd?: number | BpfProgram } = {}): void {
  let m: XdpMode | 'auto' | null = mode;
  if (m === 'auto') {
    m = xdpQuery(ifindex).mode;
    if (m === null) return;
  }
  const flags = (m === 'native' ? XDP_FLAGS_DRV_MODE : m === 'generic' ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_HW_MODE) | (o.expectedProgFd !== undefined ? XDP_FLAGS_REPLACE : 0);
  const opts = { sz: koffi.sizeof(XdpAttachOpts), old_prog_fd: o.expectedProgFd !== undefined ? fdOf(o.expectedProgFd) : 0 };
  const { result: ret, messages } = capture(() => C.bpf_xdp_detach(ifindex, flags, opts) as number);
  check(ret, 'bpf_xdp_detach', `ifindex ${ifindex}, ${m}`, messages);
}

/** bpf_xdp_query: which program is attached to the interface, in which mode. */
export function xdpQuery(ifindex: number): XdpQueryResult {
  const opts = { sz: koffi.sizeof(XdpQueryOpts), prog_id: 0, drv_prog_id: 0, hw_prog_id: 0, skb_prog_id: 0, attach_mode: 0, _pad: [0, 0, 0, 0, 0, 0, 0] };
  const { result: ret, messages } = capture(() => C.bpf_xdp_query(ifindex, 0, opts) as number);
  check(ret, 'bpf_xdp_query', `ifindex ${ifindex}`, messages);
  const r: XdpQueryResult = { progId: 0, mode: null, nativeProgId: opts.drv_prog_id, genericProgId: opts.skb_prog_id, offloadProgId: opts.hw_prog_id };
  switch (opts.attach_mode) {
    case XDP_ATTACHED_NONE:
      break;
    case XDP_ATTACHED_DRV:
      r.mode = 'native';
      break;
    case XDP_ATTACHED_SKB:
      r.mode = 'generic';
      break;
    case XDP_ATTACHED_HW:
      r.mode = 'offload';
      break;
    case XDP_ATTACHED_MULTI:
      r.mode = r.nativeProgId ? 'native' : r.genericProgId ? 'generic' : 'offload';
      break;
  }
  r.progId = opts.prog_id || (r.mode === 'native' ? r.nativeProgId : r.mode === 'generic' ? r.genericProgId : r.mode === 'offload' ? r.offloadProgId : 0);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Network helpers (libc)
// ---------------------------------------------------------------------------------------------

/** if_nametoindex; throws naming the interface when it does not exist. */
export function ifindexOf(name: string): number {
  const idx = C.if_nametoindex(name) as number;
  if (idx === 0) {
    const errno = koffi.errno() || E.ENODEV;
    throw new LibbpfError('if_nametoindex', errno, { message: `network interface '${name}' does not exist (${strerror(errno)})` });
  }
  return idx;
}

/**
 * Runs fn (synchronously) with this thread in another network namespace: `ns` is a name from
 * `ip netns` (/run/netns/NAME) or a path such as /proc/PID/ns/net. libbpf's netlink calls
 * (xdpAttach/Detach/Query) and ifindexOf made inside fn act in that namespace. Only the JS main
 * thread moves (setns(2) is per thread), so fn must not be async.
 */
export function withNetns<T>(ns: string, fn: () => T): T {
  const target = fs.openSync(ns.includes('/') ? ns : `/run/netns/${ns}`, 'r');
  let orig = -1;
  try {
    orig = fs.openSync('/proc/thread-self/ns/net', 'r');
    if (C.setns(target, CLONE_NEWNET) !== 0) throw new LibbpfError('setns', koffi.errno(), { subject: ns });
    let result: T;
    try {
      result = fn();
    } finally {
      if (C.setns(orig, CLONE_NEWNET) !== 0) {
        // cannot leave the namespace: nothing after this would be safe
        throw new LibbpfError('setns', koffi.errno(), { subject: '/proc/thread-self/ns/net (restoring)' });
      }
    }
    if (result instanceof Promise) throw new TypeError('withNetns: fn must be synchronous');
    return result;
  } finally {
    fs.closeSync(target);
    if (orig >= 0) fs.closeSync(orig);
  }
}
