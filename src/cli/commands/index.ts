import type { Command } from 'commander';
import { register as backend } from './backend.js';
import { register as daemon } from './daemon.js';
import { register as doctor } from './doctor.js';
import { register as lab } from './lab.js';
import { register as realserver } from './realserver.js';
import { register as services } from './services.js';
import { register as stats } from './stats.js';
import { register as status } from './status.js';

/** Each command module exports one `register` that adds its subcommand to the program. */
export const commands: Array<(program: Command) => void> = [services, backend, status, stats, lab, realserver, daemon, doctor];
