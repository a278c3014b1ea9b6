/**
 * A failure the user can act on: printed as one line (plus optional details), no stack trace,
 * non-zero exit. Anything else reaching the entry point is a bug in xdpvs and is reported as such.
 */
export class UserError extends Error {
  constructor(message: string, readonly details: string[] = [], readonly exitCode = 1) {
    super(message);
    this.name = 'UserError';
  }
}
