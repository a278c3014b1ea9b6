import { Command, CommanderError } from 'commander';
import { UserError } from '../errors.js';
import { commands } from './commands/index.js';

/** Builds the command line; every command module adds itself through `register`. */
export function buildProgram(): Command {
  const program = new Command('xdpvs')
    .description('XDP Virtual Server: LVS direct-routing load balancing in XDP')
    .version('0.1.0')
    .exitOverride()
    .showHelpAfterError(false);
  for (const register of commands) register(program);
  return program;
}

/** The only place that turns errors into exit codes. */
export async function main(argv: string[]): Promise<number> {
  // a reader that stops early (`| head`) is not an error
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed help, version or the usage problem
      return err.exitCode;
    }
    if (err instanceof UserError) {
      process.stderr.write(`xdpvs: ${err.message}\n`);
      for (const line of err.details) process.stderr.write(`  ${line}\n`);
      return err.exitCode;
    }
    process.stderr.write(`xdpvs: internal error, please report it:\n${(err as Error)?.stack ?? String(err)}\n`);
    return 70;
  }
}
