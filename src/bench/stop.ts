/**
 * Ctrl-C and SIGTERM during `make bench`: main.ts records the signal, and each part checks for it
 * between runs and unwinds through its `finally` blocks, so namespaces, labs, pins and loaded
 * programs are always removed.
 */
export class Interrupted extends Error {}

let requested: string | undefined;

export function requestStop(signal: string): void {
  requested = signal;
}

export function stopRequested(): boolean {
  return requested !== undefined;
}

/** Throws Interrupted once a stop was requested. */
export function checkStop(): void {
  if (requested !== undefined) throw new Interrupted(`interrupted (${requested})`);
}
