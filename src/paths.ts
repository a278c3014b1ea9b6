import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** The installed package's root: dist/paths.js sits one level below it. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const bpfDir = path.join(packageRoot, 'bpf');
export const templatesDir = path.join(packageRoot, 'templates');

/**
 * Where the pinned maps and program of one interface live (the design's pin layout). bpffs and
 * /run are shared by all network namespaces, so labs and tests that reuse an interface name in
 * their own namespace set XDPVS_PIN_ROOT / XDPVS_RUN_ROOT to keep apart.
 */
export const pinRoot = process.env.XDPVS_PIN_ROOT ?? '/sys/fs/bpf/xdpvs';
export const pinDir = (iface: string): string => path.join(pinRoot, iface);
/** What the tool keeps for later commands: the applied services, ids, object file. */
export const runRoot = process.env.XDPVS_RUN_ROOT ?? '/run/xdpvs';
export const runDir = (iface: string): string => path.join(runRoot, iface);
